"""Instance-segmentation scores: F1 at an IoU threshold with optimal one-to-one matching.

The object-level metric of Cellpose and StarDist: every predicted label and every true label is an
object; a pair counts as a true positive when its intersection over union reaches the threshold, and
the pairing maximises the number of true positives (ties broken by IoU) with
:func:`scipy.optimize.linear_sum_assignment`. Arrays in, a dict of numbers out.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse
from scipy.optimize import linear_sum_assignment

from microsnoop.errors import InvalidImageError

METRICS = ("n_true", "n_pred", "tp", "fp", "fn", "precision", "recall", "f1", "mean_matched_iou")


def _as_labels(labels: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(labels)
    if a.dtype == bool:
        return a.astype(np.int64)
    if a.dtype.kind == "f":
        if not np.isfinite(a).all() or not np.array_equal(a, np.round(a)):
            raise InvalidImageError(
                f"{name}: a label image must hold whole numbers (0 = background); got non-integer floats. "
                "Pass the instance mask, not a probability map"
            )
        a = a.astype(np.int64)
    elif a.dtype.kind not in "iu":
        raise InvalidImageError(f"{name}: label images must be integer arrays, got dtype {a.dtype}")
    if a.size and a.min() < 0:
        raise InvalidImageError(f"{name}: negative label {a.min()}; labels are 0 (background) or 1..N")
    return a


def iou_table(pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """IoU of every overlapping (true, predicted) object pair from a sparse contingency table.

    Returns ``(true_ids, pred_ids, iou)`` where ``iou`` is ``len(true_ids) x len(pred_ids)`` over the
    objects that overlap at least one object of the other image (the others have IoU 0 with all).

    >>> t = np.array([[1, 1, 0, 0]]); p = np.array([[1, 1, 1, 0]])
    >>> iou_table(p, t)[2]
    array([[0.66666667]])
    """
    _, _, true_ids, pred_ids, iou = _overlaps(_as_labels(pred, "prediction"), _as_labels(truth, "ground truth"))
    return true_ids, pred_ids, iou


def _overlaps(pred: np.ndarray, truth: np.ndarray) -> tuple[int, int, np.ndarray, np.ndarray, np.ndarray]:
    """Object counts and the IoU of overlapping pairs (see :func:`iou_table`)."""
    if pred.shape != truth.shape:
        raise InvalidImageError(
            f"prediction shape {pred.shape} differs from ground-truth shape {truth.shape}; "
            "compare the mask of the same image at the same size"
        )
    t_ids, t_inv = np.unique(truth.ravel(), return_inverse=True)
    p_ids, p_inv = np.unique(pred.ravel(), return_inverse=True)
    ones = np.ones(t_inv.size, dtype=np.int64)
    counts = sparse.coo_matrix((ones, (t_inv, p_inv)), shape=(t_ids.size, p_ids.size)).tocsr()
    t_area = np.asarray(counts.sum(axis=1)).ravel()
    p_area = np.asarray(counts.sum(axis=0)).ravel()
    # Background rows/columns (label 0) take no part in the matching.
    t_keep = np.flatnonzero(t_ids > 0)
    p_keep = np.flatnonzero(p_ids > 0)
    inter = counts[t_keep][:, p_keep].tocoo()
    rows_used = np.unique(inter.row)
    cols_used = np.unique(inter.col)
    dense = np.zeros((rows_used.size, cols_used.size), dtype=np.float64)
    r = np.searchsorted(rows_used, inter.row)
    c = np.searchsorted(cols_used, inter.col)
    union = t_area[t_keep][inter.row] + p_area[p_keep][inter.col] - inter.data
    dense[r, c] = inter.data / union
    return t_keep.size, p_keep.size, t_ids[t_keep][rows_used], p_ids[p_keep][cols_used], dense


def match_labels(pred: np.ndarray, truth: np.ndarray, iou_threshold: float = 0.5) -> dict[str, float]:
    """TP, FP, FN, precision, recall, F1 and mean matched IoU of a label image against the truth.

    Both images empty scores 1.0 (nothing to find, nothing found); otherwise an undefined ratio is 0.0.

    >>> t = np.zeros((8, 8), int); t[1:4, 1:4] = 1; t[5:8, 5:8] = 2
    >>> m = match_labels(t, t); (m["tp"], m["f1"])
    (2, 1.0)
    """
    if not 0.0 < iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
    n_true, n_pred, _, _, iou = _overlaps(_as_labels(pred, "prediction"), _as_labels(truth, "ground truth"))
    tp, mean_iou = 0, 0.0
    if iou.size:
        # Maximise the number of pairs at or above the threshold first, then their IoU (as Cellpose).
        hit = iou >= iou_threshold
        cost = -(hit.astype(np.float64) + iou / (2.0 * min(iou.shape)))
        rows, cols = linear_sum_assignment(cost)
        good = hit[rows, cols]
        tp = int(good.sum())
        mean_iou = float(iou[rows, cols][good].mean()) if tp else 0.0
    fp, fn = n_pred - tp, n_true - tp
    if n_true == 0 and n_pred == 0:
        precision = recall = f1 = 1.0
    else:
        precision = tp / n_pred if n_pred else 0.0
        recall = tp / n_true if n_true else 0.0
        f1 = 2 * tp / (2 * tp + fp + fn)
    return {
        "n_true": n_true,
        "n_pred": n_pred,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "mean_matched_iou": mean_iou,
    }
