"""Device and precision choices; the CUDA branch runs only under the `gpu` marker, its CPU twin always."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from microsnoop.config import PreprocessContract
from microsnoop.device import init_runtime, pick_amp, pick_device
from microsnoop.embed import embed_images
from microsnoop.models.unet import MicrosnoopEncoder


def test_cpu_defaults_to_bf16_channels_last() -> None:
    rt = init_runtime(device="cpu")
    assert rt.device.type == "cpu" and rt.amp_dtype == torch.bfloat16 and rt.channels_last
    assert pick_amp(torch.device("cpu"), "off") is None
    assert pick_amp(torch.device("cpu"), "fp16") == torch.float16


def test_asking_for_cuda_without_it_says_how_to_fix() -> None:
    if torch.cuda.is_available():
        pytest.skip("CUDA is present")
    with pytest.raises(RuntimeError, match="use --device cpu"):
        pick_device("cuda")


def _embed(device: str, amp: str) -> np.ndarray:
    torch.manual_seed(0)
    images = np.random.default_rng(0).random((4, 2, 68, 68)).astype(np.float32)
    rt = init_runtime(device=device, amp=amp)
    return embed_images(MicrosnoopEncoder(), images, PreprocessContract(), rt)


def test_bf16_embedding_is_close_to_fp32_on_cpu() -> None:
    fp32, bf16 = _embed("cpu", "off"), _embed("cpu", "auto")
    cos = (fp32 * bf16).sum(1) / 2  # two unit-norm channel blocks per image
    assert (cos > 0.99).all(), cos


@pytest.mark.gpu
def test_gpu_embedding_matches_cpu() -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    cpu, gpu = _embed("cpu", "off"), _embed("cuda", "auto")
    assert ((cpu * gpu).sum(1) / 2 > 0.99).all()
