"""Segmentation quality and speed on real nuclei; writes benchmarks/results/segmentation_cpu.json.

Usage: python benchmarks/bench_segment.py [--shared ../shared/data] [--limit N] [--cellpose-limit M]

Classical (offline) segmenter: mean F1 at IoU 0.5, mean matched IoU, precision, recall and fields/s on
the DSB2018 fluorescence fields (heuristic_modality == fluorescence_gray) and on stardist img2d/mask2d.
Cellpose 3 runs with *randomly initialised* weights (no pretrained weights can be fetched here): its
number is speed only, and its quality is not meaningful.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import imageio.v3 as iio
import numpy as np
import pandas as pd
import tifffile

from microsnoop.evaluate.segmentation import match_labels
from microsnoop.segment import ClassicalSegmenter, Segmenter, make_segmenter


def _fields(shared: Path, limit: int | None) -> list[tuple[np.ndarray, np.ndarray]]:
    man = pd.read_csv(shared / "dsb2018" / "manifest.csv")
    man = man[man.heuristic_modality == "fluorescence_gray"]
    if limit:
        man = man.head(limit)
    out = []
    for image_id in man.image_id:
        img = iio.imread(shared / "dsb2018" / "images" / f"{image_id}.png")
        out.append(
            (img[..., 0] if img.ndim == 3 else img, iio.imread(shared / "dsb2018" / "labels" / f"{image_id}.png"))
        )
    return out


def evaluate(segmenter: Segmenter, pairs: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, Any]:
    """Mean matching scores over fields and throughput."""
    t0 = time.perf_counter()
    preds = [segmenter.segment(img) for img, _ in pairs]
    seconds = time.perf_counter() - t0
    scores = pd.DataFrame([match_labels(p, gt) for p, (_, gt) in zip(preds, pairs, strict=True)])
    return {
        "n_fields": len(pairs),
        "fields_per_s": round(len(pairs) / seconds, 2),
        **{f"mean_{k}": round(float(scores[k].mean()), 4) for k in ("f1", "mean_matched_iou", "precision", "recall")},
    }


def main() -> None:
    """Run both segmenters and write the JSON."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--shared",
        type=Path,
        default=Path(__file__).resolve().parents[2] / "shared" / "data",
        help="the shared data folder",
    )
    ap.add_argument("--limit", type=int, default=None, help="fields for the classical segmenter (default all)")
    ap.add_argument("--cellpose-limit", type=int, default=10, help="fields for the (random-weight) Cellpose timing")
    ap.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).parent / "results" / "segmentation_cpu.json",
        help="JSON file to write",
    )
    args = ap.parse_args()
    pairs = _fields(args.shared, args.limit)
    stardist = [
        (
            tifffile.imread(args.shared / "samples/stardist/img2d.tif"),
            tifffile.imread(args.shared / "samples/stardist/mask2d.tif"),
        )
    ]
    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "classical": {
            "config": ClassicalSegmenter().config.__dict__,
            "dsb2018_fluorescence": evaluate(ClassicalSegmenter(), pairs),
            "stardist_img2d": evaluate(ClassicalSegmenter(), stardist),
        },
    }
    print("classical", results["classical"], flush=True)  # noqa: T201 - benchmark progress
    from cellpose import models

    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "random.pth"
        models.CellposeModel(gpu=False, pretrained_model=None).net.save_model(str(weights))
        cp = evaluate(make_segmenter("cellpose", weights), pairs[: args.cellpose_limit])
    results["cellpose_random_weights"] = {"note": "untrained weights: speed only, quality meaningless", **cp}
    print("cellpose", results["cellpose_random_weights"], flush=True)  # noqa: T201
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}")  # noqa: T201


if __name__ == "__main__":
    main()
