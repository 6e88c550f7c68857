"""Patch masking for masked self-supervised pretraining."""

from __future__ import annotations

import math

import torch

from microsnoop.config import MaskConfig


def count_masked_patches(height: int, width: int, config: MaskConfig) -> int:
    """Number of patches zeroed per image: round(ratio * number of whole patches)."""
    n_patches = (height // config.patch_size) * (width // config.patch_size)
    return int(math.floor(config.mask_ratio * n_patches + 0.5))


def make_patch_mask(
    batch: int, height: int, width: int, config: MaskConfig, *, generator: torch.Generator
) -> torch.Tensor:
    """Boolean ``B x 1 x H x W`` mask, True where pixels are zeroed; exactly the same count per image."""
    p = config.patch_size
    gh, gw = height // p, width // p
    n_mask = count_masked_patches(height, width, config)
    scores = torch.rand(batch, gh * gw, generator=generator)
    idx = scores.argsort(dim=1)[:, :n_mask]
    grid = torch.zeros(batch, gh * gw, dtype=torch.bool)
    grid.scatter_(1, idx, True)
    grid = grid.view(batch, 1, gh, gw)
    mask = grid.repeat_interleave(p, dim=2).repeat_interleave(p, dim=3)
    out = torch.zeros(batch, 1, height, width, dtype=torch.bool)
    out[:, :, : gh * p, : gw * p] = mask
    return out


def apply_mask(images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Zero the masked pixels (returns a new tensor)."""
    return images.masked_fill(mask.to(images.device), 0.0)
