"""BBBC021 mechanism-of-action protocol: 1-NN over treatment profiles, NSC and NSCB."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from microsnoop.errors import ConfigError
from microsnoop.evaluate.knn import cosine_neighbours

# The reference's NSCB exclusion for BBBC021: the two mechanisms whose compounds sit in a single batch.
BBBC021_SINGLE_BATCH_MOAS = ("Cholesterol-lowering", "Kinase inhibitors")
NSCB_RULES = ("reference", "general")
BATCH_RULES = ("joined", "majority")


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
    profiles: pd.DataFrame,
    feature_columns: list[str],
    *,
    columns: MoAColumns | None = None,
    exclude_moas: Sequence[str] | None = None,
) -> dict[str, Any]:
    """NSC and NSCB 1-NN MoA accuracy over treatment profiles (controls must already be removed).

    NSC: the neighbour must be another compound. NSCB: another compound in another batch. Which
    treatments take part in NSCB is set by one of two rules:

    - ``exclude_moas`` given (the reference rule): treatments of those mechanisms are removed from the
      queries *and* the candidates; every other treatment is a query.
    - ``exclude_moas=None`` (the general rule): mechanisms found in only one batch are dropped from the
      queries (no correct neighbour can exist), but stay candidates; queries with no candidate at all
      are dropped too.
    """
    cols = columns or MoAColumns()
    feats = profiles[feature_columns].to_numpy(np.float64)
    compound = profiles[cols.compound].to_numpy()
    moa = profiles[cols.moa].to_numpy()
    batch = profiles[cols.batch].astype(str).to_numpy()
    other_compound = compound[:, None] != compound[None, :]
    nsc_nn = _nearest_allowed(feats, other_compound)
    batches_per_moa = pd.Series(batch).groupby(moa).nunique()
    allowed = other_compound & (batch[:, None] != batch[None, :])
    if exclude_moas is not None:
        kept = ~np.isin(moa.astype(str), list(exclude_moas))
        nscb_nn = _nearest_allowed(feats, allowed & kept[None, :])
        keep_nscb = kept & (nscb_nn >= 0)
        dropped = sorted(str(m) for m in set(moa.astype(str)) & set(exclude_moas))
    else:
        nscb_nn = _nearest_allowed(feats, allowed)
        keep_nscb = np.asarray([batches_per_moa[m] > 1 for m in moa]) & (nscb_nn >= 0)
        dropped = sorted(str(m) for m, n in batches_per_moa.items() if n <= 1)
    nsc_hits = moa[nsc_nn] == moa
    nscb_hits = moa[nscb_nn[keep_nscb]] == moa[keep_nscb]
    return {
        "nsc": float(nsc_hits.mean()),
        "nscb": float(nscb_hits.mean()) if keep_nscb.any() else float("nan"),
        "nscb_rule": "general" if exclude_moas is None else "reference",
        "n_treatments": len(profiles),
        "n_moas": int(pd.Series(moa).nunique()),
        "nscb_queries": int(keep_nscb.sum()),
        "nscb_dropped_moas": dropped,
        "nsc_hits": nsc_hits.tolist(),
        "nscb_hits": nscb_hits.tolist(),
    }


def treatment_batch(wells: pd.DataFrame, *, by: list[str], batch: str, how: str = "majority") -> pd.Series:
    """The batch of each treatment from its wells' batches.

    ``majority``: the most common batch (ties: first in sort order). ``joined`` (the reference): the
    treatment's distinct batches, sorted and joined with commas, so a treatment on plates A and B has
    batch "A,B", which differs from "A" (the reference joins them in row order; sorting makes it stable).
    """
    if how not in BATCH_RULES:
        raise ConfigError(f"how must be one of {BATCH_RULES}, got {how!r}")
    if how == "joined":
        return wells.groupby(by)[batch].agg(lambda s: ",".join(sorted(s.astype(str).unique())))
    return wells.groupby(by)[batch].agg(lambda s: s.astype(str).value_counts().sort_index().idxmax())
