"""Reconstruction viewer: original / masked / reconstructed panels (the paper's Fig. 2)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from microsnoop.config import AugmentConfig, MaskConfig, PreprocessContract
from microsnoop.io.images import read_image
from microsnoop.models.checkpoint import load_unet
from microsnoop.models.masking import apply_mask, make_patch_mask
from microsnoop.models.unet import MicrosnoopUNet
from microsnoop.preprocess.augment import random_crop
from microsnoop.preprocess.normalize import normalize_percentile


@torch.no_grad()
def reconstruct_planes(
    model: MicrosnoopUNet, crops: torch.Tensor, mask: MaskConfig, *, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Masked inputs and reconstructions for ``B x 1 x S x S`` crops (fp32, eval mode)."""
    m = make_patch_mask(
        crops.shape[0], crops.shape[-2], crops.shape[-1], mask, generator=torch.Generator().manual_seed(seed)
    )
    masked = apply_mask(crops, m)
    return masked, model.eval()(masked)


def crops_from_files(paths: list[Path], contract: PreprocessContract, *, seed: int, max_rows: int) -> torch.Tensor:
    """Normalised centre-ish crops (no rotation/scale) of every channel of the files."""
    rng = np.random.default_rng(seed)
    still = AugmentConfig(max_rotation_deg=0.0, scale_range=(1.0, 1.0))
    crops = []
    for path in paths:
        for plane in read_image(path, gray_rgb=True):
            norm = normalize_percentile(plane, lower=contract.lower_percentile, upper=contract.upper_percentile)
            crops.append(random_crop(norm, contract.input_size, still, rng))
            if len(crops) == max_rows:
                return torch.from_numpy(np.stack(crops))[:, None]
    return torch.from_numpy(np.stack(crops))[:, None]


def reconstruction_figure(
    checkpoint: Path, images: list[Path], out: Path, *, mask: MaskConfig, seed: int = 0, max_rows: int = 6
) -> Path:
    """Write a PNG with one row per plane: original, masked input, reconstruction."""
    model, ckpt = load_unet(checkpoint)
    crops = crops_from_files(images, ckpt.preprocess, seed=seed, max_rows=max_rows)
    masked, recon = reconstruct_planes(model, crops, mask, seed=seed)
    rows = len(crops)
    fig = Figure(figsize=(7.5, 2.5 * rows))
    axes = fig.subplots(rows, 3, squeeze=False)
    for r in range(rows):
        lo, hi = np.percentile(crops[r, 0].numpy(), [0.5, 99.5])
        for c, (title, img) in enumerate((("original", crops), ("masked input", masked), ("reconstruction", recon))):
            ax = axes[r, c]
            ax.imshow(img[r, 0].numpy(), cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1)
            ax.set_axis_off()
            if r == 0:
                ax.set_title(title)
    epochs = ckpt.provenance.get("epochs", "?")
    fig.suptitle(f"{checkpoint.name}: {epochs} epochs, mask ratio {mask.mask_ratio:.0%}")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    return out
