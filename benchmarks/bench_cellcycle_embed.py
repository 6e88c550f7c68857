"""Single-cell embedding speed on the cell-cycle set: the paper's 224 canvas in naive fp32 eager vs the
content-aware contract (crop-sized canvas, valid pooling) with the runtime's precision; writes
benchmarks/results/cellcycle_embed_<device>.json.

Usage: python benchmarks/bench_cellcycle_embed.py --data ../shared/data/cellcycle [--cells 294] [--checkpoint CKPT]

Same cells (seeded sample, 40 x 40 x 3), same weights, one run; reported as planes/s and the speed-up.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from microsnoop import __version__
from microsnoop.config import PreprocessContract
from microsnoop.device import Runtime, cpu_features, init_runtime, pick_device, precision_record
from microsnoop.embed import embed_images
from microsnoop.io.images import read_raw
from microsnoop.models.factory import load_named


def timed(encoder: Any, images: np.ndarray, contract: PreprocessContract, runtime: Runtime) -> dict[str, float]:
    """Wall seconds and planes/s of one embed_images call (after a one-batch warm-up)."""
    embed_images(encoder, images[:8], contract, runtime)
    t0 = time.perf_counter()
    embed_images(encoder, images, contract, runtime, batch_size=64)
    sec = time.perf_counter() - t0
    planes = images.shape[0] * images.shape[1]
    return {"seconds": round(sec, 2), "planes_per_s": round(planes / sec, 2)}


def main() -> None:
    """Time the naive and the content-aware path on the same cells and write one JSON file."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("../shared/data/cellcycle"))
    ap.add_argument("--cells", type=int, default=294)
    ap.add_argument("--checkpoint", type=Path, default=Path("models/microsnoop-cpu-v1.pt"))
    ap.add_argument("--note", default="", help="free text stored with the results (e.g. 'cores shared')")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    images, _ = read_raw(next(iter(sorted(args.data.glob("*.npz")))))
    pick = np.random.default_rng(0).choice(len(images), size=min(args.cells, len(images)), replace=False)
    cells = np.asarray(images[np.sort(pick)])
    encoder, model_id = load_named(args.checkpoint)
    naive_rt = Runtime(pick_device("auto"), None, False)
    fast_rt = init_runtime(device="auto", amp="auto", channels_last=True)
    paper = PreprocessContract()  # fixed 224 canvas, pool everything
    content = PreprocessContract(canvas="crop", pooling="valid")
    naive = timed(encoder, cells, paper, naive_rt)
    fast = timed(encoder, cells, content, fast_rt)
    canvas_only = timed(encoder, cells, content, naive_rt)
    out = {
        "model": model_id,
        "cells": int(len(cells)),
        "cell_shape": list(cells.shape[1:]),
        "cpu_capability": cpu_features().describe(),
        "threads": torch.get_num_threads(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "code_version": __version__,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "note": args.note,
        "naive_fp32_eager_224_canvas": naive,
        "content_aware_fp32_eager": canvas_only,
        "content_aware_runtime_precision": {**fast, "precision": precision_record(fast_rt)},
        "speedup_canvas_only": round(naive["seconds"] / canvas_only["seconds"], 2),
        "speedup_total": round(naive["seconds"] / fast["seconds"], 2),
    }
    path = args.out or Path("benchmarks/results") / f"cellcycle_embed_{naive_rt.device.type}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
