"""BBBC021 profiles: the Microsnoop MoA protocol (NSC, NSCB, MoA mAP) on the CellProfiler well profiles."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from microsnoop.evaluate.classification import bootstrap_ci
from microsnoop.evaluate.moa import MoAColumns, moa_accuracy, treatment_batch
from microsnoop.evaluate.retrieval import retrieval_map
from microsnoop.evaluate.suites.base import ScoreTree, SuiteConfig, SuiteResult, count_classes, hash_array
from microsnoop.postprocess.aggregate import per_treatment
from microsnoop.postprocess.sphere import (
    FewControlsWarning,
    SphereConfig,
    apply_sphering,
    feature_columns,
    fit_sphering,
)

PROFILES = "bbbc021_well_profiles_annotated.csv.gz"


def hit_rate(hits: list[bool], config: SuiteConfig) -> ScoreTree:
    """Share of hits with its bootstrap 95 % interval and the count."""
    arr = np.asarray(hits, float)
    lo, hi = bootstrap_ci(arr, arr, lambda a, _b: float(np.mean(a)), n_boot=config.n_boot, seed=config.seed)
    return {"accuracy": float(arr.mean()) if len(arr) else float("nan"), "accuracy_ci95": [lo, hi], "n": len(arr)}


def moa_protocol(
    wells: pd.DataFrame, features: list[str], sphere: SphereConfig | None, config: SuiteConfig
) -> ScoreTree:
    """Sphere wells on DMSO (optional), mean per treatment, then NSC and NSCB (week and plate batches)."""
    if sphere is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FewControlsWarning)
            wells = apply_sphering(wells, fit_sphering(wells, sphere, features))
    treated = wells[wells.Metadata_Compound != "DMSO"]
    profiles = per_treatment(treated[["Metadata_Compound", "Metadata_Concentration", "Metadata_MoA", *features]])
    keys = ["Metadata_Compound", "Metadata_Concentration"]
    out: ScoreTree = {"n_treatments": len(profiles)}
    for batch_name, column in (("week", "Metadata_Batch"), ("plate", "Metadata_Plate")):
        batches = treatment_batch(treated, by=keys, batch=column)
        table = profiles.merge(batches.rename("Metadata_TreatmentBatch").reset_index(), on=keys)
        res = moa_accuracy(table, features, columns=MoAColumns(batch="Metadata_TreatmentBatch"))
        if batch_name == "week":
            out["nsc"] = hit_rate(res["nsc_hits"], config)
        out[f"nscb_{batch_name}"] = {**hit_rate(res["nscb_hits"], config), "dropped_moas": res["nscb_dropped_moas"]}
    moa_map = retrieval_map(
        profiles,
        features,
        pos_sameby=["Metadata_MoA"],
        pos_diffby=["Metadata_Compound"],
        neg_diffby=["Metadata_MoA"],
        null_size=1000,
        seed=config.seed,
        n_boot=config.n_boot,
    )
    out["moa_map"] = moa_map["mean_ap"]
    out["moa_map_ci95"] = list(moa_map["mean_ap_ci95"])
    return out


def bbbc021_profiles_suite(data_dir: Path, checkpoints: Mapping[str, Path | None], config: SuiteConfig) -> SuiteResult:
    """The Microsnoop/BBBC021 protocol with the provided CellProfiler well profiles standing in for embeddings.

    ``checkpoints`` is unused: the features are CellProfiler's, raw and sphered three ways.
    """
    if not (data_dir / PROFILES).is_file():
        raise FileNotFoundError(f"{data_dir}: the bbbc021-profiles suite needs {PROFILES}")
    wells = pd.read_csv(data_dir / PROFILES)
    features = feature_columns(wells)
    floor = 1e-12  # raw CellProfiler units: variances down to 1e-8 (see docs/sphering.md)
    variants = {
        "cellprofiler_raw": None,
        "cellprofiler_sphered_per_week": SphereConfig(batch_column="Metadata_Batch", variance_floor=floor),
        "cellprofiler_sphered_per_plate": SphereConfig(
            batch_column="Metadata_Plate", variance_floor=floor, missing_controls="global"
        ),
        "cellprofiler_sphered_global": SphereConfig(scope="global", batch_column=None, variance_floor=floor),
    }
    scores = {name: moa_protocol(wells, features, sph, config) for name, sph in variants.items()}
    return SuiteResult(
        suite="bbbc021-profiles",
        n=len(wells),
        classes=count_classes(wells["Metadata_MoA"]),
        data_hash=hash_array(wells[features].to_numpy()),
        models={k: "CellProfiler (Ljosa 2013)" for k in variants},
        scores=scores,
        details={"n_features": len(features)},
    )
