"""Device, precision and distributed set-up, decided in one place."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist

from microsnoop.errors import DeviceError


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


def pick_amp(device: torch.device, amp: str) -> torch.dtype | None:
    """Autocast dtype: bf16 on CPU and on GPUs that support it, fp16 on older GPUs, None when off."""
    if amp == "off":
        return None
    if amp == "fp16":
        return torch.float16
    if amp == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16


def init_runtime(*, device: str = "auto", amp: str = "auto", channels_last: bool = True) -> Runtime:
    """Build the runtime; joins the process group when launched by ``torchrun`` (WORLD_SIZE > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    dev = pick_device(device)
    rank = 0
    if world > 1:
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
        rank = dist.get_rank()
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
    return Runtime(device=dev, amp_dtype=pick_amp(dev, amp), channels_last=channels_last, rank=rank, world_size=world)


@contextlib.contextmanager
def distributed_session(runtime: Runtime) -> Iterator[Runtime]:
    """Yield the runtime and tear the process group down afterwards."""
    try:
        yield runtime
    finally:
        if runtime.world_size > 1 and dist.is_initialized():
            dist.destroy_process_group()
