"""Label images on disk: instance masks written and read as TIFF (0 = background, 1..N = cells)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import tifffile

from microsnoop.errors import InvalidImageError
from microsnoop.io.images import read_raw

UINT16_LIMIT = 65535  # labels up to 65534 fit uint16; larger ones take uint32


def _check_labels(labels: np.ndarray, where: str) -> np.ndarray:
    a = np.asarray(labels)
    if a.ndim != 2:
        raise InvalidImageError(f"{where}: a label image must be 2-D (H x W), got shape {a.shape}")
    if a.dtype == bool:
        return a.astype(np.uint8)
    if a.dtype.kind not in "iu":
        raise InvalidImageError(
            f"{where}: a label image must hold integers, got dtype {a.dtype}; pass the instance mask, "
            "not a probability map"
        )
    if a.size and a.min() < 0:
        raise InvalidImageError(f"{where}: negative label {a.min()}; labels are 0 (background) or 1..N")
    return a


def label_dtype(labels: np.ndarray) -> type[np.unsignedinteger]:
    """The smallest TIFF dtype for a label image: uint16 below 65535 labels, else uint32."""
    top = int(labels.max(initial=0))
    if top < UINT16_LIMIT:
        return np.uint16
    if top <= np.iinfo(np.uint32).max:
        return np.uint32
    raise InvalidImageError(f"label {top} does not fit uint32; relabel the mask sequentially first")


def write_label_tiff(path: str | Path, labels: np.ndarray) -> Path:
    """Write a 2-D label image as a zlib-compressed TIFF, atomically (a crash leaves no half file).

    >>> import tempfile; d = Path(tempfile.mkdtemp())
    >>> int(read_labels(write_label_tiff(d / "m.tif", np.eye(9, dtype=int))).sum())
    9
    """
    path = Path(path)
    a = _check_labels(labels, str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + ".part")
    try:
        tifffile.imwrite(part, a.astype(label_dtype(a), copy=False), compression="zlib")
        os.replace(part, path)
    finally:
        part.unlink(missing_ok=True)
    return path


def read_labels(path: str | Path) -> np.ndarray:
    """Read a 2-D label image (TIFF, PNG or NPY) as int32, raising ``InvalidImageError`` naming the file."""
    raw, _ = read_raw(path)
    a = _check_labels(np.squeeze(raw), str(path))
    if a.size and int(a.max()) > np.iinfo(np.int32).max:
        raise InvalidImageError(f"{path}: label {a.max()} exceeds int32; relabel the mask sequentially first")
    return a.astype(np.int32, copy=False)


def count_cells(labels: np.ndarray) -> int:
    """Number of distinct non-zero labels (cells) in a label image.

    >>> count_cells(np.array([[0, 3, 3], [7, 0, 0]]))
    2
    """
    return int(np.count_nonzero(np.unique(np.asarray(labels))))
