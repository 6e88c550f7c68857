"""Profiling throughput and bounded memory; writes benchmarks/results/embed_<device>.json.

Usage: python benchmarks/bench_embed.py [--shared ../shared/data] [--cells 256] [--fields 12] [--skip-rss]

1. Single-cell: BBBC021 68x68x3 cells, the real encoder (224 input), bf16 + channels-last vs plain
   fp32 eager: images/s and planes/s.
2. Full-field: DSB2018 fluorescence fields in cell-region mode (ground-truth masks, Rc = 1), same two
   precisions: fields/s and cells/s.
3. Peak RSS of `microsnoop embed` over 1k and 20k stacked 68x68x3 images (memory-mapped .npy, chunks
   of 256). This part uses a tiny same-code-path network (depths 8/16/32, 64 input) so 20k images finish
   in minutes on 2 cores: it measures the streaming's memory, not the encoder's speed.
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

import imageio.v3 as iio
import numpy as np
import pandas as pd
import torch

from microsnoop.config import EncoderConfig, PreprocessContract
from microsnoop.device import Runtime, cpu_features
from microsnoop.models.checkpoint import save_checkpoint
from microsnoop.models.unet import MicrosnoopEncoder, MicrosnoopUNet
from microsnoop.profile import ProfileConfig, profile_images

RSS_WRAPPER = (
    "import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
)


def _timed(fn: Any) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def bench_modes(shared: Path, n_cells: int, n_fields: int, device: torch.device) -> dict[str, Any]:
    """Throughput of single-cell and cell-region profiling, bf16 + channels-last vs fp32 eager."""
    torch.manual_seed(0)
    encoder = MicrosnoopEncoder().to(device).eval()
    contract = PreprocessContract()
    with np.load(shared / "bbbc021_cells" / "bbbc021_singlecell_small_200perwell.npz") as z:
        key = "images" if "images" in z.files else z.files[0]
        cells = np.moveaxis(z[key][:n_cells], -1, 1)  # N x 68 x 68 x 3 -> N x 3 x 68 x 68
    man = pd.read_csv(shared / "dsb2018" / "manifest.csv")
    man = man[man.heuristic_modality == "fluorescence_gray"].head(n_fields)
    fields = [iio.imread(shared / "dsb2018" / "images" / f"{i}.png") for i in man.image_id]
    fields = [f[..., 0][None] if f.ndim == 3 else f[None] for f in fields]
    masks = [iio.imread(shared / "dsb2018" / "labels" / f"{i}.png").astype(np.int32) for i in man.image_id]
    low = torch.bfloat16 if device.type == "cpu" or torch.cuda.is_bf16_supported() else torch.float16
    out: dict[str, Any] = {"n_cells": len(cells), "n_fields": len(fields), "n_field_cells": int(man.n_nuclei.sum())}
    for name, rt in {
        "fp32_eager": Runtime(device, None, False),
        "bf16_channels_last": Runtime(device, low, True),
    }.items():
        enc = (
            encoder.to(memory_format=torch.channels_last)
            if rt.channels_last
            else encoder.to(memory_format=torch.contiguous_format)
        )
        sc = ProfileConfig(mode="single-cell", batch_size=64)
        profile_images(enc, list(cells[:8]), contract, rt, sc)  # warm-up
        s = _timed(lambda: profile_images(enc, list(cells), contract, rt, sc))  # noqa: B023
        ff = ProfileConfig(mode="cell-region", rc=1.0, batch_size=64)
        f = _timed(lambda: profile_images(enc, fields, contract, rt, ff, masks=masks))  # noqa: B023
        out[name] = {
            "single_cell_img_per_s": round(len(cells) / s, 2),
            "single_cell_planes_per_s": round(3 * len(cells) / s, 2),
            "full_field_fields_per_s": round(len(fields) / f, 3),
            "full_field_cells_per_s": round(out["n_field_cells"] / f, 2),
        }
        print(name, out[name], flush=True)  # benchmark progress
    out["bf16_over_fp32_single_cell"] = round(
        out["bf16_channels_last"]["single_cell_img_per_s"] / out["fp32_eager"]["single_cell_img_per_s"], 2
    )
    out["bf16_over_fp32_full_field"] = round(
        out["bf16_channels_last"]["full_field_fields_per_s"] / out["fp32_eager"]["full_field_fields_per_s"], 2
    )
    return out


def bench_rss(sizes: list[int], workdir: Path) -> dict[str, Any]:
    """Peak RSS (MiB) of the embed command over stacks of different sizes, same chunking."""
    torch.manual_seed(0)
    ckpt = save_checkpoint(
        workdir / "tiny.pt",
        MicrosnoopUNet(EncoderConfig(depths=(8, 16, 32))),
        preprocess=PreprocessContract(input_size=64),
        provenance={"note": "benchmark only"},
    )
    rng = np.random.default_rng(0)
    out: dict[str, Any] = {
        "network": "tiny (depths 8/16/32, 64 input): measures streaming memory only",
        "chunk_images": 256,
    }
    for n in sizes:
        stack = np.lib.format.open_memmap(workdir / f"s{n}.npy", mode="w+", dtype=np.uint16, shape=(n, 3, 68, 68))
        for start in range(0, n, 1000):
            stack[start : start + 1000] = rng.integers(0, 4000, (min(1000, n - start), 3, 68, 68), dtype=np.uint16)
        stack.flush()
        del stack
        cmd = [
            sys.executable,
            "-c",
            RSS_WRAPPER,
            sys.executable,
            "-m",
            "microsnoop",
            "embed",
            "--stack",
            str(workdir / f"s{n}.npy"),
            "--checkpoint",
            str(ckpt),
            "--out",
            str(workdir / f"out{n}"),
            "--chunk-images",
            "256",
            "--no-progress",
        ]
        t0 = time.perf_counter()
        kib = int(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
        out[f"images_{n}"] = {"peak_rss_mib": round(kib / 1024, 1), "seconds": round(time.perf_counter() - t0, 1)}
        print(n, out[f"images_{n}"], flush=True)
    a, b = out[f"images_{sizes[0]}"]["peak_rss_mib"], out[f"images_{sizes[-1]}"]["peak_rss_mib"]
    out["rss_ratio_largest_over_smallest"] = round(b / a, 3)
    out["within_10_percent"] = bool(b <= 1.10 * a)
    return out


def main() -> None:
    """Run the benchmarks and write one JSON file."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--shared",
        type=Path,
        default=Path(__file__).resolve().parents[2] / "shared" / "data",
        help="the shared data folder (BBBC021 cells, DSB2018 fields)",
    )
    ap.add_argument("--cells", type=int, default=256, help="single cells to embed per precision")
    ap.add_argument("--fields", type=int, default=12, help="full fields to embed per precision")
    ap.add_argument("--rss-sizes", default="1000,20000", help="comma-separated stack sizes for the RSS test")
    ap.add_argument("--skip-rss", action="store_true", help="skip the peak-RSS part")
    ap.add_argument("--skip-modes", action="store_true", help="skip the throughput part")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--out", type=Path, default=None, help="JSON path (default benchmarks/results/embed_<device>.json)")
    args = ap.parse_args()
    device = torch.device(args.device)
    results: dict[str, Any] = {
        "device": str(device),
        "torch": torch.__version__,
        "cpu_capability": cpu_features().describe(),
        "threads": torch.get_num_threads(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    if not args.skip_modes:
        results["throughput"] = bench_modes(args.shared, args.cells, args.fields, device)
    if not args.skip_rss:
        with tempfile.TemporaryDirectory() as tmp:
            results["peak_rss"] = bench_rss([int(s) for s in args.rss_sizes.split(",")], Path(tmp))
    out = args.out or Path(__file__).parent / "results" / f"embed_{device.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists():  # keep parts measured by earlier calls with --skip-*
        results = {**json.loads(out.read_text()), **results}
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
