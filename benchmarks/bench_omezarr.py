"""Peak RSS of `microsnoop embed` on OME-Zarr plates, 1 field vs 96 wells; writes benchmarks/results/omezarr_rss.json.

Usage: python benchmarks/bench_omezarr.py [--size 512] [--chunk-images 8]

Both plates are synthetic (round nuclei on a flat background, 2 channels, uint16, 2 resolution levels,
written with ome-zarr); each field is ``size`` x ``size``. The command embeds every field at level 0 in
cell-region mode (classical segmentation, every cell cropped) with a tiny same-code-path network
(depths 8/16/32, 64 input), so it measures the streaming's memory, not the encoder's speed. Three runs,
each in a fresh process: 1 field, 96 wells streamed in chunks of ``--chunk-images`` fields, and the
same 96 wells in one chunk (everything in memory at once: what bounded memory avoids).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import zarr
from ome_zarr.writer import write_image, write_plate_metadata, write_well_metadata

from microsnoop.config import EncoderConfig, PreprocessContract
from microsnoop.models.checkpoint import save_checkpoint
from microsnoop.models.unet import MicrosnoopUNet

RSS_WRAPPER = (
    "import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
)
OMERO = {
    "channels": [
        {"label": n, "color": "FFFFFF", "window": {"start": 0, "end": 4000, "min": 0, "max": 65535}}
        for n in ("DAPI", "Actin")
    ]
}


def synthetic_field(rng: np.random.Generator, size: int, n_cells: int = 6) -> np.ndarray:
    """``2 x size x size`` uint16: round nuclei in channel 0, a wider halo in channel 1."""
    out = np.full((2, size, size), 100, np.float32)
    for _ in range(n_cells):
        cy, cx = rng.uniform(20, size - 20, 2).astype(int)
        yy, xx = np.mgrid[-20:21, -20:21]
        r2 = yy**2 + xx**2
        out[0, cy - 20 : cy + 21, cx - 20 : cx + 21] += 3000 * np.exp(-r2 / 32.0)
        out[1, cy - 20 : cy + 21, cx - 20 : cx + 21] += 1000 * np.exp(-r2 / 160.0)
    out += rng.normal(0, 10, out.shape).astype(np.float32)
    return np.clip(out, 0, 65535).astype(np.uint16)


def write_synthetic_plate(path: Path, n_wells: int, size: int, seed: int = 0) -> Path:
    """A plate of ``n_wells`` wells (8 rows x 12 columns order), one field each."""
    rng = np.random.default_rng(seed)
    rows, cols = "ABCDEFGH", [str(c) for c in range(1, 13)]
    wells = [f"{rows[i // 12]}/{cols[i % 12]}" for i in range(n_wells)]
    root = zarr.open_group(str(path), mode="w")
    used_rows = sorted({w.split("/")[0] for w in wells})
    used_cols = sorted({w.split("/")[1] for w in wells}, key=int)
    write_plate_metadata(root, used_rows, used_cols, wells, name=path.stem)
    for well in wells:
        row, col = well.split("/")
        group = root.require_group(row).require_group(col)
        write_well_metadata(group, ["0"])
        write_image(synthetic_field(rng, size), group.require_group("0"), axes="cyx", scale_factors=[2], omero=OMERO)
    return path


def peak_rss(plate: Path, ckpt: Path, out: Path, chunk_images: int) -> dict[str, Any]:
    """Peak RSS (MiB) and wall time of one embed command over ``plate``."""
    cmd = [
        sys.executable,
        "-c",
        RSS_WRAPPER,
        sys.executable,
        "-m",
        "microsnoop",
        "embed",
        "--folder",
        str(plate),
        "--checkpoint",
        str(ckpt),
        "--out",
        str(out),
        "--mode",
        "cell-region",
        "--chunk-images",
        str(chunk_images),
        "--device",
        "cpu",
        "--no-progress",
    ]
    t0 = time.perf_counter()
    kib = int(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
    import pandas as pd

    emb = pd.read_parquet(out / "embeddings.parquet")
    return {
        "fields": len(emb),
        "cells": int(emb["Metadata_n_cells"].sum()),
        "peak_rss_mib": round(kib / 1024, 1),
        "seconds": round(time.perf_counter() - t0, 1),
    }


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (benchmarks state the CPU kind beside their numbers)."""
    info = Path("/proc/cpuinfo")
    lines = info.read_text().splitlines() if info.is_file() else []
    return next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), "unknown")


def main() -> None:
    """Write two plates, embed each in a fresh process, record peak RSS."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=512, help="side of every field in pixels")
    ap.add_argument("--chunk-images", type=int, default=8, help="fields per chunk (the streaming's unit)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "omezarr_rss.json")
    args = ap.parse_args()
    torch.manual_seed(0)
    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": cpu_name(),
        "network": "tiny (depths 8/16/32, 64 input): measures streaming memory only",
        "field": f"2 x {args.size} x {args.size} uint16, level 0 of 2",
        "mode": "cell-region, classical segmentation",
    }
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        ckpt = save_checkpoint(
            work / "tiny.pt",
            MicrosnoopUNet(EncoderConfig(depths=(8, 16, 32))),
            preprocess=PreprocessContract(input_size=64),
            provenance={"note": "benchmark only"},
        )
        plates = {n: write_synthetic_plate(work / f"plate{n}.zarr", n, args.size) for n in (1, 96)}
        runs = {"wells_1": (1, args.chunk_images), "wells_96": (96, args.chunk_images), "wells_96_one_chunk": (96, 96)}
        for name, (n, chunk) in runs.items():
            plate = plates[n]
            raw = sum(p.stat().st_size for p in plate.rglob("*") if p.is_file())
            results[name] = {"chunk_images": chunk, **peak_rss(plate, ckpt, work / f"out-{name}", chunk)}
            results[name]["zarr_mib_on_disk"] = round(raw / 2**20, 1)
            results[name]["level0_pixels_mib"] = round(n * 2 * args.size**2 * 2 / 2**20, 1)
            print(name, results[name], flush=True)  # benchmark progress
    a, b = results["wells_1"]["peak_rss_mib"], results["wells_96"]["peak_rss_mib"]
    results["rss_ratio_96_over_1"] = round(b / a, 3)
    results["rss_growth_96_over_1_mib"] = round(b - a, 1)
    results["rss_growth_one_chunk_over_1_mib"] = round(results["wells_96_one_chunk"]["peak_rss_mib"] - a, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
