"""Benchmark suites on real data: every feature set scored on the same inputs, with baselines."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from microsnoop.demo import untrained_encoder
from microsnoop.device import init_runtime
from microsnoop.embed import embed_images
from microsnoop.evaluate.classification import knn_loo_scores, mlp_predict_cv, scores_with_intervals
from microsnoop.evaluate.handcrafted import field_features, handcrafted_features
from microsnoop.io.images import read_image, read_raw
from microsnoop.models.checkpoint import file_sha256, load_encoder
from microsnoop.models.unet import MicrosnoopEncoder
from microsnoop.profile import ProfileConfig, profile_images

log = logging.getLogger(__name__)
INTERPHASE = {"G1": "Interphase", "S_phase": "Interphase", "G2": "Interphase"}


@dataclass(frozen=True)
class SuiteConfig:
    """Shared knobs of every suite."""

    limit_per_class: int | None = None
    k: int = 11
    n_boot: int = 1000
    seed: int = 0
    batch_size: int = 64
    device: str = "auto"
    handcrafted: bool = True
    mlp: bool = True
    field_mode: str = "cell-region"  # dsb2018-fields: cell-region (the paper's) or rescale (one pass per field, fast)


def load_encoders(checkpoints: dict[str, Path | None], seed: int) -> dict[str, tuple[MicrosnoopEncoder, str]]:
    """Name -> (encoder, version string); ``None`` gives the seeded untrained network."""
    out = {}
    for name, path in checkpoints.items():
        if path is None:
            out[name] = (untrained_encoder(seed), f"untrained(seed={seed})")
        else:
            out[name] = (load_encoder(path), f"{path.name}@sha256:{file_sha256(path)[:16]}")
    return out


def _sample(labels: pd.Series, limit: int | None, seed: int) -> np.ndarray:
    """Row positions, at most ``limit`` per class (seeded), in original order."""
    if limit is None:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    keep = [
        rng.choice(idx, size=min(limit, len(idx)), replace=False) for idx in labels.groupby(labels).indices.values()
    ]
    return np.sort(np.concatenate(keep))


def _score_set(features: np.ndarray, labels: np.ndarray, config: SuiteConfig, k: int) -> dict[str, Any]:
    out: dict[str, Any] = {"knn": knn_loo_scores(features, labels, k=k, n_boot=config.n_boot)}
    if config.mlp:
        pred = mlp_predict_cv(features, labels, folds=5, seed=config.seed)
        out["mlp_5fold"] = scores_with_intervals(labels, pred, n_boot=config.n_boot, seed=config.seed)
    return out


def cell_cycle_suite(data_dir: Path, checkpoints: dict[str, Path | None], config: SuiteConfig) -> dict[str, Any]:
    """BBBC048-style cell cycle: 7 classes and 5 (G1/S/G2 merged); kNN (LOO) and 5-fold MLP."""
    npz = next(iter(sorted(data_dir.glob("*.npz"))))
    table = pd.read_csv(data_dir / "cells.csv")
    if "experiment" in table:
        table = table[table.experiment == "Experiment_1"]
    rows = table.index.to_numpy()[_sample(table["label"].reset_index(drop=True), config.limit_per_class, config.seed)]
    images, _ = read_raw(npz)
    images = np.asarray(images[rows])
    labels7 = table.loc[rows, "label"].to_numpy()
    labels5 = np.asarray([INTERPHASE.get(lab, lab) for lab in labels7])
    feature_sets: dict[str, np.ndarray] = {}
    versions: dict[str, str] = {}
    runtime = init_runtime(device=config.device)
    for name, (encoder, version) in load_encoders(checkpoints, config.seed).items():
        log.info("embedding %d cells with %s", len(images), name)
        feature_sets[name] = embed_images(
            encoder,
            images,
            encoder.preprocess,
            runtime,
            batch_size=config.batch_size,
            progress=True,
        )
        versions[name] = version
    if config.handcrafted:
        log.info("cp-measure features for %d cells", len(images))
        feature_sets["cellprofiler_cp_measure"], _ = handcrafted_features(images, mask_channel=1, progress=True)
        versions["cellprofiler_cp_measure"] = "cp-measure (intensity, texture, granularity, radial, shape)"
    scores = {
        name: {"7_class": _score_set(x, labels7, config, config.k), "5_class": _score_set(x, labels5, config, config.k)}
        for name, x in feature_sets.items()
    }
    return {
        "suite": "cell-cycle",
        "n": len(labels7),
        "classes": dict(pd.Series(labels7).value_counts()),
        "data_hash": hash_array(images),
        "models": versions,
        "scores": scores,
        "embeddings": {k: v for k, v in feature_sets.items()},
        "labels": labels7,
    }


def dsb2018_fields_suite(data_dir: Path, checkpoints: dict[str, Path | None], config: SuiteConfig) -> dict[str, Any]:
    """Full-field image type (heuristic modality: derived labels) by 1-NN over field embeddings.

    Fields are embedded in ``config.field_mode``: cell-region (cells cropped by the ground-truth masks,
    averaged) or rescale (the whole field resized once).
    """
    man = pd.read_csv(data_dir / "manifest.csv")
    man = man.iloc[_sample(man["heuristic_modality"], config.limit_per_class, config.seed)].reset_index(drop=True)
    fields, masks = [], []
    for image_id in man.image_id:
        fields.append(read_image(data_dir / "images" / f"{image_id}.png", gray_rgb=True))
        lab, _ = read_raw(data_dir / "labels" / f"{image_id}.png")
        masks.append(lab.astype(np.int32))
    labels = man["heuristic_modality"].to_numpy()
    runtime = init_runtime(device=config.device)
    feature_sets, versions = {}, {}
    profile = ProfileConfig(mode=config.field_mode, rc=1.0, batch_size=config.batch_size)
    for name, (encoder, version) in load_encoders(checkpoints, config.seed).items():
        profs = profile_images(encoder, fields, encoder.preprocess, runtime, profile, masks=masks)
        if any(p.embedding is None for p in profs):
            raise ValueError(f"{data_dir}: a field has no labelled cells; every suite field needs a ground-truth mask")
        feature_sets[name] = np.stack([p.embedding for p in profs])  # type: ignore[misc]
        versions[name] = version
    if config.handcrafted:
        log.info("cp-measure features for %d fields (mean over ground-truth cells)", len(fields))
        feature_sets["cellprofiler_cp_measure"], _ = field_features(fields, masks, progress=True)
        versions["cellprofiler_cp_measure"] = "cp-measure per cell (grey), mean per field"
    scores = {name: {"knn_1": knn_loo_scores(x, labels, k=1, n_boot=config.n_boot)} for name, x in feature_sets.items()}
    return {
        "suite": "dsb2018-fields",
        "field_mode": config.field_mode,
        "n": len(labels),
        "classes": dict(pd.Series(labels).value_counts()),
        "labels_note": "heuristic_modality is derived from pixel statistics, not ground truth",
        "data_hash": hashlib.sha256("".join(man.image_id).encode()).hexdigest(),
        "models": versions,
        "scores": scores,
        "embeddings": feature_sets,
        "labels": labels,
    }


def hash_array(images: np.ndarray) -> str:
    """SHA-256 of an array's bytes: the identity of a suite's inputs."""
    return hashlib.sha256(np.ascontiguousarray(images).tobytes()).hexdigest()


def suites() -> dict[str, Any]:
    """Suite name -> function ``(data_dir, checkpoints, config) -> result``."""
    from microsnoop.evaluate.bbbc021 import bbbc021_cells_suite, bbbc021_profiles_suite

    return {
        "cell-cycle": cell_cycle_suite,
        "dsb2018-fields": dsb2018_fields_suite,
        "bbbc021-profiles": bbbc021_profiles_suite,
        "bbbc021-cells": bbbc021_cells_suite,
    }
