"""Encoder and training throughput at 224x224 on this machine; writes JSON to benchmarks/results/.

Usage: python benchmarks/bench_encoder.py [--seconds 20] [--out benchmarks/results/encoder_<device>.json]
Variants: fp32 eager; fp32 channels-last; bf16 autocast + channels-last; the same compiled with
torch.compile (inductor) where it works; and one training step (whole U-Net, AdamW, batch 16).
Numbers are images (one-channel 224x224 planes) per second, after warm-up, median of repeats.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from microsnoop import __version__
from microsnoop.device import Runtime, cpu_features, pick_device
from microsnoop.models.unet import MicrosnoopEncoder, MicrosnoopUNet


def _rate(step: Any, batch: int, seconds: float, warmup: int = 2) -> dict[str, float]:
    for _ in range(warmup):
        step()
    rates = []
    t_end = time.perf_counter() + seconds
    while time.perf_counter() < t_end or len(rates) < 3:
        t0 = time.perf_counter()
        step()
        rates.append(batch / (time.perf_counter() - t0))
    rates.sort()
    return {"img_per_s": round(rates[len(rates) // 2], 2), "repeats": len(rates)}


def bench_inference(runtime: Runtime, batch: int, seconds: float, compile_model: bool) -> dict[str, float]:
    """Embedding throughput of the encoder alone."""
    torch.manual_seed(0)
    enc = MicrosnoopEncoder().to(runtime.device).eval()
    if runtime.channels_last:
        enc = enc.to(memory_format=torch.channels_last)
    if compile_model:
        enc = torch.compile(enc)  # type: ignore[assignment]
    x = runtime.to_input(torch.rand(batch, 1, 224, 224))

    @torch.inference_mode()
    def step() -> None:
        with runtime.autocast():
            enc(x)
        if runtime.device.type == "cuda":
            torch.cuda.synchronize()

    return _rate(step, batch, seconds, warmup=3 if compile_model else 2)


def bench_training(runtime: Runtime, batch: int, seconds: float) -> dict[str, float]:
    """One masked-reconstruction optimisation step of the whole U-Net."""
    torch.manual_seed(0)
    model = MicrosnoopUNet().to(runtime.device).train()
    if runtime.channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = runtime.to_input(torch.rand(batch, 1, 224, 224))

    def step() -> None:
        with runtime.autocast():
            pred = model(x)
        loss = F.mse_loss(pred.float(), x.float())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if runtime.device.type == "cuda":
            torch.cuda.synchronize()

    return _rate(step, batch, seconds, warmup=1)


def main() -> None:
    """Run every variant and write one JSON file."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=20.0, help="timed seconds per variant (after warm-up)")
    ap.add_argument("--batch", type=int, default=32, help="planes per inference batch")
    ap.add_argument("--train-batch", type=int, default=16, help="images per training step")
    ap.add_argument("--device", default="auto", help="auto, cpu or cuda")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile variants")
    ap.add_argument(
        "--out", type=Path, default=None, help="JSON file (default benchmarks/results/encoder_<device>.json)"
    )
    args = ap.parse_args()
    device = pick_device(args.device)
    low = torch.bfloat16 if device.type == "cpu" or torch.cuda.is_bf16_supported() else torch.float16
    variants = {
        "fp32_eager": Runtime(device, None, False),
        "fp32_channels_last": Runtime(device, None, True),
        "bf16_channels_last": Runtime(device, low, True),
    }
    results: dict[str, Any] = {"inference": {}, "training": {}}
    for name, rt in variants.items():
        results["inference"][name] = bench_inference(rt, args.batch, args.seconds, False)
        print(name, results["inference"][name], flush=True)  # benchmark progress
    if not args.no_compile:
        for name in ("fp32_channels_last", "bf16_channels_last"):
            try:
                t0 = time.perf_counter()
                r = bench_inference(variants[name], args.batch, args.seconds, True)
                r["compile_and_warmup_s"] = round(time.perf_counter() - t0 - args.seconds, 1)
            except Exception as exc:  # noqa: BLE001 - inductor may lack a compiler here: the error is the result
                r = {"error": f"{exc.__class__.__name__}: {str(exc)[:200]}"}
            results["inference"][f"{name}_compiled"] = r
            print(f"{name}_compiled", r, flush=True)
    for name in ("fp32_eager", "bf16_channels_last"):
        results["training"][name] = bench_training(variants[name], args.train_batch, args.seconds)
        print("train", name, results["training"][name], flush=True)
    base = results["inference"]["fp32_eager"]["img_per_s"]
    best = max((v.get("img_per_s", 0), k) for k, v in results["inference"].items())
    results.update(
        {
            "best_inference": {
                "variant": best[1],
                "img_per_s": best[0],
                "speedup_vs_fp32_eager": round(best[0] / base, 2),
            },
            "device": str(device),
            "torch": torch.__version__,
            "cpu_capability": cpu_features().describe(),
            # Set when an older instruction set is imposed on this CPU (e.g. AVX2 on an AVX512 machine).
            "isa_limits": {k: os.environ[k] for k in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA") if k in os.environ},
            "threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
            "machine": platform.machine(),
            "code_version": __version__,
            "input": "1 x 224 x 224",
            "batch": args.batch,
            "train_batch": args.train_batch,
            "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
    )
    out = args.out or Path(__file__).parent / "results" / f"encoder_{device.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
