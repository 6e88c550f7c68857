"""Device, precision and distributed set-up, decided in one place."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist

from microsnoop.config import check_amp
from microsnoop.errors import DeviceError

log = logging.getLogger(__name__)
_DTYPE_NAMES: dict[torch.dtype | None, str] = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


@dataclass(frozen=True)
class Runtime:
    """Where and how tensors run: device, autocast dtype, memory format and DDP rank."""

    device: torch.device
    amp_dtype: torch.dtype | None
    channels_last: bool
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        """True on the process that writes files and logs."""
        return self.rank == 0

    def autocast(self) -> contextlib.AbstractContextManager[None]:
        """Autocast context for this runtime (a no-op in fp32)."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def to_input(self, x: torch.Tensor) -> torch.Tensor:
        """Move a batch to the device in the chosen memory format."""
        x = x.to(self.device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x


def pick_device(requested: str = "auto") -> torch.device:
    """``auto`` gives the local CUDA device when present, else the CPU."""
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        return torch.device("cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"device {requested!r} requested but CUDA is not available here; use --device cpu or auto")
    return device


@dataclass(frozen=True)
class CpuFeatures:
    """What the CPU runs natively, as torch reports it (``torch.cpu``)."""

    capability: str
    amx: bool
    avx512_bf16: bool

    @property
    def native_bf16(self) -> bool:
        """True when bf16 autocast pays off: AMX tiles. With AVX512-BF16 alone (bf16 dot products only) bf16
        autocast measured 0.80-0.90x of fp32 + channels-last here (benchmarks/results/pretrain_cpu.json,
        cellcycle_embed_cpu.json), and on AVX2-only CPUs it is emulated and ~8x slower."""
        return self.amx

    def describe(self) -> str:
        """One-line description, e.g. ``AVX512 (AMX: no, AVX512-BF16: yes)``."""
        yes = {True: "yes", False: "no"}
        return f"{self.capability} (AMX: {yes[self.amx]}, AVX512-BF16: {yes[self.avx512_bf16]})"


def cpu_features() -> CpuFeatures:
    """Read the CPU's vector capability and bf16 support from torch."""
    return CpuFeatures(
        capability=str(torch.backends.cpu.get_cpu_capability()),
        amx=bool(torch.cpu._is_amx_tile_supported()),
        avx512_bf16=bool(torch.cpu._is_avx512_bf16_supported()),
    )


def pick_amp(device: torch.device, amp: str, *, cpu: CpuFeatures | None = None) -> torch.dtype | None:
    """Autocast dtype for ``amp``: ``auto`` is bf16 on bf16 GPUs, fp16 on older GPUs, bf16 on AMX CPUs, else fp32
    (see :attr:`CpuFeatures.native_bf16`).
    """
    check_amp(amp)
    if amp == "off":
        return None
    if amp == "fp16":
        return torch.float16
    if amp == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if (cpu or cpu_features()).native_bf16 else None


def describe_precision(runtime: Runtime) -> str:
    """Human-readable precision choice, e.g. ``fp32 on cpu AVX2 (AMX: no, AVX512-BF16: no)``."""
    name = _DTYPE_NAMES[runtime.amp_dtype]
    dtype = name if runtime.amp_dtype is None else f"{name} autocast"
    where = f"cpu {cpu_features().describe()}" if runtime.device.type == "cpu" else str(runtime.device)
    layout = " + channels-last" if runtime.channels_last else ""
    return f"{dtype}{layout} on {where}"


def precision_record(runtime: Runtime) -> dict[str, str]:
    """What to store in run metadata and benchmark results about the precision choice."""
    feats = cpu_features()
    return {
        "device": str(runtime.device),
        "amp_dtype": _DTYPE_NAMES[runtime.amp_dtype],
        "channels_last": str(runtime.channels_last).lower(),
        "cpu_capability": feats.capability,
        "cpu_amx": str(feats.amx).lower(),
        "cpu_avx512_bf16": str(feats.avx512_bf16).lower(),
    }


def init_runtime(*, device: str = "auto", amp: str = "auto", channels_last: bool = True) -> Runtime:
    """Build the runtime; joins the process group when launched by ``torchrun`` (WORLD_SIZE > 1).

    The precision choice is logged once per process (``describe_precision``).
    """
    check_amp(amp)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    dev = pick_device(device)
    rank = 0
    if world > 1:
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
        rank = dist.get_rank()
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
    runtime = Runtime(
        device=dev, amp_dtype=pick_amp(dev, amp), channels_last=channels_last, rank=rank, world_size=world
    )
    if runtime.is_main:
        log.info("precision: %s", describe_precision(runtime))
    return runtime


@contextlib.contextmanager
def distributed_session(runtime: Runtime) -> Iterator[Runtime]:
    """Yield the runtime and tear the process group down afterwards."""
    try:
        yield runtime
    finally:
        if runtime.world_size > 1 and dist.is_initialized():
            dist.destroy_process_group()
