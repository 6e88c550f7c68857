"""Pretraining throughput on this CPU: whole training steps on real pool crops (results/pretrain_<device>.json).

Usage: python benchmarks/bench_pretrain.py --pool runs/pool_v2 [--seconds 30] [--crops 224,64] [--compile]

For each training crop size and precision, the timed loop is what ``microsnoop pretrain`` runs: crops
drawn from the pool (rotation, scale), patch masking, forward, MSE, backward, AdamW, batch 16. Reported
as images/s and megapixels/s (the fair comparison across crop sizes), with the data-loading share of
each step and the CPU's capability (``microsnoop.device.cpu_features``).

Each result also gives the arithmetic the step does (FLOPs per image, counted by PyTorch's
``FlopCounterMode`` over forward and backward) and the rate it reaches, as a share of this CPU's own
dense matrix-multiply rate in the same precision (timed here, same threads): the ceiling that tells
how much faster training could still get on this CPU kind, and in which precision.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from microsnoop import __version__
from microsnoop.config import AugmentConfig, EncoderConfig, MaskConfig, PreprocessContract
from microsnoop.curate import load_pool_manifest
from microsnoop.device import Runtime, cpu_features, pick_device
from microsnoop.models.masking import apply_mask, make_patch_mask
from microsnoop.models.unet import MicrosnoopUNet
from microsnoop.pretrain.data import CropDataset, load_planes


def bench(
    dataset: CropDataset, runtime: Runtime, *, batch: int, seconds: float, compile_model: bool = False
) -> dict[str, float]:
    """Median images/s of whole training steps, and the share of each step spent making crops."""
    torch.manual_seed(0)
    model = MicrosnoopUNet(EncoderConfig(decoder_variant="reference")).to(runtime.device).train()
    if runtime.channels_last:
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    t_setup, warmup_s = time.perf_counter(), 0.0
    step_fn: torch.nn.Module = torch.compile(model) if compile_model else model  # type: ignore[assignment]
    rng = np.random.default_rng(0)
    rates, load_share = [], []
    t_end, step = None, 0
    while t_end is None or time.perf_counter() < t_end or len(rates) < 3:
        t0 = time.perf_counter()
        target = torch.stack([dataset[(0, step * batch + j, int(rng.integers(len(dataset))))] for j in range(batch)])
        t_load = time.perf_counter()
        mask = make_patch_mask(
            batch, target.shape[-2], target.shape[-1], MaskConfig(), generator=torch.Generator().manual_seed(step)
        )
        with runtime.autocast():
            pred = step_fn(runtime.to_input(apply_mask(target, mask)))
        loss = F.mse_loss(pred.float(), target.float())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        t1 = time.perf_counter()
        step += 1
        if step <= 2:  # warm-up (and, compiled, the compilation)
            t_end = time.perf_counter() + seconds if step == 2 else None
            warmup_s = time.perf_counter() - t_setup
            continue
        rates.append(batch / (t1 - t0))
        load_share.append((t_load - t0) / (t1 - t0))
    side = dataset.size
    med = float(np.median(rates))
    return {
        "img_per_s": round(med, 2),
        "megapixels_per_s": round(med * side * side / 1e6, 3),
        "data_loading_share": round(float(np.median(load_share)), 3),
        "repeats": len(rates),
        **({"compile_and_warmup_s": round(warmup_s, 1)} if compile_model else {}),
    }


def training_flops_per_image(side: int) -> float:
    """Floating-point operations of one training step (forward, MSE, backward) per ``side`` x ``side`` image."""
    model = MicrosnoopUNet(EncoderConfig(decoder_variant="reference")).train()
    x = torch.zeros(2, 1, side, side)
    counter = FlopCounterMode(display=False)
    with counter:
        F.mse_loss(model(x), x).backward()
    return counter.get_total_flops() / 2


def matmul_gflops(dtype: torch.dtype, *, n: int = 2048, seconds: float = 4.0) -> float:
    """This CPU's dense ``n x n`` matrix-multiply rate in ``dtype`` (GFLOP/s, current threads)."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    a @ b
    t0, count = time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        a @ b
        count += 1
    return 2 * n**3 * count / (time.perf_counter() - t0) / 1e9


def precision_name(dtype: torch.dtype | None) -> str:
    """'fp32' for full precision (no autocast), else the dtype's name ('bfloat16', 'float16')."""
    return "fp32" if dtype in (None, torch.float32) else str(dtype).removeprefix("torch.")


def with_rates(result: dict[str, float], flops: float, ceiling: dict[str, float], runtime: Runtime) -> dict[str, float]:
    """Add the arithmetic per image, the rate reached and its share of the matmul ceiling in the same precision."""
    rate = result["img_per_s"] * flops / 1e9
    out = {**result, "gflop_per_image": round(flops / 1e9, 2), "gflop_per_s": round(rate, 1)}
    if ceiling:
        out["share_of_matmul_ceiling"] = round(rate / ceiling[precision_name(runtime.amp_dtype)], 3)
    return out


def main() -> None:
    """Time every (crop size, precision) pair and write one JSON file."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pool", type=Path, required=True, help="pool folder written by 'microsnoop curate'")
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--crops", default="224,64", help="comma-separated training crop sides")
    ap.add_argument("--planes", type=int, default=120, help="pool planes to load (crops are drawn from these)")
    ap.add_argument("--note", default="", help="free text stored with the results (e.g. 'cores shared')")
    ap.add_argument(
        "--compile", action="store_true", help="also time fp32 + channels-last under torch.compile (inductor)"
    )
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    device = pick_device("auto")
    man = load_pool_manifest(args.pool)
    man = man[man["split"] == "train"].sample(n=min(args.planes, len(man)), random_state=0)
    planes = load_planes(args.pool, man, PreprocessContract(), progress=False)
    low = torch.bfloat16 if device.type == "cpu" or torch.cuda.is_bf16_supported() else torch.float16
    variants = {
        "fp32_eager": Runtime(device, None, False),
        "fp32_channels_last": Runtime(device, None, True),
        "bf16_channels_last": Runtime(device, low, True),
    }
    ceiling = {precision_name(d): matmul_gflops(d) for d in (torch.float32, low)} if device.type == "cpu" else {}
    results: dict[str, Any] = {}
    for side in (int(s) for s in args.crops.split(",")):
        dataset = CropDataset(planes, size=side, augment=AugmentConfig(), seed=0)
        flops = training_flops_per_image(side)
        for name, rt in variants.items():
            r = with_rates(bench(dataset, rt, batch=16, seconds=args.seconds), flops, ceiling, rt)
            results[f"crop{side}_{name}"] = r
            print(side, name, r, flush=True)  # benchmark progress
        if args.compile:
            rt = variants["fp32_channels_last"]
            r = with_rates(bench(dataset, rt, batch=16, seconds=args.seconds, compile_model=True), flops, ceiling, rt)
            results[f"crop{side}_fp32_channels_last_compiled"] = r
            print(side, "fp32_channels_last_compiled", r, flush=True)
    feats = cpu_features()
    out = {
        "device": str(device),
        "cpu": platform.processor() or platform.machine(),
        "cpu_capability": feats.describe(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cores": os.cpu_count(),
        "code_version": __version__,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "note": args.note,
        "matmul_ceiling_gflop_per_s": {k: round(v, 1) for k, v in ceiling.items()},
        "training": results,
    }
    path = args.out or Path("benchmarks/results") / f"pretrain_{device.type}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(path)


if __name__ == "__main__":
    main()
