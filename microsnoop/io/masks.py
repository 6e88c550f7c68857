"""Label images on disk: TIFF in, TIFF out."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile

from microsnoop.errors import InvalidImageError
from microsnoop.io.images import read_raw


def write_label_tiff(path: Path, labels: np.ndarray) -> Path:
    """Write a label image (uint16 when it fits, else uint32), atomically."""
    labels = np.asarray(labels)
    dtype = np.uint16 if labels.max(initial=0) < 65535 else np.uint32
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.tif")
    tifffile.imwrite(tmp, labels.astype(dtype), compression="zlib")
    tmp.replace(path)
    return path


def read_labels(path: Path) -> np.ndarray:
    """Read a 2-D label image as int32."""
    labels, _ = read_raw(path)
    labels = np.squeeze(labels)
    if labels.ndim != 2:
        raise InvalidImageError(f"{path}: a label image must be 2-D, got shape {labels.shape}")
    return labels.astype(np.int32)


def count_cells(labels: np.ndarray) -> int:
    """Number of distinct non-zero labels."""
    return int(np.count_nonzero(np.unique(labels)))
