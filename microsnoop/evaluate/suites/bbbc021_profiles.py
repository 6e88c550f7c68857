"""BBBC021 suites: the full MoA protocol on CellProfiler profiles, and dose retrieval on real cells."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from microsnoop.device import init_runtime
from microsnoop.embed import embed_images
from microsnoop.evaluate.classification import bootstrap_ci
from microsnoop.evaluate.handcrafted import handcrafted_features
from microsnoop.evaluate.moa import MoAColumns, moa_accuracy, treatment_batch
from microsnoop.evaluate.retrieval import retrieval_map
from microsnoop.evaluate.suites import SuiteConfig, hash_array, load_encoders
from microsnoop.postprocess.aggregate import per_treatment, per_well
from microsnoop.postprocess.sphere import (
    FewControlsWarning,
    SphereConfig,
    apply_sphering,
    feature_columns,
    fit_sphering,
)

log = logging.getLogger(__name__)


def _mean_ci(hits: list[bool], config: SuiteConfig) -> dict[str, Any]:
    arr = np.asarray(hits, float)
    lo, hi = bootstrap_ci(arr, arr, lambda a, _b: float(np.mean(a)), n_boot=config.n_boot, seed=config.seed)
    return {"accuracy": float(arr.mean()) if len(arr) else float("nan"), "accuracy_ci95": [lo, hi], "n": len(arr)}


def moa_protocol(
    wells: pd.DataFrame, features: list[str], sphere: SphereConfig | None, config: SuiteConfig
) -> dict[str, Any]:
    """Sphere wells on DMSO (optional), mean per treatment, then NSC and NSCB (week and plate batches)."""
    if sphere is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FewControlsWarning)
            wells = apply_sphering(wells, fit_sphering(wells, sphere, features))
    treated = wells[wells.Metadata_Compound != "DMSO"]
    profiles = per_treatment(treated[["Metadata_Compound", "Metadata_Concentration", "Metadata_MoA", *features]])
    keys = ["Metadata_Compound", "Metadata_Concentration"]
    out: dict[str, Any] = {"n_treatments": len(profiles)}
    for batch_name, column in (("week", "Metadata_Batch"), ("plate", "Metadata_Plate")):
        batches = treatment_batch(treated, by=keys, batch=column)
        table = profiles.merge(batches.rename("Metadata_TreatmentBatch").reset_index(), on=keys)
        res = moa_accuracy(table, features, columns=MoAColumns(batch="Metadata_TreatmentBatch"))
        if batch_name == "week":
            out["nsc"] = _mean_ci(res["nsc_hits"], config)
        out[f"nscb_{batch_name}"] = {**_mean_ci(res["nscb_hits"], config), "dropped_moas": res["nscb_dropped_moas"]}
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


def bbbc021_profiles_suite(data_dir: Path, checkpoints: dict[str, Path | None], config: SuiteConfig) -> dict[str, Any]:
    """The Microsnoop/BBBC021 protocol with the provided CellProfiler well profiles standing in for embeddings."""
    wells = pd.read_csv(data_dir / "bbbc021_well_profiles_annotated.csv.gz")
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
    return {
        "suite": "bbbc021-profiles",
        "n": len(wells),
        "n_features": len(features),
        "classes": dict(wells["Metadata_MoA"].value_counts()),
        "data_hash": hash_array(wells[features].to_numpy()),
        "models": {k: "CellProfiler (Ljosa 2013)" for k in variants},
        "scores": scores,
    }


def bbbc021_cells_suite(data_dir: Path, checkpoints: dict[str, Path | None], config: SuiteConfig) -> dict[str, Any]:
    """Real cells: embed, sphere per plate on DMSO, well means, then dose retrieval mAP (copairs)."""
    meta = pd.read_csv(data_dir / "cells_small_200perwell.csv")
    rng = np.random.default_rng(config.seed)
    limit = config.limit_per_class
    groups = meta.groupby(["plate", "well"]).indices.values()
    picks = np.sort(np.concatenate([rng.choice(i, size=min(len(i), limit or len(i)), replace=False) for i in groups]))
    with np.load(data_dir / "bbbc021_singlecell_small_200perwell.npz") as z:
        images = np.moveaxis(z["images"][picks], -1, 1)
    sub = meta.iloc[picks].reset_index(drop=True)
    md = pd.DataFrame(
        {
            "Metadata_Plate": sub.plate,
            "Metadata_Well": sub.well,
            "Metadata_Compound": sub.compound,
            "Metadata_Concentration": sub.concentration.astype(str),
        }
    )
    feature_sets: dict[str, np.ndarray] = {}
    versions: dict[str, str] = {}
    runtime = init_runtime(device=config.device)
    for name, (encoder, version) in load_encoders(checkpoints, config.seed).items():
        feature_sets[name] = embed_images(
            encoder, images, encoder.preprocess, runtime, batch_size=config.batch_size, progress=True
        )
        versions[name] = version
    if config.handcrafted:
        feature_sets["cellprofiler_cp_measure"], _ = handcrafted_features(images, mask_channel=0, progress=True)
        versions["cellprofiler_cp_measure"] = "cp-measure (intensity, texture, granularity, radial, shape)"
    scores = {}
    for name, feats in feature_sets.items():
        cols = [f"f{i}" for i in range(feats.shape[1])]
        cells = pd.concat([md, pd.DataFrame(feats, columns=cols)], axis=1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FewControlsWarning)
            sphered = apply_sphering(cells, fit_sphering(cells, SphereConfig(), cols))
        wells = per_well(sphered)
        dose = retrieval_map(
            wells,
            cols,
            pos_sameby=["Metadata_Compound", "Metadata_Concentration"],
            neg_sameby=[],
            neg_diffby=["Metadata_Compound", "Metadata_Concentration"],
            null_size=1000,
            seed=config.seed,
            n_boot=config.n_boot,
        )
        treated = wells[wells.Metadata_Compound != "DMSO"].reset_index(drop=True)
        vs_dmso = pd.concat([treated, wells[wells.Metadata_Compound == "DMSO"]]).reset_index(drop=True)
        sep = retrieval_map(
            vs_dmso.assign(Metadata_IsControl=vs_dmso.Metadata_Compound == "DMSO"),
            cols,
            pos_sameby=["Metadata_IsControl"],
            neg_diffby=["Metadata_IsControl"],
            null_size=1000,
            seed=config.seed,
            n_boot=config.n_boot,
        )
        scores[name] = {
            "dose_replicate_map": dose["mean_ap"],
            "dose_replicate_map_ci95": list(dose["mean_ap_ci95"]),
            "treated_vs_dmso_map": sep["mean_ap"],
            "treated_vs_dmso_map_ci95": list(sep["mean_ap_ci95"]),
            "n_wells": len(wells),
        }
    return {
        "suite": "bbbc021-cells",
        "n": len(sub),
        "classes": dict(md.Metadata_Compound.value_counts()),
        "data_hash": hash_array(images),
        "models": versions,
        "scores": scores,
    }
