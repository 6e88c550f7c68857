"""Percentile normalisation and zero-padding (the reference ``normalize99`` contract)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, replace

import numpy as np

from microsnoop.config import PreprocessContract
from microsnoop.errors import ConfigError

log = logging.getLogger(__name__)


def normalize_percentile(
    plane: np.ndarray, *, lower: float = 1.0, upper: float = 99.0, clip: bool = False
) -> np.ndarray:
    """Map the ``lower``/``upper`` percentiles of one plane to 0/1 (float32); constant planes give zeros.

    >>> normalize_percentile(np.arange(101, dtype=float), lower=0, upper=100)[[0, 50, 100]]
    array([0. , 0.5, 1. ], dtype=float32)
    """
    x = plane.astype(np.float32, copy=False)
    lo, hi = (float(v) for v in np.percentile(x, [lower, upper]))  # Python floats keep the result float32
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

    Row ``i * C + c`` holds image ``i``, channel ``c``; ``S`` is :func:`canvas_side` of the image size.
    """
    return prepare_crops(list(images), contract)


def canvas_side(shape: tuple[int, ...], contract: PreprocessContract) -> int:
    """Side of the square canvas a ``... x h x w`` crop is zero-padded to: depends on the crop and contract only.

    >>> canvas_side((3, 40, 30), PreprocessContract())  # fixed canvas: the input size
    224
    >>> canvas_side((3, 40, 30), PreprocessContract(canvas="crop"))  # the crop, rounded up to a multiple of 8
    40
    >>> canvas_side((1, 300, 10), PreprocessContract())  # larger crops keep their size
    304
    """
    side = -(-max(shape[-2:]) // 8) * 8
    return side if contract.canvas == "crop" else max(contract.input_size, side)


@dataclass(frozen=True)
class PreparedGroup:
    """Crops that share one canvas: ``planes`` row ``j * C + c`` is crop ``index[j]``, channel ``c``."""

    index: np.ndarray
    planes: np.ndarray
    boxes: np.ndarray  # one (y0, x0, h, w) footprint per plane row


def prepare_groups(crops: list[np.ndarray], contract: PreprocessContract) -> list[PreparedGroup]:
    """Normalise and pad ``C x h x w`` crops, each to its own :func:`canvas_side`, grouped by canvas.

    A crop's planes depend only on the crop and the contract, never on the other crops.
    """
    check_levels(contract, {crop.shape[0] for crop in crops})
    by_side: dict[int, list[int]] = {}
    for i, crop in enumerate(crops):
        by_side.setdefault(canvas_side(crop.shape, contract), []).append(i)
    groups = []
    for size, members in sorted(by_side.items()):
        n_ch = crops[members[0]].shape[0]
        out = np.zeros((len(members) * n_ch, 1, size, size), dtype=np.float32)
        boxes = np.zeros((len(members) * n_ch, 4), dtype=np.int64)
        for j, i in enumerate(members):
            h, w = crops[i].shape[-2:]
            y0, x0 = (size - h) // 2, (size - w) // 2
            for c, plane in enumerate(crops[i]):
                row = out[j * n_ch + c, 0]
                boxes[j * n_ch + c] = (y0, x0, h, w)
                if contract.normalize_before_pad:
                    row[y0 : y0 + h, x0 : x0 + w] = _norm(plane, contract, c)
                else:
                    row[y0 : y0 + h, x0 : x0 + w] = plane
                    out[j * n_ch + c, 0] = _norm(row, contract, c)
        groups.append(PreparedGroup(np.asarray(members, dtype=np.int64), out, boxes))
    return groups


def prepare_crops(crops: list[np.ndarray], contract: PreprocessContract) -> np.ndarray:
    """Like :func:`prepare_batch` for ``C x h x w`` crops that share one canvas (see :func:`prepare_groups`)."""
    if not crops:
        return np.empty((0, 1, contract.input_size, contract.input_size), np.float32)
    groups = prepare_groups(crops, contract)
    if len(groups) > 1:
        raise ValueError("crops fall on canvases of different sizes; use prepare_groups and embed each group")
    return groups[0].planes


def valid_masks(boxes: np.ndarray, size: int) -> np.ndarray:
    """``N x 1 x size x size`` float32 masks, 1 inside each ``(y0, x0, h, w)`` footprint."""
    out = np.zeros((len(boxes), 1, size, size), dtype=np.float32)
    for k, (y0, x0, h, w) in enumerate(boxes):
        out[k, 0, y0 : y0 + h, x0 : x0 + w] = 1.0
    return out


def fit_intensity_levels(
    images: Iterable[np.ndarray],
    contract: PreprocessContract,
    *,
    pixels_per_image: int = 4096,
    seed: int = 0,
) -> tuple[tuple[float, float], ...]:
    """Per-channel (low, high) = the contract's percentiles over a seeded pixel sample of ``C x H x W`` images.

    The levels of ``intensity='dataset'``: one scale for every crop, so relative brightness survives. Each
    image contributes up to ``pixels_per_image`` finite pixels per channel (drawn with replacement), taken
    as it arrives, so a generator of large images is sampled in bounded memory.

    >>> fit_intensity_levels([np.arange(100.0).reshape(1, 10, 10)], PreprocessContract(), pixels_per_image=100)
    ((0.99, 98.01),)
    """
    rng = np.random.default_rng(seed)
    samples: list[list[np.ndarray]] = []
    for image in images:
        if not samples:
            samples = [[] for _ in range(image.shape[0])]
        if image.shape[0] != len(samples):
            raise ConfigError(
                f"images have {image.shape[0]} and {len(samples)} channels; one dataset needs one channel layout"
            )
        for c in range(len(samples)):
            flat = np.asarray(image[c], dtype=np.float32).ravel()
            take = flat if flat.size <= pixels_per_image else flat[rng.choice(flat.size, pixels_per_image)]
            samples[c].append(take[np.isfinite(take)])
    if not samples:
        raise ConfigError("cannot fit intensity levels on no images; give the cells or fields to embed")
    levels = []
    for c, parts in enumerate(samples):
        pixels = np.concatenate(parts)
        if pixels.size == 0:
            raise ConfigError(f"channel {c} has no finite pixel in any image; fix the images or use intensity 'crop'")
        lo, hi = (float(v) for v in np.percentile(pixels, [contract.lower_percentile, contract.upper_percentile]))
        if not hi > lo:  # a blank channel: it embeds as zeros, as a constant plane does under the per-crop scale
            log.warning("channel %d is constant over the images (%g): it will embed as zeros", c, lo)
            hi = lo + 1.0
        levels.append((lo, hi))
    return tuple(levels)


def with_intensity_levels(contract: PreprocessContract, images: Iterable[np.ndarray]) -> PreprocessContract:
    """The contract ready to embed ``images``: under ``intensity='dataset'`` without levels, levels fitted on them."""
    if contract.intensity != "dataset" or contract.intensity_levels:
        return contract
    return replace(contract, intensity_levels=fit_intensity_levels(images, contract))


def check_levels(contract: PreprocessContract, n_channels: set[int]) -> None:
    """One-line errors for a dataset-intensity contract without levels or with levels for other channel counts."""
    if contract.intensity != "dataset":
        return
    levels = contract.intensity_levels
    if not levels:
        raise ConfigError(
            "intensity='dataset' needs intensity_levels; fit them with with_intensity_levels(contract, images)"
        )
    wrong = n_channels - {len(levels)}
    if wrong:
        raise ConfigError(
            f"the intensity levels cover {len(levels)} channel(s), the images have {sorted(wrong)}; "
            "refit them on these images (or drop --intensity-levels-from)"
        )


def pad_levels(contract: PreprocessContract, n_channels: int) -> list[float]:
    """Per-channel raw value that scales to 0: what to pad with before scaling (0 under the per-crop scale)."""
    if contract.intensity == "dataset" and len(contract.intensity_levels) == n_channels:
        return [lo for lo, _ in contract.intensity_levels]
    return [0.0] * n_channels


def _norm(plane: np.ndarray, contract: PreprocessContract, channel: int) -> np.ndarray:
    if contract.intensity == "crop":
        return normalize_percentile(
            plane, lower=contract.lower_percentile, upper=contract.upper_percentile, clip=contract.clip
        )
    levels = contract.intensity_levels
    lo, hi = levels[channel]
    out = (plane.astype(np.float32, copy=False) - np.float32(lo)) / np.float32(hi - lo)
    return np.clip(out, 0.0, 1.0) if contract.clip else out
