"""Cosine kNN classification with leave-one-out, majority vote and nearest-neighbour tie-break."""

from __future__ import annotations

from collections import Counter

import numpy as np

from microsnoop.errors import ConfigError


def cosine_neighbours(queries: np.ndarray, database: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and cosine distances of the ``k`` nearest database rows for each query, nearest first."""
    if k < 1:
        raise ConfigError(f"k must be at least 1 neighbour, got {k}; pass --k 1 or more")
    q = queries / np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-12)
    d = database / np.maximum(np.linalg.norm(database, axis=1, keepdims=True), 1e-12)
    dist = 1.0 - q @ d.T
    k = min(k, dist.shape[1])
    idx = np.argpartition(dist, k - 1, axis=1)[:, :k]
    part = np.take_along_axis(dist, idx, axis=1)
    order = np.lexsort((idx, part), axis=1)
    return np.take_along_axis(idx, order, axis=1), np.take_along_axis(part, order, axis=1)


def vote(neighbour_labels: list[object]) -> object:
    """Majority label; ties (and all-distinct) go to the label of the nearest neighbour among the tied."""
    counts = Counter(neighbour_labels)
    top = max(counts.values())
    tied = {lab for lab, n in counts.items() if n == top}
    return next(lab for lab in neighbour_labels if lab in tied)


def knn_predict_loo(features: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Leave-one-out predictions: query k+1 neighbours and drop the query itself."""
    if k < 1:
        raise ConfigError(f"k must be at least 1 neighbour, got {k}; pass --k 1 or more")
    idx, _ = cosine_neighbours(features, features, k + 1)
    preds = []
    for i, row in enumerate(idx):
        others = [j for j in row if j != i][:k]
        preds.append(vote([labels[j] for j in others]))
    return np.asarray(preds)


def knn_accuracy_loo(features: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Leave-one-out kNN accuracy."""
    return float(np.mean(knn_predict_loo(features, labels, k) == np.asarray(labels)))
