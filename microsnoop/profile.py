"""Profiling modes: single-cell, full-field cell-region cropping, rescale and tile."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from skimage.transform import resize

from microsnoop.config import PreprocessContract
from microsnoop.device import Runtime
from microsnoop.embed import embed_crops, embed_planes
from microsnoop.errors import ConfigError, InvalidImageError
from microsnoop.models.unet import MicrosnoopEncoder
from microsnoop.preprocess.crop import (
    BORDER_RULES,
    CellBox,
    cell_boxes,
    check_mask,
    crop_boxes,
    make_tiles,
    rescale_to_square,
)
from microsnoop.preprocess.normalize import normalize_percentile, pad_levels

MODES = ("single-cell", "cell-region", "rescale", "tile")
Segment = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class ProfileConfig:
    """How one image becomes one embedding."""

    mode: str = "single-cell"
    rc: float = 2.0
    sta: int = 224
    skip_border: bool = False
    border_rule: str = "four-sides"  # or "top-left", the reference's rule (microsnoop.preprocess.crop.touches_border)
    nucleus_channel: int = 0
    tile_overlap: float = 0.1
    resize_small_to: int | None = None
    batch_size: int = 64

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.rc <= 0 or self.sta <= 0:
            raise ConfigError(f"rc and sta must be positive, got rc={self.rc}, sta={self.sta}")
        if not 0.0 <= self.tile_overlap <= 0.5:
            raise ConfigError(f"tile_overlap must be in [0, 0.5], got {self.tile_overlap}")
        if self.border_rule not in BORDER_RULES:
            raise ConfigError(f"border_rule must be one of {BORDER_RULES}, got {self.border_rule!r}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {self.batch_size}; pass --batch-size 1 or more")
        if self.nucleus_channel < 0:
            raise ConfigError(f"nucleus_channel must be >= 0, got {self.nucleus_channel}; channels count from 0")


@dataclass
class ImageProfile:
    """One image's embedding (None when no cell was found) and, in cell-region mode, its cells."""

    embedding: np.ndarray | None
    cells: list[CellBox] = field(default_factory=list)
    cell_embeddings: np.ndarray | None = None


def _maybe_resize(crop: np.ndarray, size: int | None) -> np.ndarray:
    if size is None or max(crop.shape[-2:]) >= size:
        return crop
    scale = size / max(crop.shape[-2:])
    shape = (crop.shape[0], round(crop.shape[1] * scale), round(crop.shape[2] * scale))
    return resize(crop.astype(np.float32), shape, order=1, preserve_range=True).astype(np.float32)


def embed_unpadded(
    encoder: MicrosnoopEncoder,
    crops: list[np.ndarray],
    contract: PreprocessContract,
    runtime: Runtime,
    *,
    batch_size: int = 64,
) -> np.ndarray:
    """Embed same-shape ``C x h x w`` crops at their own size (no zero-padding), as the reference embeds tiles.

    Each plane is percentile-normalised on its own pixels; the encoder pools globally, so any size with
    sides of at least ``2 ** (levels - 1)`` works.
    """
    if not crops:
        return np.empty((0, 0), np.float32)
    n_ch, h, w = crops[0].shape
    if any(c.shape != crops[0].shape for c in crops) or not all(np.isfinite(c).all() for c in crops):
        raise InvalidImageError(f"crops must share the shape {crops[0].shape} and be finite; clean or split them")
    planes = np.empty((len(crops) * n_ch, 1, h, w), np.float32)
    for i, crop in enumerate(crops):
        for c, plane in enumerate(crop):
            planes[i * n_ch + c, 0] = normalize_percentile(
                plane, lower=contract.lower_percentile, upper=contract.upper_percentile, clip=contract.clip
            )
    return embed_planes(encoder, planes, runtime, batch_size=batch_size).reshape(len(crops), -1)


def profile_images(
    encoder: MicrosnoopEncoder,
    images: list[np.ndarray],
    contract: PreprocessContract,
    runtime: Runtime,
    config: ProfileConfig,
    *,
    masks: Sequence[np.ndarray | None] | None = None,
    segment: Segment | None = None,
) -> list[ImageProfile]:
    """Profile ``C x H x W`` images in one mode; the embedder sees all crops of all images in one pass.

    Under ``contract.protocol == "reference"`` rescale mode resizes without anti-aliasing and tiles are
    embedded at their own size (a tile narrower than the input size is not padded), as the reference does.
    """
    reference = contract.protocol == "reference"
    crops: list[np.ndarray] = []
    owner: list[int] = []
    cells_of: dict[int, list[CellBox]] = {}
    unpadded: dict[int, np.ndarray] = {}
    for i, image in enumerate(images):
        if config.mode == "single-cell":
            pieces = [_maybe_resize(image, config.resize_small_to)]
        elif config.mode == "rescale":
            fill = pad_levels(contract, image.shape[0])
            pieces = [rescale_to_square(image, contract.input_size, anti_aliasing=not reference, fill=fill)]
        elif config.mode == "tile" and reference:
            tiles = list(make_tiles(image, contract.input_size, config.tile_overlap))
            unpadded[i] = embed_unpadded(encoder, tiles, contract, runtime, batch_size=config.batch_size)
            continue
        elif config.mode == "tile":
            pieces = list(make_tiles(image, contract.input_size, config.tile_overlap))
        else:
            labels = masks[i] if masks is not None and masks[i] is not None else None
            if labels is None:
                if segment is None:
                    raise ConfigError(
                        "cell-region mode needs a mask per image or a segmenter; pass --masks or --segmenter"
                    )
                labels = segment(image[config.nucleus_channel])
            check_mask(image, labels)
            boxes = cell_boxes(
                labels, rc=config.rc, sta=config.sta, skip_border=config.skip_border, border_rule=config.border_rule
            )
            cells_of[i] = boxes
            pieces = crop_boxes(image, boxes)
        crops.extend(pieces)
        owner.extend([i] * len(pieces))
    emb = embed_crops(encoder, crops, contract, runtime, batch_size=config.batch_size)
    owner_arr = np.asarray(owner, dtype=np.int64)
    profiles = []
    for i in range(len(images)):
        rows = unpadded[i] if i in unpadded else emb[owner_arr == i]
        image_emb = rows.mean(axis=0).astype(np.float32) if len(rows) else None
        cell_emb = rows if config.mode == "cell-region" else None
        profiles.append(ImageProfile(image_emb, cells_of.get(i, []), cell_emb))
    return profiles
