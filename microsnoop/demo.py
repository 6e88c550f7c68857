"""The demo job: curate the shipped demo pool, pretrain briefly, reconstruct, embed, compare kNN."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from microsnoop.config import EncoderConfig, MaskConfig, PreprocessContract, PretrainConfig
from microsnoop.curate import curate_pool
from microsnoop.device import init_runtime
from microsnoop.embed import embed_images
from microsnoop.evaluate.knn import knn_accuracy_loo
from microsnoop.io.images import read_raw
from microsnoop.models.factory import load_named
from microsnoop.preprocess.normalize import with_intensity_levels
from microsnoop.pretrain.train import pretrain
from microsnoop.reconstruct import reconstruction_figure

log = logging.getLogger(__name__)


def _brief_pretraining() -> PretrainConfig:
    return PretrainConfig(nepoch=3, warmup_epochs=0, images_per_epoch=48)


@dataclass(frozen=True)
class DemoConfig:
    """What the demo trains and compares: the brief pretraining (network, crop size, precision) and kNN's k.

    The pretraining's network is also the untrained baseline's; its ``amp`` is used for every embedding.
    """

    pretrain: PretrainConfig = field(default_factory=_brief_pretraining)
    k: int = 11


def load_labelled_cells(cells: Path, labels_csv: Path, label_column: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (N x C x H x W) and labels, checked to have one label row per image."""
    images, _ = read_raw(cells)
    table = pd.read_csv(labels_csv)
    if label_column not in table.columns:
        raise ValueError(f"{labels_csv}: no column {label_column!r}; columns are {list(table.columns)}")
    if len(table) != len(images):
        raise ValueError(f"{labels_csv}: {len(table)} rows but {cells} holds {len(images)} images; they must match")
    if images.ndim == 3:
        images = images[:, None]
    return images, table[label_column].to_numpy()


def knn_report(
    cells: Path,
    labels_csv: Path,
    *,
    label_column: str = "label",
    checkpoint: Path | None = None,
    k: int = 11,
    batch_size: int = 64,
    device: str = "auto",
    amp: str = "auto",
    seed: int = 0,
    untrained: EncoderConfig | None = None,
    untrained_preprocess: PreprocessContract | None = None,
) -> dict[str, Any]:
    """Leave-one-out kNN accuracy of one encoder (a checkpoint, or untrained of ``untrained``'s shape) on cells."""
    images, labels = load_labelled_cells(cells, labels_csv, label_column)
    encoder, model_id = load_named(checkpoint, seed=seed, config=untrained, preprocess=untrained_preprocess)
    runtime = init_runtime(device=device, amp=amp)
    t0 = time.perf_counter()
    contract = with_intensity_levels(encoder.preprocess, images)  # a dataset scale is fitted on these cells
    feats = embed_images(encoder, images, contract, runtime, batch_size=batch_size, progress=True)
    seconds = time.perf_counter() - t0
    return {
        "encoder": str(checkpoint) if checkpoint else model_id,
        "k": k,
        "n_cells": len(labels),
        "n_classes": len(set(labels.tolist())),
        "majority_share": float(pd.Series(labels).value_counts(normalize=True).iloc[0]),
        "knn_accuracy": knn_accuracy_loo(feats, labels, k),
        "embed_img_per_s": round(images.shape[0] * images.shape[1] / seconds, 2),
    }


def run_demo(
    *,
    out: Path,
    data: Path,
    shipped: Path,
    config: DemoConfig | None = None,
    echo: Callable[[str], None] = log.info,
) -> dict[str, Any]:
    """Run every step of the demo, telling ``echo`` what happens; returns the scores."""
    config = config or DemoConfig()
    train = config.pretrain
    out.mkdir(parents=True, exist_ok=True)
    echo(f"[1/5] curating the demo pool from {data}")
    _, report = curate_pool([], out / "pool", types_table=data / "pool_types.csv", progress=False)
    echo(f"      {report.summary()}")
    echo(f"[2/5] pretraining briefly ({train.nepoch} epochs x {train.images_per_epoch} images; precision {train.amp})")
    result = pretrain(out / "pool", out / "run", train, resume=False)
    echo("[3/5] writing the reconstruction figure")
    figure_inputs = sorted((data / "dsb2018" / "images").glob("*.png"))[:2] + [data / "samples" / "skimage_ihc.png"]
    figures = {
        "demo": reconstruction_figure(
            result.last_checkpoint, figure_inputs, out / "reconstruction_demo.png", mask=MaskConfig(), max_rows=3
        )
    }
    if shipped.is_file():
        try:
            figures["shipped"] = reconstruction_figure(
                shipped, figure_inputs, out / "reconstruction_shipped.png", mask=MaskConfig(), max_rows=3
            )
        except ValueError as exc:
            log.warning("no reconstruction for %s: %s", shipped, exc)
    dim = 3 * train.encoder.embedding_dim
    echo(f"[4/5] embedding the labelled cell-cycle cells (3 channels -> {dim} numbers per cell)")
    cells, labels_csv = data / "cellcycle" / "cells.npz", data / "cellcycle" / "cells.csv"
    encoders: dict[str, Path | None] = {"untrained": None, "demo (brief)": result.encoder_checkpoint}
    if shipped.is_file():
        encoders["shipped"] = shipped
    else:
        log.warning("shipped encoder %s not found: comparing the untrained and demo encoders only", shipped)
    scores = {
        name: knn_report(
            cells,
            labels_csv,
            checkpoint=path,
            k=config.k,
            amp=train.amp,
            seed=train.seed,
            untrained=train.encoder,
            untrained_preprocess=train.preprocess,
        )
        for name, path in encoders.items()
    }
    echo(f"[5/5] leave-one-out {config.k}-NN accuracy (cosine) on the same cells")
    n = next(iter(scores.values()))
    share = n["majority_share"]
    echo(f"      {n['n_cells']} cells, {n['n_classes']} cell-cycle classes; majority-class share {share:.3f}")
    for name, s in scores.items():
        echo(f"      {name:<14} {s['knn_accuracy']:.3f}   ({s['embed_img_per_s']:.1f} planes/s)")
    summary = {
        "scores": scores,
        "figures": {k: str(v) for k, v in figures.items()},
        "pool": report.summary(),
        "run": str(result.out_dir),
    }
    (out / "scores.json").write_text(json.dumps(summary, indent=2))
    echo(f"figures: {', '.join(str(v) for v in figures.values())}; scores: {out / 'scores.json'}")
    return summary
