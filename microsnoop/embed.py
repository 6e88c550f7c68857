"""Embedding of in-memory image arrays: one 256-d vector per channel, concatenated per image."""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from microsnoop.config import PreprocessContract
from microsnoop.device import Runtime
from microsnoop.errors import InvalidImageError
from microsnoop.models.unet import MicrosnoopEncoder
from microsnoop.preprocess.normalize import prepare_batch


def prepare_encoder(encoder: MicrosnoopEncoder, runtime: Runtime) -> MicrosnoopEncoder:
    """Move an encoder to the runtime's device and memory format, in eval mode."""
    encoder = encoder.to(runtime.device).eval()
    if runtime.channels_last:
        encoder = encoder.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    return encoder


@torch.inference_mode()
def embed_planes(
    encoder: MicrosnoopEncoder, planes: np.ndarray, runtime: Runtime, *, batch_size: int = 64
) -> np.ndarray:
    """Embed prepared ``P x 1 x S x S`` planes in batches; returns ``P x D`` float32."""
    out = []
    for start in range(0, len(planes), batch_size):
        x = runtime.to_input(torch.from_numpy(planes[start : start + batch_size]))
        with runtime.autocast():
            out.append(encoder(x).float().cpu().numpy())
    return np.concatenate(out) if out else np.empty((0, encoder.config.embedding_dim), np.float32)


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
    if images.dtype.kind == "f" and not np.isfinite(images).all():
        bad = np.flatnonzero(~np.isfinite(images).reshape(len(images), -1).all(axis=1))
        raise InvalidImageError(f"images {bad[:5].tolist()} contain NaN/Inf; clean or drop them before embedding")
    n, c = images.shape[:2]
    encoder = prepare_encoder(encoder, runtime)
    dim = encoder.config.embedding_dim
    out = np.empty((n, c * dim), dtype=np.float32)
    for start in tqdm(range(0, n, chunk_images), desc="embed", unit="chunk", disable=not progress):
        chunk = images[start : start + chunk_images]
        planes = prepare_batch(chunk, contract)  # row i*C + c = image i, channel c
        emb = embed_planes(encoder, planes, runtime, batch_size=batch_size)
        out[start : start + len(chunk)] = emb.reshape(len(chunk), c, dim).reshape(len(chunk), c * dim)
    return out
