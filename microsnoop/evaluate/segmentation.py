"""Instance-segmentation matching: F1 at an IoU threshold and mean matched IoU (as Cellpose/StarDist)."""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

from microsnoop.errors import InvalidImageError


def iou_matrix(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """IoU of every (truth label, predicted label) pair, background excluded: ``n_true x n_pred``."""
    if pred.shape != truth.shape:
        raise InvalidImageError(f"prediction shape {pred.shape} differs from ground truth {truth.shape}")
    _, t = np.unique(truth, return_inverse=True)
    _, p = np.unique(pred, return_inverse=True)
    nt, np_ = int(t.max()) + 1, int(p.max()) + 1
    overlap = np.bincount(t.ravel() * np_ + p.ravel(), minlength=nt * np_).reshape(nt, np_).astype(np.float64)
    union = overlap.sum(1, keepdims=True) + overlap.sum(0, keepdims=True) - overlap
    iou = np.divide(overlap, union, out=np.zeros_like(overlap), where=union > 0)
    t_off = 1 if truth.min() == 0 else 0
    p_off = 1 if pred.min() == 0 else 0
    return iou[t_off:, p_off:]


def match_labels(pred: np.ndarray, truth: np.ndarray, iou_threshold: float = 0.5) -> dict[str, float]:
    """TP, FP, FN, precision, recall, F1 at ``iou_threshold`` with optimal one-to-one matching."""
    iou = iou_matrix(np.asarray(pred), np.asarray(truth))
    n_true, n_pred = iou.shape
    if n_true and n_pred:
        rows, cols = linear_sum_assignment(-iou)
        matched = iou[rows, cols]
        good = matched >= iou_threshold
        tp = int(good.sum())
        mean_iou = float(matched[good].mean()) if tp else 0.0
    else:
        tp, mean_iou = 0, 0.0
    fp, fn = n_pred - tp, n_true - tp
    precision = tp / n_pred if n_pred else (1.0 if not n_true else 0.0)
    recall = tp / n_true if n_true else 1.0
    f1 = 2 * tp / (2 * tp + fp + fn) if (tp + fp + fn) else 1.0
    return {
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "mean_matched_iou": mean_iou,
    }
