"""Percentile normalisation and zero-padding (the reference ``normalize99`` contract)."""

from __future__ import annotations

import numpy as np

from microsnoop.config import PreprocessContract


def normalize_percentile(
    plane: np.ndarray, *, lower: float = 1.0, upper: float = 99.0, clip: bool = False
) -> np.ndarray:
    """Map the ``lower``/``upper`` percentiles of one plane to 0/1 (float32); constant planes give zeros.

    >>> normalize_percentile(np.arange(101, dtype=float), lower=0, upper=100)[[0, 50, 100]]
    array([0. , 0.5, 1. ], dtype=float32)
    """
    x = plane.astype(np.float32, copy=False)
    lo, hi = np.percentile(x, [lower, upper])
    if hi - lo <= 1e-12:
        hi, lo = float(x.max()), float(x.min())
        if hi - lo <= 1e-12:
            return np.zeros_like(x, dtype=np.float32)
    out = (x - lo) / (hi - lo)
    return np.clip(out, 0.0, 1.0) if clip else out


def pad_to_size(plane: np.ndarray, size: int) -> np.ndarray:
    """Zero-pad a ``... x H x W`` array to at least ``size x size``, centred; larger sides are kept."""
    h, w = plane.shape[-2:]
    ph, pw = max(size - h, 0), max(size - w, 0)
    if ph == 0 and pw == 0:
        return plane
    pad = [(0, 0)] * (plane.ndim - 2) + [(ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2)]
    return np.pad(plane, pad)


def prepare_batch(images: np.ndarray, contract: PreprocessContract) -> np.ndarray:
    """Turn ``N x C x H x W`` images into ``N*C x 1 x S x S`` normalised, padded float32 planes.

    Row ``i * C + c`` holds image ``i``, channel ``c``. Images larger than the contract's input
    size keep their size (the encoder pools globally), padded only to a multiple of 8.
    """
    return prepare_crops(list(images), contract)


def prepare_crops(crops: list[np.ndarray], contract: PreprocessContract) -> np.ndarray:
    """Like :func:`prepare_batch` for ``C x h x w`` crops of different sizes (all padded to one size)."""
    if not crops:
        return np.empty((0, 1, contract.input_size, contract.input_size), np.float32)
    side = max(max(c.shape[-2:]) for c in crops)
    size = max(contract.input_size, -(-side // 8) * 8)
    n_ch = crops[0].shape[0]
    out = np.zeros((len(crops) * n_ch, 1, size, size), dtype=np.float32)
    for i, crop in enumerate(crops):
        h, w = crop.shape[-2:]
        y0, x0 = (size - h) // 2, (size - w) // 2
        for c, plane in enumerate(crop):
            row = out[i * n_ch + c, 0]
            if contract.normalize_before_pad:
                row[y0 : y0 + h, x0 : x0 + w] = _norm(plane, contract)
            else:
                row[y0 : y0 + h, x0 : x0 + w] = plane
                out[i * n_ch + c, 0] = _norm(row, contract)
    return out


def _norm(plane: np.ndarray, contract: PreprocessContract) -> np.ndarray:
    return normalize_percentile(
        plane, lower=contract.lower_percentile, upper=contract.upper_percentile, clip=contract.clip
    )
