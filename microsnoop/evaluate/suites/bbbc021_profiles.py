"""BBBC021 profiles: the Microsnoop MoA protocol (NSC, NSCB, MoA mAP) on the CellProfiler well profiles.

Scored under the reference protocol (one sphering fitted on every DMSO well, variance floor 1e-3, as the
authors' code does) and the default protocol (sphering scope chosen by rule, variance floor 1e-12 for raw
CellProfiler units) side by side, plus raw and per-batch sphered profiles. NSCB uses the reference rule
(named single-batch MoAs out of queries and candidates, plates joined as a treatment's batch); the
general rule is reported beside it as ``nscb_*_general`` (docs/method-fidelity.md).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from microsnoop.evaluate.classification import bootstrap_ci
from microsnoop.evaluate.moa import BBBC021_SINGLE_BATCH_MOAS, MoAColumns, moa_accuracy, treatment_batch
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
    """Sphere wells on DMSO (optional), mean per treatment, then NSC and NSCB (week and plate batches).

    ``nscb_<batch>``: the reference rule on joined batches; ``nscb_<batch>_general``: the general rule on
    each treatment's most common batch. ``sphering`` says which scope was fitted and why.
    """
    out: ScoreTree = {"sphering": "none"}
    if sphere is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FewControlsWarning)
            fitted = fit_sphering(wells, sphere, features)
            wells = apply_sphering(wells, fitted)
        out["sphering"] = fitted.scope_reason
    treated = wells[wells.Metadata_Compound != "DMSO"]
    profiles = per_treatment(treated[["Metadata_Compound", "Metadata_Concentration", "Metadata_MoA", *features]])
    keys = ["Metadata_Compound", "Metadata_Concentration"]
    out["n_treatments"] = len(profiles)
    for batch_name, column in (("week", "Metadata_Batch"), ("plate", "Metadata_Plate")):
        for rule, how, exclude in (("", "joined", BBBC021_SINGLE_BATCH_MOAS), ("_general", "majority", None)):
            batches = treatment_batch(treated, by=keys, batch=column, how=how)
            table = profiles.merge(batches.rename("Metadata_TreatmentBatch").reset_index(), on=keys)
            res = moa_accuracy(
                table, features, columns=MoAColumns(batch="Metadata_TreatmentBatch"), exclude_moas=exclude
            )
            if batch_name == "week" and not rule:
                out["nsc"] = hit_rate(res["nsc_hits"], config)
            out[f"nscb_{batch_name}{rule}"] = {
                **hit_rate(res["nscb_hits"], config),
                "dropped_moas": res["nscb_dropped_moas"],
            }
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

    ``checkpoints`` and ``config.protocol`` are unused: the features are CellProfiler's, scored under both
    protocols, raw, and sphered per week and per plate.
    """
    if not (data_dir / PROFILES).is_file():
        raise FileNotFoundError(f"{data_dir}: the bbbc021-profiles suite needs {PROFILES}")
    wells = pd.read_csv(data_dir / PROFILES)
    features = feature_columns(wells)
    floor = 1e-12  # raw CellProfiler units: variances down to 1e-8 (see docs/sphering.md)
    variants = {
        "reference_protocol": SphereConfig(scope="global", batch_column=None, variance_floor=1e-3),
        "default_protocol": SphereConfig(scope="auto", batch_column="Metadata_Plate", variance_floor=floor),
        "cellprofiler_raw": None,
        "sphered_per_week": SphereConfig(batch_column="Metadata_Batch", scope="batch", variance_floor=floor),
        "sphered_per_plate": SphereConfig(
            batch_column="Metadata_Plate", scope="batch", variance_floor=floor, missing_controls="global"
        ),
    }
    scores = {name: moa_protocol(wells, features, sph, config) for name, sph in variants.items()}
    source = "CellProfiler (Ljosa 2013)"
    models = {
        name: f"{source}; sphering: {scores[name]['sphering']}"
        + (f", variance floor {sph.variance_floor:g}" if sph is not None else "")
        for name, sph in variants.items()
    }
    return SuiteResult(
        suite="bbbc021-profiles",
        n=len(wells),
        classes=count_classes(wells["Metadata_MoA"]),
        data_hash=hash_array(wells[features].to_numpy()),
        models=models,
        scores=scores,
        details={"n_features": len(features), "nscb_rule": "reference (general rule as nscb_*_general)"},
    )
