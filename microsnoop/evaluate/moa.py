"""BBBC021 mechanism-of-action protocol: 1-NN over treatment profiles, NSC and NSCB."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from microsnoop.evaluate.knn import cosine_neighbours


@dataclass(frozen=True)
class MoAColumns:
    """Which metadata columns hold compound, mechanism and batch."""

    compound: str = "Metadata_Compound"
    moa: str = "Metadata_MoA"
    batch: str = "Metadata_Batch"


def _nearest_allowed(features: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """For each row, the index of the nearest (cosine) row where ``allowed[row]`` is True; -1 if none."""
    idx, _ = cosine_neighbours(features, features, len(features))
    out = np.full(len(features), -1)
    for i, row in enumerate(idx):
        ok = row[allowed[i, row]]
        if len(ok):
            out[i] = ok[0]
    return out


def moa_accuracy(
    profiles: pd.DataFrame, feature_columns: list[str], *, columns: MoAColumns | None = None
) -> dict[str, Any]:
    """NSC and NSCB 1-NN MoA accuracy over treatment profiles (controls must already be removed).

    NSC: the neighbour must be another compound. NSCB: another compound in another batch; mechanisms
    found in only one batch are dropped from the NSCB queries, since no correct neighbour can exist.
    """
    cols = columns or MoAColumns()
    feats = profiles[feature_columns].to_numpy(np.float64)
    compound = profiles[cols.compound].to_numpy()
    moa = profiles[cols.moa].to_numpy()
    batch = profiles[cols.batch].astype(str).to_numpy()
    other_compound = compound[:, None] != compound[None, :]
    nsc_nn = _nearest_allowed(feats, other_compound)
    nscb_nn = _nearest_allowed(feats, other_compound & (batch[:, None] != batch[None, :]))
    batches_per_moa = pd.Series(batch).groupby(moa).nunique()
    keep_nscb = np.asarray([batches_per_moa[m] > 1 for m in moa]) & (nscb_nn >= 0)
    nsc_hits = moa[nsc_nn] == moa
    nscb_hits = moa[nscb_nn[keep_nscb]] == moa[keep_nscb]
    return {
        "nsc": float(nsc_hits.mean()),
        "nscb": float(nscb_hits.mean()) if keep_nscb.any() else float("nan"),
        "n_treatments": len(profiles),
        "n_moas": int(pd.Series(moa).nunique()),
        "nscb_queries": int(keep_nscb.sum()),
        "nscb_dropped_moas": sorted(str(m) for m, n in batches_per_moa.items() if n <= 1),
        "nsc_hits": nsc_hits.tolist(),
        "nscb_hits": nscb_hits.tolist(),
    }


def treatment_batch(wells: pd.DataFrame, *, by: list[str], batch: str) -> pd.Series:
    """The batch of each treatment: the most common batch among its wells (ties: first in sort order)."""
    return wells.groupby(by)[batch].agg(lambda s: s.astype(str).value_counts().sort_index().idxmax())
