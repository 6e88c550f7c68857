"""Cell segmentation: a ``Segmenter`` protocol, an offline classical fallback and a Cellpose 3 adapter.

Algorithms take one 2-D plane and return an int32 label image (0 = background, 1..N = cells);
:func:`segment_files` is the file-level edge (read images, write ``<stem>_mask.tif``).

>>> plane = np.zeros((64, 64)); plane[10:20, 10:20] = 1; plane[40:52, 30:44] = 1
>>> int(ClassicalSegmenter().segment(plane).max())
2
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd
from scipy import ndimage as ndi
from skimage.feature import peak_local_max
from skimage.filters import gaussian, threshold_local, threshold_otsu
from skimage.morphology import remove_small_holes, remove_small_objects
from skimage.segmentation import relabel_sequential, watershed
from tqdm.auto import tqdm

from microsnoop.errors import CheckpointError, ConfigError, InvalidImageError, MicrosnoopError
from microsnoop.io.images import read_image
from microsnoop.io.masks import count_cells, read_labels, write_label_tiff
from microsnoop.io.omezarr import image_stem
from microsnoop.preprocess.normalize import normalize_percentile

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

KINDS = ("classical", "cellpose", "auto")
TABLE_COLUMNS = ("path", "mask_path", "n_cells", "error")


@runtime_checkable
class Segmenter(Protocol):
    """Anything that labels the cells of one 2-D plane: ``H x W`` in, int32 ``H x W`` labels out."""

    def segment(self, image: np.ndarray) -> np.ndarray:
        """Label the cells of one plane (0 = background, 1..N = cells)."""
        ...


def check_segmentable(image: np.ndarray) -> np.ndarray:
    """Return ``image`` as an array after checking it is one finite 2-D plane, else ``InvalidImageError``."""
    a = np.asarray(image)
    if a.ndim != 2:
        raise InvalidImageError(
            f"segmentation takes one 2-D plane (H x W), got shape {a.shape}; pick one channel first (e.g. image[0])"
        )
    if a.dtype.kind not in "biuf":
        raise InvalidImageError(f"cannot segment an image of dtype {a.dtype}; convert it to a numeric array")
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        n_bad = int((~np.isfinite(a)).sum())
        raise InvalidImageError(
            f"image has {n_bad} NaN/Inf pixels; segmentation needs finite values. Fix the export or replace "
            "them (e.g. np.nan_to_num) before segmenting"
        )
    return a


@dataclass(frozen=True)
class ClassicalConfig:
    """Knobs of the classical pipeline; the defaults were tuned on DSB2018 fluorescence nuclei.

    ``min_distance=None`` sets the watershed seed spacing per image to ``min_distance_factor`` times
    the median radius of the foreground's connected components (images come at many scales).
    """

    sigma: float = 0.5
    threshold: str = "otsu"
    threshold_factor: float = 0.8
    local_block_size: int = 101
    local_offset: float = 0.0
    min_size: int = 30
    max_hole_size: int = 64
    min_distance: int | None = None
    min_distance_factor: float = 0.7
    footprint: int | None = None
    percentiles: tuple[float, float] = (1.0, 99.8)
    invert: bool = False

    def __post_init__(self) -> None:
        if self.threshold not in ("otsu", "local"):
            raise ConfigError(f"threshold must be 'otsu' or 'local', got {self.threshold!r}")
        if self.sigma < 0 or self.threshold_factor <= 0 or self.min_distance_factor <= 0:
            raise ConfigError(
                f"sigma must be >= 0 and threshold_factor, min_distance_factor > 0; got sigma={self.sigma}, "
                f"threshold_factor={self.threshold_factor}, min_distance_factor={self.min_distance_factor}"
            )
        if self.local_block_size < 3 or self.local_block_size % 2 == 0:
            raise ConfigError(f"local_block_size must be an odd number >= 3, got {self.local_block_size}")
        if self.min_size < 1 or self.max_hole_size < 0:
            raise ConfigError(
                f"min_size must be >= 1 and max_hole_size >= 0, got {self.min_size}, {self.max_hole_size}"
            )
        if self.min_distance is not None and self.min_distance < 1:
            raise ConfigError(f"min_distance must be >= 1 or None (adaptive), got {self.min_distance}")
        if self.footprint is not None and self.footprint < 1:
            raise ConfigError(
                f"footprint must be >= 1 pixel or None (a square of 2*min_distance+1), got {self.footprint}"
            )
        lo, hi = self.percentiles
        if not 0.0 <= lo < hi <= 100.0:
            raise ConfigError(f"percentiles must satisfy 0 <= low < high <= 100, got {self.percentiles}")


@dataclass(frozen=True)
class ClassicalSegmenter:
    """Offline fallback, no weights: normalise, blur, threshold, clean up, distance-transform watershed."""

    config: ClassicalConfig = field(default_factory=ClassicalConfig)

    def segment(self, image: np.ndarray) -> np.ndarray:
        """Label the nuclei of one plane; constant or empty planes give all zeros."""
        plane = check_segmentable(image)
        empty = np.zeros(plane.shape, np.int32)
        if plane.size == 0 or plane.min() == plane.max():
            return empty
        cfg = self.config
        x = normalize_percentile(plane, lower=cfg.percentiles[0], upper=cfg.percentiles[1], clip=True)
        if cfg.invert:  # objects darker than the background
            x = 1.0 - x
        smooth = gaussian(x, sigma=cfg.sigma, preserve_range=True) if cfg.sigma > 0 else x
        foreground = self._foreground(smooth)
        if not foreground.any():
            return empty
        return self._split(foreground)

    def _foreground(self, smooth: np.ndarray) -> np.ndarray:
        cfg = self.config
        if smooth.min() == smooth.max():
            return np.zeros(smooth.shape, bool)
        level = threshold_otsu(smooth) * cfg.threshold_factor
        if cfg.threshold == "otsu":
            mask = smooth > level
        else:
            # Brighter than the neighbourhood, and above half the global level (keeps empty background out).
            local = threshold_local(smooth, block_size=cfg.local_block_size, offset=cfg.local_offset)
            mask = (smooth > local) & (smooth > 0.5 * level)
        mask = remove_small_objects(mask, max_size=cfg.min_size - 1)
        return remove_small_holes(mask, max_size=cfg.max_hole_size) if cfg.max_hole_size else mask

    def _split(self, foreground: np.ndarray) -> np.ndarray:
        cfg = self.config
        distance = ndi.distance_transform_edt(foreground)
        components, n_components = ndi.label(foreground)
        min_distance = cfg.min_distance
        if min_distance is None:
            radius = np.sqrt(np.median(np.bincount(components.ravel())[1:]) / np.pi)
            min_distance = max(2, round(cfg.min_distance_factor * radius))
        footprint = None if cfg.footprint is None else np.ones((cfg.footprint, cfg.footprint), bool)
        peaks = peak_local_max(
            distance, min_distance=min_distance, footprint=footprint, labels=components, exclude_border=False
        )
        peak_mask = np.zeros(foreground.shape, bool)
        peak_mask[tuple(peaks.T)] = True
        markers, n_markers = ndi.label(peak_mask)  # touching peaks (plateaus) make one seed
        # A component without any peak still becomes one cell.
        seeded = np.zeros(n_components + 1, bool)
        seeded[components[peak_mask]] = True
        unseeded = ~seeded[components] & foreground
        if unseeded.any():
            extra, _ = ndi.label(unseeded)
            markers[unseeded] = extra[unseeded] + n_markers
        labels = watershed(-distance, markers, mask=foreground)
        return relabel_sequential(labels)[0].astype(np.int32, copy=False)


@dataclass(frozen=True)
class CellposeConfig:
    """How the Cellpose adapter runs: size, channels, thresholds and device.

    ``channels`` follows Cellpose: (channel to segment, optional nuclear channel), 0 = grayscale,
    k = the k-th plane (1-based) of a ``C x H x W`` input. ``diameter=None`` uses the diameter stored
    with the weights.
    """

    diameter: float | None = None
    channels: tuple[int, int] = (0, 0)
    device: str = "auto"
    flow_threshold: float = 0.4
    cellprob_threshold: float = 0.0
    min_size: int = 15
    batch_size: int = 8

    def __post_init__(self) -> None:
        if self.diameter is not None and self.diameter <= 0:
            raise ConfigError(f"diameter must be > 0 pixels or None (the model's own), got {self.diameter}")
        if len(self.channels) != 2 or any(c < 0 for c in self.channels):
            raise ConfigError(f"channels must be two indices >= 0 (Cellpose convention), got {self.channels}")
        if self.min_size < 0 or self.batch_size < 1:
            raise ConfigError(f"min_size must be >= 0 and batch_size >= 1, got {self.min_size}, {self.batch_size}")


def _read_cellpose_state(weights: Path) -> dict[str, Any]:
    import pickle

    import torch

    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, OSError, ValueError, EOFError) as exc:  # torch: many types
        raise CheckpointError(
            f"{weights}: cannot be read as Cellpose weights ({exc.__class__.__name__}: {exc}); give a state "
            "dict saved by Cellpose 3 (CellposeModel.net.save_model) or use --segmenter classical"
        ) from exc
    if not isinstance(state, dict) or "output.2.weight" not in state:
        raise CheckpointError(
            f"{weights}: not a Cellpose 3 network state dict (no 'output.2.weight'); give a file saved by "
            "CellposeModel.net.save_model or use --segmenter classical"
        )
    if "W2" in state:
        raise CheckpointError(f"{weights}: Cellpose 4 (SAM) weights; this adapter runs Cellpose 3 weights only")
    return state


class CellposeSegmenter:
    """Cellpose 3 with user-supplied weights only; built-in model names (which download) are refused."""

    def __init__(self, weights: str | Path, config: CellposeConfig | None = None) -> None:
        path = Path(weights).expanduser().resolve()
        if not path.is_file():
            # Checked here: given a missing path, cellpose itself falls back to downloading 'cyto3'.
            raise FileNotFoundError(
                f"{weights}: Cellpose weights file not found; pass the path of a Cellpose 3 model you "
                "trained or were given (built-in models cannot be downloaded here), or use the offline "
                "classical segmenter (--segmenter classical)"
            )
        self.weights = path
        self.config = config or CellposeConfig()
        state = _read_cellpose_state(path)
        first = next((v for k, v in state.items() if k.endswith("res_down_0.conv.conv_0.0.weight")), None)
        if first is None:
            raise CheckpointError(f"{path}: no first-layer weights found; not a Cellpose 3 CPnet state dict")
        from cellpose import models  # lazy: heavy, and only needed for this segmenter

        from microsnoop.device import pick_device

        self.device: torch.device = pick_device(self.config.device)
        self.model = models.CellposeModel(
            gpu=self.device.type == "cuda",
            pretrained_model=str(path),
            model_type=None,
            device=self.device,
            nchan=int(first.shape[0]),
        )
        log.info("Cellpose weights %s on %s (nchan=%d)", path, self.device, self.model.nchan)

    def segment(self, image: np.ndarray) -> np.ndarray:
        """Label the cells of one ``H x W`` plane (or a ``C x H x W`` image picked by ``channels``)."""
        a = np.asarray(image)
        cfg = self.config
        channel_axis: int | None = None
        if a.ndim == 3:
            if cfg.channels == (0, 0) or max(cfg.channels) > a.shape[0]:
                raise InvalidImageError(
                    f"a {a.shape} image needs channels naming its planes (1..{a.shape[0]}), got "
                    f"{cfg.channels}; pass one H x W plane, or set CellposeConfig.channels"
                )
            x, channel_axis = np.stack([check_segmentable(p) for p in a]).astype(np.float32), 0
        else:
            x = check_segmentable(a).astype(np.float32)
            if cfg.channels != (0, 0):
                raise InvalidImageError(
                    f"channels={cfg.channels} needs a C x H x W image; a single plane takes channels=(0, 0)"
                )
        if x.min() == x.max():
            return np.zeros(x.shape[-2:], np.int32)
        masks, _, _ = self.model.eval(
            x,
            channels=list(cfg.channels),
            channel_axis=channel_axis,
            diameter=cfg.diameter,
            flow_threshold=cfg.flow_threshold,
            cellprob_threshold=cfg.cellprob_threshold,
            min_size=cfg.min_size,
            batch_size=cfg.batch_size,
        )
        return np.asarray(masks, dtype=np.int32).reshape(x.shape[-2:])


def make_segmenter(
    kind: str,
    weights: str | Path | None = None,
    *,
    config: ClassicalConfig | None = None,
    cellpose: CellposeConfig | None = None,
) -> Segmenter:
    """Build a segmenter: ``classical``, ``cellpose`` (needs ``weights``), ``auto`` (cellpose if weights)."""
    if kind not in KINDS:
        raise ConfigError(f"segmenter must be one of {KINDS}, got {kind!r}")
    if kind == "auto":
        kind = "classical" if weights is None else "cellpose"
    if kind == "cellpose":
        if weights is None:
            raise ConfigError(
                "the cellpose segmenter needs a weights file (--cellpose-weights PATH); nothing is "
                "downloaded. Without weights use --segmenter classical"
            )
        return CellposeSegmenter(weights, cellpose)
    if weights is not None:
        log.warning("weights %s are ignored by the classical segmenter", weights)
    return ClassicalSegmenter(config or ClassicalConfig())


def _segment_one(
    path: Path, mask_path: Path, segmenter: Segmenter, channel: int, skip_existing: bool, level: int = 0
) -> int:
    if skip_existing and mask_path.is_file():
        return count_cells(read_labels(mask_path))
    image = read_image(path, level=level)
    if not 0 <= channel < image.shape[0]:
        raise InvalidImageError(
            f"{path}: has {image.shape[0]} channel(s), channel {channel} is out of range; "
            f"pick a channel in 0..{image.shape[0] - 1}"
        )
    try:
        labels = segmenter.segment(image[channel])
    except InvalidImageError as exc:
        raise InvalidImageError(f"{path} (channel {channel}): {exc}") from exc
    write_label_tiff(mask_path, labels)
    return count_cells(labels)


def segment_files(
    paths: Sequence[str | Path],
    out_dir: str | Path,
    segmenter: Segmenter,
    *,
    channel: int = 0,
    skip_existing: bool = False,
    progress: bool = True,
    level: int = 0,
) -> pd.DataFrame:
    """Segment image files into ``out_dir/<stem>_mask.tif``; returns ``path, mask_path, n_cells, error``.

    OME-Zarr images (``plate.zarr/A/1/0``) are read at resolution ``level`` and named ``plate_A_1_0``.

    A file that cannot be read or segmented is logged, gets its message in ``error`` (empty when fine)
    and no mask; the run goes on and masks already written stay. With ``skip_existing`` a mask already
    on disk is counted instead of recomputed (to resume an interrupted run). The table is also written
    to ``out_dir/masks.csv``; its ``path``/``mask_path`` columns suit ``microsnoop embed --table``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    taken: dict[Path, Path] = {}
    for raw in tqdm(paths, desc="segment", unit="image", disable=not progress):
        path = Path(raw)
        mask_path = out / f"{image_stem(path)}_mask.tif"
        try:
            if mask_path in taken:
                raise ConfigError(
                    f"{path}: its mask name {mask_path.name} is already used by {taken[mask_path]}; rename "
                    "one of them or segment them into different folders"
                )
            taken[mask_path] = path
            n_cells = _segment_one(path, mask_path, segmenter, channel, skip_existing, level)
            rows.append({"path": str(path), "mask_path": str(mask_path), "n_cells": n_cells, "error": ""})
        except (MicrosnoopError, ValueError, RuntimeError, MemoryError) as exc:
            message = str(exc) if str(exc).startswith(str(path)) else f"{path}: {exc}"
            log.warning("skipped %s", message)
            rows.append({"path": str(path), "mask_path": None, "n_cells": 0, "error": message})
    n_bad = sum(bool(r["error"]) for r in rows)
    if n_bad:
        log.warning("%d of %d images could not be segmented; see the 'error' column", n_bad, len(rows))
    table = pd.DataFrame(rows, columns=list(TABLE_COLUMNS))
    table.to_csv(out / "masks.csv", index=False)
    return table
