"""Segmentation quality and speed; writes benchmarks/results/segmentation_<device>.json.

Usage: python benchmarks/bench_segment.py [--shared ../shared/data] [--limit N] [--cellpose-limit 24]

1. Classical segmenter (default ClassicalConfig) on the DSB2018 fluorescence fields
   (heuristic_modality == fluorescence_gray; first channel of the PNG): fields/s, and per-field mean
   F1 at IoU 0.5, mean matched IoU, precision and recall (plus the object-pooled F1).
2. The same metrics on the StarDist sample img2d.tif / mask2d.tif.
3. Cellpose adapter with RANDOM self-made weights (an untrained CPnet saved to a temporary file, since
   no pretrained weights can be downloaded here): fields/s only. Its masks are meaningless, so this
   number measures the adapter's speed, never its quality. Cellpose's flow dynamics cost more when it
   finds cells, so a trained model may run slower than this.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from microsnoop.evaluate.segmentation import match_labels
from microsnoop.io.images import read_image
from microsnoop.io.masks import read_labels
from microsnoop.segment import CellposeConfig, ClassicalSegmenter, Segmenter, make_segmenter

REPO = Path(__file__).resolve().parents[1]


def load_fields(dsb: Path, limit: int | None) -> tuple[list[str], list[np.ndarray], list[np.ndarray]]:
    """The fluorescence fields' first channel and their ground-truth labels."""
    man = pd.read_csv(dsb / "manifest.csv")
    ids = man.loc[man.heuristic_modality == "fluorescence_gray", "image_id"].tolist()[:limit]
    planes = [read_image(dsb / "images" / f"{i}.png")[0] for i in ids]
    truths = [read_labels(dsb / "labels" / f"{i}.png") for i in ids]
    return ids, planes, truths


def timed_segment(segmenter: Segmenter, planes: list[np.ndarray]) -> tuple[list[np.ndarray], float]:
    """Labels of every plane and the wall time of the segmentation alone."""
    segmenter.segment(planes[0])  # warm-up (imports, caches)
    t0 = time.perf_counter()
    labels = [segmenter.segment(p) for p in planes]
    return labels, time.perf_counter() - t0


def summarise(scores: list[dict[str, float]]) -> dict[str, Any]:
    """Per-field means of the matching metrics, and F1 pooled over all objects."""
    df = pd.DataFrame(scores)
    tp, fp, fn = int(df.tp.sum()), int(df.fp.sum()), int(df.fn.sum())
    matched = df.loc[df.tp > 0]
    return {
        "mean_f1_at_0.5": round(float(df.f1.mean()), 4),
        "median_f1_at_0.5": round(float(df.f1.median()), 4),
        "mean_matched_iou": round(float((matched.mean_matched_iou * matched.tp).sum() / max(tp, 1)), 4),
        "mean_matched_iou_per_field": round(float(matched.mean_matched_iou.mean()), 4) if len(matched) else 0.0,
        "mean_precision": round(float(df.precision.mean()), 4),
        "mean_recall": round(float(df.recall.mean()), 4),
        "pooled_f1_at_0.5": round(2 * tp / max(2 * tp + fp + fn, 1), 4),
        "n_true_cells": int(df.n_true.sum()),
        "n_pred_cells": int(df.n_pred.sum()),
        "tp": tp,
        "fp": fp,
        "fn": fn,
    }


def bench_classical(planes: list[np.ndarray], truths: list[np.ndarray]) -> dict[str, Any]:
    """Speed and quality of the default classical segmenter."""
    seg = ClassicalSegmenter()
    labels, seconds = timed_segment(seg, planes)
    scores = [match_labels(p, t) for p, t in zip(labels, truths, strict=True)]
    return {
        "n_fields": len(planes),
        "fields_per_s": round(len(planes) / seconds, 2),
        "megapixels_per_s": round(sum(p.size for p in planes) / seconds / 1e6, 3),
        **summarise(scores),
        "config": dataclasses.asdict(seg.config),
    }


def bench_cellpose_random(planes: list[np.ndarray], device: str) -> dict[str, Any]:
    """Speed of the Cellpose adapter with an untrained network (quality not measured: weights are random)."""
    import torch
    from cellpose.resnet_torch import CPnet

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "random_cp3.pth"
        CPnet([2, 32, 64, 128, 256], 3, sz=3).save_model(str(weights))
        seg = make_segmenter("cellpose", weights, cellpose=CellposeConfig(device=device))
        labels, seconds = timed_segment(seg, planes)
    return {
        "weights": "RANDOM self-made CPnet (torch.manual_seed(0)); speed only, NOT a quality measure",
        "device": str(seg.device),  # type: ignore[attr-defined]
        "n_fields": len(planes),
        "fields_per_s": round(len(planes) / seconds, 3),
        "megapixels_per_s": round(sum(p.size for p in planes) / seconds / 1e6, 4),
        "mean_cells_found": round(float(np.mean([int(lab.max()) for lab in labels])), 2),
    }


def bench_stardist(samples: Path) -> dict[str, Any]:
    """Classical segmenter on the StarDist 2-D sample (125 nuclei)."""
    plane = read_image(samples / "stardist" / "img2d.tif")[0]
    truth = read_labels(samples / "stardist" / "mask2d.tif")
    m = match_labels(ClassicalSegmenter().segment(plane), truth)
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in m.items()}


def main() -> None:
    """Run the benchmark and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "data", help="shared data folder")
    parser.add_argument("--limit", type=int, default=None, help="first N fluorescence fields (default: all 541)")
    parser.add_argument(
        "--cellpose-limit",
        type=int,
        default=24,
        help="fields for the (slow, random-weight) Cellpose timing; 0 skips",
    )
    parser.add_argument("--device", default="cpu", help="Cellpose device: cpu, cuda or auto")
    parser.add_argument(
        "--out", type=Path, default=None, help="output JSON (default results/segmentation_<device>.json)"
    )
    args = parser.parse_args()

    ids, planes, truths = load_fields(args.shared / "dsb2018", args.limit)
    print(f"{len(ids)} DSB2018 fluorescence fields loaded", flush=True)  # benchmark progress
    result: dict[str, Any] = {
        "dataset": "DSB2018 stage1_train, heuristic_modality == fluorescence_gray, first channel",
        "machine": {
            "cpu_count": os.cpu_count(),
            "load_avg_at_start": os.getloadavg(),
            "python": platform.python_version(),
        },
        "classical_dsb2018": bench_classical(planes, truths),
    }
    print("classical", {k: v for k, v in result["classical_dsb2018"].items() if k != "config"}, flush=True)
    result["classical_stardist_img2d"] = bench_stardist(args.shared / "samples")
    print("stardist img2d", result["classical_stardist_img2d"], flush=True)
    if args.cellpose_limit:
        result["cellpose_random_weights_dsb2018"] = bench_cellpose_random(planes[: args.cellpose_limit], args.device)
        print("cellpose (random weights, speed only)", result["cellpose_random_weights_dsb2018"], flush=True)
    device = result.get("cellpose_random_weights_dsb2018", {}).get("device", "cpu").split(":")[0]
    out = args.out or REPO / "benchmarks" / "results" / f"segmentation_{device}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
