"""Device and precision choices; the CUDA branch runs only under the `gpu` marker, its CPU twin always."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from microsnoop.config import EncoderConfig, PreprocessContract
from microsnoop.device import CpuFeatures, check_amp, init_runtime, pick_amp, pick_device, precision_record
from microsnoop.embed import embed_images
from microsnoop.models.unet import MicrosnoopEncoder

AVX2 = CpuFeatures(capability="AVX2", amx=False, avx512_bf16=False)
AMX = CpuFeatures(capability="AVX512", amx=True, avx512_bf16=True)
AVX512_BF16 = CpuFeatures(capability="AVX512", amx=False, avx512_bf16=True)
CPU = torch.device("cpu")


def test_auto_picks_fp32_where_bf16_is_emulated_and_bf16_where_native() -> None:
    assert pick_amp(CPU, "auto", cpu=AVX2) is None
    assert pick_amp(CPU, "auto", cpu=AMX) == torch.bfloat16
    assert pick_amp(CPU, "auto", cpu=AVX512_BF16) is None  # measured slower than fp32 without AMX
    # explicit choices win over the capability
    assert pick_amp(CPU, "bf16", cpu=AVX2) == torch.bfloat16
    assert pick_amp(CPU, "off", cpu=AMX) is None
    assert pick_amp(CPU, "fp16", cpu=AVX2) == torch.float16


def test_unknown_amp_is_refused_not_read_as_bf16() -> None:
    for typo in ("bf61", "BF16", "", "fp32"):
        with pytest.raises(ValueError, match="--amp must be one of auto, bf16, fp16, off"):
            check_amp(typo)
        with pytest.raises(ValueError, match="--amp must be one of"):
            init_runtime(device="cpu", amp=typo)


def test_precision_choice_is_recorded() -> None:
    rt = init_runtime(device="cpu", amp="off", channels_last=False)
    rec = precision_record(rt)
    assert rec["amp_dtype"] == "fp32" and rec["channels_last"] == "false"
    assert rec["cpu_capability"] == str(torch.backends.cpu.get_cpu_capability())
    assert rec["cpu_amx"] in ("true", "false") and rec["cpu_avx512_bf16"] in ("true", "false")


def test_asking_for_cuda_without_it_says_how_to_fix() -> None:
    if torch.cuda.is_available():
        pytest.skip("CUDA is present")
    with pytest.raises(RuntimeError, match="use --device cpu"):
        pick_device("cuda")


def _embed(device: str, amp: str) -> np.ndarray:
    torch.manual_seed(0)
    images = np.random.default_rng(0).random((4, 2, 68, 68)).astype(np.float32)
    rt = init_runtime(device=device, amp=amp)
    return embed_images(MicrosnoopEncoder(EncoderConfig(depths=(8, 16, 32))), images, PreprocessContract(), rt)


def test_bf16_embedding_is_close_to_fp32_on_cpu() -> None:
    fp32, bf16 = _embed("cpu", "off"), _embed("cpu", "bf16")
    cos = (fp32 * bf16).sum(1) / 2  # two unit-norm channel blocks per image
    assert (cos > 0.99).all(), cos


@pytest.mark.gpu
def test_gpu_embedding_matches_cpu() -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    cpu, gpu = _embed("cpu", "off"), _embed("cuda", "auto")
    assert ((cpu * gpu).sum(1) / 2 > 0.99).all()
