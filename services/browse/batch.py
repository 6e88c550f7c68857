"""Batch effects: embeddings before and after sphering on controls, mapped with PCA and coloured by plate."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from services.browse.errors import BrowseError
from services.browse.projection import flatten_metadata, project
from services.featurestore import FeatureStore

MAX_ROWS = 20_000


@dataclass(frozen=True)
class BatchView:
    """Map coordinates before/after sphering (column ``stage``), and what the sphering could use."""

    frame: pd.DataFrame
    colour_by: str
    fit_on: str
    notes: tuple[str, ...]


def sphere_views(
    store: FeatureStore,
    level: str,
    model_version: str,
    *,
    control_value: str = "DMSO",
    max_rows: int = MAX_ROWS,
) -> BatchView:
    """Controls and treatments before and after ZCA sphering, both projected with PCA.

    Sphering is fitted per plate on the rows whose compound is ``control_value``. Without plate or
    control metadata it falls back to one global fit on all rows, and ``notes`` says so.
    """
    from microsnoop.postprocess.sphere import FewControlsWarning, SphereConfig, apply_sphering, fit_sphering

    meta, vectors = store.vectors(level, model_version=model_version, limit=max_rows)
    if len(meta) < 3:
        raise BrowseError(f"{len(meta)} {level} embeddings under {model_version}; at least 3 are needed")
    meta = flatten_metadata(meta).reset_index(drop=True)
    notes: list[str] = []
    has_plate = "plate" in meta and meta["plate"].notna().any()
    is_control = (meta["compound"].astype(str) == control_value) if "compound" in meta else pd.Series(False, meta.index)
    if not has_plate:
        notes.append(
            "These embeddings carry no plate metadata (Metadata_Plate), so there are no batches to compare: "
            "the sphering below is one global fit and points are coloured by another column."
        )
    if not is_control.any():
        notes.append(
            f"No control rows (compound == {control_value!r}): sphering is fitted on all rows instead of controls."
        )
    features = [f"f{i}" for i in range(vectors.shape[1])]
    table = pd.DataFrame(vectors.astype(np.float64), columns=features)
    table["Metadata_Control"] = np.where(is_control, "control", "treatment") if is_control.any() else "all"
    table["Metadata_Batch"] = meta["plate"].fillna("none").astype(str).to_numpy() if has_plate else "all"
    config = SphereConfig(
        control_column="Metadata_Control",
        control_value="control" if is_control.any() else "all",
        batch_column="Metadata_Batch" if has_plate else None,
        scope="batch" if has_plate else "global",
        missing_controls="global",
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", FewControlsWarning)
        sphered = apply_sphering(table, fit_sphering(table, config, features))
    notes.extend(str(w.message) for w in caught if issubclass(w.category, FewControlsWarning))
    colour_by = (
        "plate"
        if has_plate
        else next((c for c in ("compound", "moa", "label") if c in meta and meta[c].notna().any()), "entity_id")
    )
    frames = []
    for stage, values in (("before", vectors), ("after", sphered[features].to_numpy(np.float32))):
        coords = project(values, method="pca")
        frames.append(
            meta.assign(stage=stage, x=coords[:, 0], y=coords[:, 1], role=table["Metadata_Control"].to_numpy())
        )
    fit_on = ("controls" if is_control.any() else "all rows") + (" per plate" if has_plate else ", globally")
    return BatchView(pd.concat(frames, ignore_index=True), colour_by, fit_on, tuple(notes))
