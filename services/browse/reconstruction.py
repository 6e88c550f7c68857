"""Original / masked / reconstructed crops of stored images with the champion's full U-Net."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from services.browse.errors import BrowseError
from services.settings import PlatformSettings


@dataclass(frozen=True)
class Reconstruction:
    """One row per plane: ``original``, ``masked`` and ``reconstructed`` as ``N x S x S`` float arrays."""

    original: np.ndarray
    masked: np.ndarray
    reconstructed: np.ndarray
    mask_ratio: float
    checkpoint: str


def reconstruct_stored(
    settings: PlatformSettings,
    uris: Sequence[str],
    *,
    ref: str = "champion",
    mask_ratio: float = 0.25,
    seed: int = 0,
    max_rows: int = 6,
) -> Reconstruction:
    """Mask and reconstruct crops of stored images with the U-Net behind ``ref`` (champion by default)."""
    import torch

    from microsnoop.config import MaskConfig
    from microsnoop.models.checkpoint import load_unet
    from microsnoop.reconstruct import crops_from_files, reconstruct_planes
    from services.registry import resolve_encoder
    from services.storage import open_store

    if not uris:
        raise BrowseError("choose at least one image to reconstruct")
    checkpoint = resolve_encoder(settings, ref)
    try:
        model, ckpt = load_unet(checkpoint)
    except ValueError as exc:
        raise BrowseError(f"the {ref} checkpoint cannot reconstruct: {exc}") from exc
    mask = MaskConfig(mask_ratio=mask_ratio)
    store = open_store(settings)
    cache = settings.data_dir / "dashboard" / "images"
    paths = []
    for uri in uris:
        local = cache / Path(uri).name
        if not local.is_file():
            store.get_file(uri, local)
        paths.append(local)
    with torch.inference_mode():
        crops = crops_from_files(paths, ckpt.preprocess, seed=seed, max_rows=max_rows)
        masked, recon = reconstruct_planes(model, crops, mask, seed=seed)
    return Reconstruction(
        crops[:, 0].numpy(), masked[:, 0].numpy(), recon[:, 0].float().numpy(), mask_ratio, Path(checkpoint).name
    )


def to_display(planes: np.ndarray, reference: np.ndarray) -> list[np.ndarray]:
    """uint8 images of ``N x S x S`` planes, each scaled by its reference plane's 0.5/99.5 percentiles."""
    out = []
    for plane, ref in zip(planes, reference, strict=True):
        lo, hi = np.percentile(ref, [0.5, 99.5])
        scale = hi - lo if hi > lo else 1.0
        out.append((np.clip((plane - lo) / scale, 0, 1) * 255).astype(np.uint8))
    return out
