"""BBBC021 cells: embed real cells, sphere on DMSO (scope auto and per plate), well means, dose retrieval mAP."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from microsnoop.device import init_runtime
from microsnoop.embed import embed_images
from microsnoop.evaluate.handcrafted import handcrafted_features
from microsnoop.evaluate.retrieval import retrieval_map
from microsnoop.evaluate.suites.base import (
    ScoreTree,
    SuiteConfig,
    SuiteResult,
    count_classes,
    hash_array,
    load_encoders,
)
from microsnoop.postprocess.aggregate import per_well
from microsnoop.postprocess.sphere import FewControlsWarning, SphereConfig, apply_sphering, fit_sphering
from microsnoop.preprocess.normalize import with_intensity_levels

CELLS_TABLE = "cells_small_200perwell.csv"
CELLS_NPZ = "bbbc021_singlecell_small_200perwell.npz"


def dose_scores(md: pd.DataFrame, feats: np.ndarray, config: SuiteConfig) -> ScoreTree:
    """Dose-replicate and treated-vs-DMSO retrieval mAP after sphering on DMSO, both ways.

    ``sphered_auto``: the default scope rule (global unless every plate has >= 2 DMSO cells per feature);
    ``sphered_per_plate``: one transform per plate, forced. Cells are averaged per well after sphering.
    """
    cols = [f"f{i}" for i in range(feats.shape[1])]
    cells = pd.concat([md, pd.DataFrame(feats, columns=cols)], axis=1)
    return {
        f"sphered_{name}": _retrieval_after_sphering(cells, cols, sphere, config)
        for name, sphere in (("auto", SphereConfig()), ("per_plate", SphereConfig(scope="batch")))
    }


def _retrieval_after_sphering(
    cells: pd.DataFrame, cols: list[str], sphere: SphereConfig, config: SuiteConfig
) -> ScoreTree:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FewControlsWarning)
        fitted = fit_sphering(cells, sphere, cols)
        sphered = apply_sphering(cells, fitted)
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
    return {
        "dose_replicate_map": dose["mean_ap"],
        "dose_replicate_map_ci95": list(dose["mean_ap_ci95"]),
        "treated_vs_dmso_map": sep["mean_ap"],
        "treated_vs_dmso_map_ci95": list(sep["mean_ap_ci95"]),
        "n_wells": len(wells),
        "sphering": fitted.scope_reason,
    }


def bbbc021_cells_suite(data_dir: Path, checkpoints: Mapping[str, Path | None], config: SuiteConfig) -> SuiteResult:
    """Real BBBC021 cells (at most ``limit_per_class`` per well): every encoder and cp-measure, dose retrieval."""
    missing = [name for name in (CELLS_TABLE, CELLS_NPZ) if not (data_dir / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{data_dir}: the bbbc021-cells suite needs {', '.join(missing)}")
    meta = pd.read_csv(data_dir / CELLS_TABLE)
    rng = np.random.default_rng(config.seed)
    limit = config.limit_per_class
    groups = meta.groupby(["plate", "well"]).indices.values()
    picks = np.sort(np.concatenate([rng.choice(i, size=min(len(i), limit or len(i)), replace=False) for i in groups]))
    with np.load(data_dir / CELLS_NPZ) as z:
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
    runtime = init_runtime(device=config.device, amp=config.amp)
    for name, (encoder, version) in load_encoders(checkpoints, config).items():
        contract = with_intensity_levels(encoder.preprocess, images)
        feature_sets[name] = embed_images(
            encoder, images, contract, runtime, batch_size=config.batch_size, progress=True
        )
        versions[name] = version
    if config.handcrafted:
        feature_sets["cellprofiler_cp_measure"], _ = handcrafted_features(images, mask_channel=0, progress=True)
        versions["cellprofiler_cp_measure"] = "cp-measure (intensity, texture, granularity, radial, shape)"
    return SuiteResult(
        suite="bbbc021-cells",
        n=len(sub),
        classes=count_classes(md.Metadata_Compound),
        data_hash=hash_array(images),
        models=versions,
        scores={name: dose_scores(md, feats, config) for name, feats in feature_sets.items()},
        details={"protocol": config.protocol or "each checkpoint's own"},
    )
