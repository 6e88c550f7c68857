"""Nucleus segmentation: a Cellpose 3 adapter (user-supplied weights) and an offline classical fallback."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd
from scipy import ndimage as ndi
from skimage.feature import peak_local_max
from skimage.filters import gaussian, threshold_local, threshold_otsu
from skimage.morphology import remove_small_holes, remove_small_objects
from skimage.segmentation import watershed
from tqdm.auto import tqdm

from microsnoop.errors import ConfigError, InvalidImageError
from microsnoop.io.images import read_image
from microsnoop.io.masks import write_label_tiff
from microsnoop.preprocess.normalize import normalize_percentile

log = logging.getLogger(__name__)


class Segmenter(Protocol):
    """Anything that turns one 2-D plane into an int32 label image (0 = background)."""

    def segment(self, plane: np.ndarray) -> np.ndarray:
        """Label the cells of one plane."""
        ...


@dataclass(frozen=True)
class ClassicalConfig:
    """Blur, threshold, distance-transform watershed."""

    sigma: float = 1.0
    threshold: str = "otsu"
    local_block: int = 51
    min_size: int = 15
    min_distance: int = 7
    invert: bool = False

    def __post_init__(self) -> None:
        if self.threshold not in ("otsu", "local"):
            raise ConfigError(f"threshold must be 'otsu' or 'local', got {self.threshold!r}")
        if self.sigma < 0 or self.min_size < 0 or self.min_distance < 1:
            raise ConfigError("sigma and min_size must be >= 0 and min_distance >= 1")


@dataclass(frozen=True)
class ClassicalSegmenter:
    """Offline fallback needing no weights: Gaussian blur, Otsu or local threshold, watershed split."""

    config: ClassicalConfig = ClassicalConfig()

    def segment(self, plane: np.ndarray) -> np.ndarray:
        """Label nuclei (bright objects; set ``invert`` for dark ones) in one plane."""
        plane = np.asarray(plane)
        if plane.ndim != 2:
            raise InvalidImageError(f"segmentation needs one 2-D plane, got shape {plane.shape}; pick a channel")
        if plane.dtype.kind == "f" and not np.isfinite(plane).all():
            raise InvalidImageError("plane contains NaN/Inf pixels; fix or drop the image before segmenting")
        if plane.size == 0 or plane.min() == plane.max():
            return np.zeros(plane.shape, np.int32)
        cfg = self.config
        x = normalize_percentile(plane, lower=1.0, upper=99.8, clip=True)
        x = 1.0 - x if cfg.invert else x
        smooth = gaussian(x, sigma=cfg.sigma) if cfg.sigma > 0 else x
        if cfg.threshold == "otsu":
            fg = smooth > threshold_otsu(smooth)
        else:
            fg = smooth > threshold_local(smooth, block_size=cfg.local_block | 1)
        fg = remove_small_holes(remove_small_objects(fg, max_size=cfg.min_size), max_size=cfg.min_size * 4)
        if not fg.any():
            return np.zeros(plane.shape, np.int32)
        distance = ndi.distance_transform_edt(fg)
        components, _ = ndi.label(fg)
        peaks = peak_local_max(distance, min_distance=cfg.min_distance, labels=components, exclude_border=False)
        markers = np.zeros(plane.shape, np.int32)
        markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
        # Components without a peak (tiny or flat) keep one label of their own.
        missing = np.setdiff1d(np.unique(components[fg]), np.unique(components[markers > 0]))
        for j, comp in enumerate(missing, start=len(peaks) + 1):
            markers[components == comp] = j
        return watershed(-distance, markers, mask=fg).astype(np.int32)


class CellposeSegmenter:
    """Cellpose 3 with user-supplied weights only (built-in model names download, which is not allowed)."""

    def __init__(self, weights: Path, *, diameter: float | None = None, device: str = "auto") -> None:
        weights = Path(weights)
        if not weights.is_file():
            raise FileNotFoundError(
                f"{weights}: Cellpose weights not found; pass a weights file you trained or were given, "
                "or use the offline classical segmenter (--segmenter classical)"
            )
        import torch
        from cellpose import models  # lazy: cellpose is optional for the core

        gpu = device != "cpu" and torch.cuda.is_available()
        self.model = models.CellposeModel(gpu=gpu, pretrained_model=str(weights))
        self.diameter = diameter
        self.weights = weights

    def segment(self, plane: np.ndarray) -> np.ndarray:
        """Label cells of one plane with the loaded network."""
        if plane.ndim != 2:
            raise InvalidImageError(f"segmentation needs one 2-D plane, got shape {plane.shape}; pick a channel")
        masks, _, _ = self.model.eval(plane.astype(np.float32), channels=[0, 0], diameter=self.diameter)
        return np.asarray(masks, np.int32)


def make_segmenter(kind: str, weights: Path | None = None, *, config: ClassicalConfig | None = None) -> Segmenter:
    """``classical``, ``cellpose`` (needs ``weights``) or ``auto`` (cellpose when weights are given)."""
    if kind == "auto":
        kind = "cellpose" if weights is not None else "classical"
    if kind == "classical":
        return ClassicalSegmenter(config or ClassicalConfig())
    if kind == "cellpose":
        if weights is None:
            raise ConfigError("the cellpose segmenter needs --cellpose-weights PATH (no weights can be downloaded)")
        return CellposeSegmenter(weights)
    raise ConfigError(f"segmenter must be classical, cellpose or auto, got {kind!r}")


def segment_files(
    paths: list[Path], out_dir: Path, segmenter: Segmenter, *, channel: int = 0, progress: bool = True
) -> pd.DataFrame:
    """Write ``<stem>_mask.tif`` per image; bad files are logged and listed with their error, never fatal."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for path in tqdm(paths, desc="segment", unit="image", disable=not progress):
        try:
            image = read_image(path, gray_rgb=True)
            if channel >= image.shape[0]:
                raise InvalidImageError(f"{path}: has {image.shape[0]} channel(s); --channel {channel} is out of range")
            labels = segmenter.segment(image[channel])
            mask_path = write_label_tiff(out_dir / f"{Path(path).stem}_mask.tif", labels)
            rows.append({"path": str(path), "mask_path": str(mask_path), "n_cells": int(labels.max()), "error": ""})
        except InvalidImageError as exc:
            log.warning("skipped %s", exc)
            rows.append({"path": str(path), "mask_path": "", "n_cells": 0, "error": str(exc)})
    table = pd.DataFrame(rows, columns=["path", "mask_path", "n_cells", "error"])
    table.to_csv(out_dir / "masks.csv", index=False)
    return table
