"""Aggregation of profiles: mean (or median) per well and per treatment, pycytominer-style."""

from __future__ import annotations

import logging

import pandas as pd

from microsnoop.errors import MissingColumnsError
from microsnoop.postprocess.sphere import feature_columns

log = logging.getLogger(__name__)
TREATMENT = ["Metadata_Compound", "Metadata_Concentration"]


def aggregate(
    df: pd.DataFrame, by: list[str], *, method: str = "mean", features: list[str] | None = None
) -> pd.DataFrame:
    """One row per group of ``by``: the group's metadata, ``Metadata_n`` rows, and aggregated features."""
    if method not in ("mean", "median"):
        raise ValueError(f"method must be 'mean' or 'median', got {method!r}")
    missing = [c for c in by if c not in df.columns]
    if missing:
        raise MissingColumnsError(
            f"cannot aggregate by missing columns {missing}; available: {list(df.columns)[:12]}...; "
            "add them to the table or pass --by with existing columns"
        )
    features = features or feature_columns(df)
    grouped = df.groupby(by, sort=True, dropna=False)
    feats = grouped[features].agg(method)
    counts = grouped.size().rename("Metadata_n")
    return pd.concat([counts, feats], axis=1).reset_index()


def drop_empty(df: pd.DataFrame, *, empty: str = "drop", features: list[str] | None = None) -> tuple[pd.DataFrame, int]:
    """Handle images with no cells (all-NaN features or ``Metadata_n_cells == 0``): drop and count, or zero."""
    features = features or feature_columns(df)
    no_cells = df[features].isna().all(axis=1).to_numpy()
    if "Metadata_n_cells" in df.columns:
        no_cells |= (df["Metadata_n_cells"] == 0).to_numpy()
    n = int(no_cells.sum())
    if empty == "zero":
        out = df.copy()
        out.loc[no_cells, features] = 0.0
        return out, n
    if empty != "drop":
        raise ValueError(f"empty must be 'drop' or 'zero', got {empty!r}")
    if n:
        log.info("dropped %d images with no cells", n)
    return df.loc[~no_cells].reset_index(drop=True), n


def per_well(df: pd.DataFrame, *, well: str = "Metadata_Well", plate: str = "Metadata_Plate") -> pd.DataFrame:
    """Mean profile per plate and well, keeping treatment metadata constant within a well."""
    keep = [c for c in (plate, well, *TREATMENT, "Metadata_MoA", "Metadata_Batch") if c in df.columns]
    return aggregate(df, keep)


def per_treatment(df: pd.DataFrame, *, extra: list[str] | None = None) -> pd.DataFrame:
    """Mean profile per treatment (compound + concentration), plus ``extra`` constant columns (e.g. MoA)."""
    keep = TREATMENT + [c for c in (extra or ["Metadata_MoA"]) if c in df.columns]
    return aggregate(df, keep)
