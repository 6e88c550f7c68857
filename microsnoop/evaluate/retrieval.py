"""Mean average precision of retrieval (replicates, mechanisms) with the copairs library."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
from copairs.map import average_precision, mean_average_precision

from microsnoop.evaluate.classification import bootstrap_ci

log = logging.getLogger(__name__)


def retrieval_map(
    profiles: pd.DataFrame,
    feature_columns: list[str],
    *,
    pos_sameby: list[str],
    pos_diffby: list[str] | None = None,
    neg_sameby: list[str] | None = None,
    neg_diffby: list[str],
    null_size: int = 1000,
    seed: int = 0,
    n_boot: int = 1000,
) -> dict[str, Any]:
    """Per-profile AP and per-group mAP (with permutation p-values) for one retrieval task.

    ``mean_ap_ci95`` is a percentile bootstrap interval of the mean AP over resampled queries.
    """
    meta = profiles[[c for c in profiles.columns if c not in feature_columns]].reset_index(drop=True)
    feats = profiles[feature_columns].to_numpy(np.float64)
    ap = average_precision(
        meta,
        feats,
        pos_sameby=pos_sameby,
        pos_diffby=pos_diffby or [],
        neg_sameby=neg_sameby or [],
        neg_diffby=neg_diffby,
        progress_bar=False,
    )
    ap = ap.dropna(subset=["average_precision"])
    maps = mean_average_precision(ap, pos_sameby, null_size=null_size, threshold=0.05, seed=seed, progress_bar=False)
    values = ap["average_precision"].to_numpy(np.float64)
    return {
        "mean_ap": float(values.mean()),
        "mean_ap_ci95": mean_ci95(values, n_boot=n_boot, seed=seed),
        "groups": maps[[*pos_sameby, "mean_average_precision", "p_value", "corrected_p_value"]].to_dict("records"),
        "fraction_significant": float(maps["below_corrected_p"].mean()),
        "n_queries": len(ap),
    }


def mean_ci95(values: np.ndarray, *, n_boot: int = 1000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap 95 % interval of the mean of ``values`` (resampled with replacement)."""
    values = np.asarray(values, np.float64)
    if values.size == 0:
        raise ValueError("no values to bootstrap: the retrieval task produced no scorable queries")
    return bootstrap_ci(values, values, lambda a, _b: float(a.mean()), n_boot=n_boot, seed=seed)
