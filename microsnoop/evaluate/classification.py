"""Classification scores: kNN (leave-one-out or split), 5-fold MLP, F1, confusion, bootstrap intervals."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from microsnoop.evaluate.knn import cosine_neighbours, knn_predict_loo, vote


def knn_predict_split(train: np.ndarray, train_labels: np.ndarray, test: np.ndarray, k: int) -> np.ndarray:
    """Predict test rows from their k nearest training rows (cosine; majority, ties to the nearest)."""
    idx, _ = cosine_neighbours(test, train, k)
    return np.asarray([vote([train_labels[j] for j in row]) for row in idx])


def mlp_predict_cv(features: np.ndarray, labels: np.ndarray, *, folds: int = 5, seed: int = 0) -> np.ndarray:
    """Out-of-fold predictions of a stratified k-fold MLP (scikit-learn, max_iter=1000), as for BBBC048."""
    model = make_pipeline(StandardScaler(), MLPClassifier(max_iter=1000, random_state=seed))
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return np.asarray(cross_val_predict(model, features, labels, cv=cv))


def classification_scores(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, Any]:
    """Accuracy, macro-F1, per-class F1 and the confusion matrix (rows: truth, columns: prediction)."""
    classes = sorted(set(np.asarray(y_true).tolist()) | set(np.asarray(y_pred).tolist()))
    per_class = f1_score(y_true, y_pred, labels=classes, average=None, zero_division=0)
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=classes, average="macro", zero_division=0)),
        "per_class_f1": {str(c): float(f) for c, f in zip(classes, per_class, strict=True)},
        "classes": [str(c) for c in classes],
        "confusion": confusion_matrix(y_true, y_pred, labels=classes).tolist(),
    }


def bootstrap_ci(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    metric: Callable[[np.ndarray, np.ndarray], float],
    *,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``metric`` over resampled (truth, prediction) pairs."""
    rng = np.random.default_rng(seed)
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    n = len(y_true)
    stats = [metric(y_true[i], y_pred[i]) for i in (rng.integers(0, n, n) for _ in range(n_boot))]
    lo, hi = np.quantile(stats, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Macro-averaged F1 over the classes present in either array."""
    return float(f1_score(y_true, y_pred, average="macro", zero_division=0))


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Share of correct predictions."""
    return float(np.mean(np.asarray(y_true) == np.asarray(y_pred)))


def scores_with_intervals(
    y_true: np.ndarray, y_pred: np.ndarray, *, n_boot: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """:func:`classification_scores` plus bootstrap 95 % intervals of accuracy and macro-F1."""
    out = classification_scores(y_true, y_pred)
    out["accuracy_ci95"] = bootstrap_ci(y_true, y_pred, accuracy, n_boot=n_boot, seed=seed)
    out["macro_f1_ci95"] = bootstrap_ci(y_true, y_pred, macro_f1, n_boot=n_boot, seed=seed)
    return out


def knn_loo_scores(features: np.ndarray, labels: np.ndarray, *, k: int, n_boot: int = 1000) -> dict[str, Any]:
    """Leave-one-out kNN with every score and interval."""
    return {"k": k, **scores_with_intervals(labels, knn_predict_loo(features, labels, k), n_boot=n_boot)}
