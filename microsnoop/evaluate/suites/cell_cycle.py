"""Cell cycle (BBBC048-style): 7 classes and 5 (G1/S/G2 merged); kNN (leave-one-out) and a 5-fold MLP."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from microsnoop.device import init_runtime
from microsnoop.embed import embed_images
from microsnoop.evaluate.classification import knn_loo_scores, mlp_predict_cv, scores_with_intervals
from microsnoop.evaluate.handcrafted import handcrafted_features
from microsnoop.evaluate.suites.base import (
    ScoreTree,
    SuiteConfig,
    SuiteResult,
    count_classes,
    hash_array,
    load_encoders,
    sample_per_class,
)
from microsnoop.io.images import read_raw
from microsnoop.preprocess.normalize import with_intensity_levels

log = logging.getLogger(__name__)
INTERPHASE = {"G1": "Interphase", "S_phase": "Interphase", "G2": "Interphase"}


def score_features(features: np.ndarray, labels: np.ndarray, config: SuiteConfig) -> ScoreTree:
    """kNN (leave-one-out) and, when ``config.mlp``, 5-fold MLP scores with bootstrap intervals."""
    out: ScoreTree = {"knn": knn_loo_scores(features, labels, k=config.k, n_boot=config.n_boot)}
    if config.mlp:
        pred = mlp_predict_cv(features, labels, folds=5, seed=config.seed)
        out["mlp_5fold"] = scores_with_intervals(labels, pred, n_boot=config.n_boot, seed=config.seed)
    return out


def cell_cycle_suite(data_dir: Path, checkpoints: Mapping[str, Path | None], config: SuiteConfig) -> SuiteResult:
    """Embed labelled cells with every encoder (and cp-measure), then score 7- and 5-class prediction."""
    npz = next(iter(sorted(data_dir.glob("*.npz"))), None)
    if npz is None or not (data_dir / "cells.csv").is_file():
        raise FileNotFoundError(f"{data_dir}: the cell-cycle suite needs cells.csv and one .npz of cells beside it")
    table = pd.read_csv(data_dir / "cells.csv")
    if "experiment" in table:
        table = table[table.experiment == "Experiment_1"]
    picks = sample_per_class(table["label"].reset_index(drop=True), config.limit_per_class, config.seed)
    rows = table.index.to_numpy()[picks]
    images, _ = read_raw(npz)
    images = np.asarray(images[rows])
    labels7 = table.loc[rows, "label"].to_numpy()
    labels5 = np.asarray([INTERPHASE.get(lab, lab) for lab in labels7])
    feature_sets: dict[str, np.ndarray] = {}
    versions: dict[str, str] = {}
    runtime = init_runtime(device=config.device, amp=config.amp)
    for name, (encoder, version) in load_encoders(checkpoints, config).items():
        log.info("embedding %d cells with %s", len(images), name)
        contract = with_intensity_levels(encoder.preprocess, images)
        feature_sets[name] = embed_images(
            encoder, images, contract, runtime, batch_size=config.batch_size, progress=True
        )
        versions[name] = version
    if config.handcrafted:
        log.info("cp-measure features for %d cells", len(images))
        feature_sets["cellprofiler_cp_measure"], _ = handcrafted_features(images, mask_channel=1, progress=True)
        versions["cellprofiler_cp_measure"] = "cp-measure (intensity, texture, granularity, radial, shape)"
    scores = {
        name: {"7_class": score_features(x, labels7, config), "5_class": score_features(x, labels5, config)}
        for name, x in feature_sets.items()
    }
    return SuiteResult(
        suite="cell-cycle",
        n=len(labels7),
        classes=count_classes(labels7),
        data_hash=hash_array(images),
        models=versions,
        scores=scores,
        details={"protocol": config.protocol or "each checkpoint's own"},
        embeddings=feature_sets,
        labels=labels7,
    )
