"""Embedding of in-memory image arrays: one 256-d vector per channel, concatenated per image."""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from microsnoop.config import PreprocessContract
from microsnoop.device import Runtime
from microsnoop.errors import InvalidImageError
from microsnoop.models.unet import MicrosnoopEncoder
from microsnoop.preprocess.normalize import prepare_groups, valid_masks


def prepare_encoder(encoder: MicrosnoopEncoder, runtime: Runtime) -> MicrosnoopEncoder:
    """Move an encoder to the runtime's device and memory format, in eval mode."""
    encoder = encoder.to(runtime.device).eval()
    if runtime.channels_last:
        encoder = encoder.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    return encoder


@torch.inference_mode()
def embed_planes(
    encoder: MicrosnoopEncoder,
    planes: np.ndarray,
    runtime: Runtime,
    *,
    batch_size: int = 64,
    boxes: np.ndarray | None = None,
) -> np.ndarray:
    """Embed prepared ``P x 1 x S x S`` planes in batches; returns ``P x D`` float32.

    With ``boxes`` (one ``(y0, x0, h, w)`` per plane) the pool covers only each plane's footprint.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    out = []
    for start in range(0, len(planes), batch_size):
        x = runtime.to_input(torch.from_numpy(planes[start : start + batch_size]))
        valid = None
        if boxes is not None:
            valid = torch.from_numpy(valid_masks(boxes[start : start + batch_size], planes.shape[-1]))
            valid = valid.to(runtime.device)
        with runtime.autocast():
            out.append(encoder(x, valid).float().cpu().numpy())
    return np.concatenate(out) if out else np.empty((0, encoder.config.embedding_dim), np.float32)


def embed_crops(
    encoder: MicrosnoopEncoder,
    crops: list[np.ndarray],
    contract: PreprocessContract,
    runtime: Runtime,
    *,
    batch_size: int = 64,
) -> np.ndarray:
    """Embed ``C x h x w`` crops (one channel count, any sizes) into ``N x (C * D)``, channel blocks in order.

    Each crop is padded to its own canvas (``contract.canvas``) and pooled over all positions or its own
    footprint (``contract.pooling``), so its vector does not depend on the other crops. Planes are keyed
    explicitly (crop index, channel) and the result is indexed by those keys, never by order.
    """
    if not crops:
        return np.empty((0, 0), np.float32)
    n_ch = crops[0].shape[0]
    for i, crop in enumerate(crops):
        if crop.shape[0] != n_ch:
            raise InvalidImageError(f"crop {i} has {crop.shape[0]} channels, crop 0 has {n_ch}; embed them separately")
        if crop.dtype.kind == "f" and not np.isfinite(crop).all():
            raise InvalidImageError(f"crop {i} contains NaN/Inf; clean or drop it before embedding")
    out = np.empty((len(crops), n_ch, encoder.config.embedding_dim), dtype=np.float32)
    for group in prepare_groups(crops, contract):
        boxes = group.boxes if contract.pooling == "valid" else None
        emb = embed_planes(encoder, group.planes, runtime, batch_size=batch_size, boxes=boxes)
        image_key = np.repeat(group.index, n_ch)
        channel_key = np.tile(np.arange(n_ch), len(group.index))
        out[image_key, channel_key] = emb
    return out.reshape(len(crops), -1)


def embed_images(
    encoder: MicrosnoopEncoder,
    images: np.ndarray,
    contract: PreprocessContract,
    runtime: Runtime,
    *,
    batch_size: int = 64,
    chunk_images: int = 256,
    progress: bool = False,
) -> np.ndarray:
    """Embed ``N x C x H x W`` single-cell images into ``N x (C * D)`` (channel blocks in order)."""
    if images.ndim != 4:
        raise InvalidImageError(f"expected N x C x H x W images, got shape {images.shape}; add a channel axis")
    encoder = prepare_encoder(encoder, runtime)
    dim = encoder.config.embedding_dim
    out = np.empty((len(images), images.shape[1] * dim), dtype=np.float32)
    for start in tqdm(range(0, len(images), chunk_images), desc="embed", unit="chunk", disable=not progress):
        chunk = images[start : start + chunk_images]
        out[start : start + len(chunk)] = embed_crops(encoder, list(chunk), contract, runtime, batch_size=batch_size)
    return out
