"""The multi-GPU path (torchrun + DDP + DistributedSampler) exercised on CPU with gloo, 2 processes.

No GPU here: the same code runs with the nccl backend when CUDA is present (the `gpu` twin below).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from microsnoop.models.checkpoint import load_encoder

ARGS = [
    "--depths",
    "8,16,32",
    "--input-size",
    "64",
    "--nepoch",
    "2",
    "--warmup-epochs",
    "0",
    "--images-per-epoch",
    "8",
    "--batch-size",
    "2",
    "--no-progress",
]


def _torchrun(pool: Path, out: Path, device: str) -> subprocess.CompletedProcess[str]:
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-port",
        "29517",
        "-m",
        "microsnoop",
        "pretrain",
        "--pool",
        str(pool),
        "--out",
        str(out),
        "--device",
        device,
        *ARGS,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)


def _check(out: Path, proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1], "only rank 0 writes metrics, once per epoch"
    assert all(r["images"] == 8 for r in rows), "the two ranks share each epoch's images"
    encoder = load_encoder(out / "encoder.pt")
    assert encoder(torch.rand(1, 1, 64, 64)).shape == (1, 32)


@pytest.mark.slow
def test_ddp_pretraining_on_cpu_with_gloo(demo_pool: Path, tmp_path: Path) -> None:
    _check(tmp_path / "ddp", _torchrun(demo_pool, tmp_path / "ddp", "cpu"))


@pytest.mark.gpu
def test_ddp_pretraining_on_gpus(demo_pool: Path, tmp_path: Path) -> None:
    if torch.cuda.device_count() < 2:
        pytest.skip("needs 2 CUDA devices")
    _check(tmp_path / "ddp", _torchrun(demo_pool, tmp_path / "ddp", "auto"))
