"""Image sources for embedding: a folder (OME-Zarr included), a table of paths, or a stacked NPY/NPZ with a CSV.

A source is a table with one row per image: ``Metadata_ImageID`` (unique), ``path``, optional
``index`` (position in a stacked file), ``mask_path``, ``level`` and ``channels`` (OME-Zarr rows),
plus any ``Metadata_*`` columns.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from microsnoop.errors import InvalidImageError, ManifestError
from microsnoop.io.images import IMAGE_SUFFIXES, read_image, read_raw
from microsnoop.io.omezarr import ChannelSpec, find_omezarr_roots, omezarr_table, parse_channels

ID = "Metadata_ImageID"


def _validate(table: pd.DataFrame, where: str) -> pd.DataFrame:
    if "path" not in table.columns:
        raise ManifestError(f"{where}: no 'path' column; list one image file per row")
    if ID not in table.columns:
        key = table["path"].astype(str)
        if "index" in table.columns:
            key = key + "#" + table["index"].astype(str)
        table = table.assign(**{ID: key})
    dup = table[ID][table[ID].duplicated()]
    if len(dup):
        raise ManifestError(
            f"{where}: duplicate image ids {dup.head(5).tolist()}; make {ID} unique (e.g. plate/well/site)"
        )
    if table.empty:
        raise ManifestError(f"{where}: no images to embed")
    return table.reset_index(drop=True)


def source_from_folder(folder: Path, *, level: int = 0, channels: ChannelSpec = None) -> pd.DataFrame:
    """Every image file under ``folder`` (recursively); ids are paths relative to it.

    OME-Zarr images and HCS plates (``folder`` itself, or inside it) give one row per image or field,
    read at resolution ``level`` with the chosen ``channels``; plates add ``Metadata_Plate``,
    ``Metadata_Well`` and ``Metadata_Site``.
    """
    if not folder.is_dir():
        raise ManifestError(f"{folder}: no such folder; give a folder of images or an OME-Zarr (.zarr) folder")
    roots, found = find_omezarr_roots(folder)
    files = [p for p in found if p.suffix.lower() in IMAGE_SUFFIXES]
    parts = [pd.DataFrame({"path": [str(p) for p in files], ID: [str(p.relative_to(folder)) for p in files]})]
    for root in roots:
        prefix = root.name if root == folder else str(root.relative_to(folder))
        parts.append(omezarr_table(root, level=level, channels=channels, id_prefix=prefix))
    table = pd.concat([p for p in parts if len(p)] or parts[:1], ignore_index=True)
    return _validate(table, str(folder))


def source_from_table(path: Path) -> pd.DataFrame:
    """A CSV or Parquet with a ``path`` column (relative paths are taken from the table's folder)."""
    table = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    if "path" in table.columns:
        table["path"] = [str(p if Path(p).is_absolute() else path.parent / p) for p in table["path"].astype(str)]
    if "mask_path" in table.columns:
        table["mask_path"] = [
            None if pd.isna(p) else str(p if Path(str(p)).is_absolute() else path.parent / str(p))
            for p in table["mask_path"]
        ]
    return _validate(table, str(path))


def source_from_stack(stack: Path, metadata: Path | None = None) -> pd.DataFrame:
    """Rows of a stacked ``N x C x H x W`` NPY/NPZ, with metadata columns from a CSV of N rows."""
    n = _stack_length(stack)
    table = pd.DataFrame({"path": [str(stack)] * n, "index": np.arange(n)})
    if metadata is not None:
        meta = pd.read_csv(metadata)
        if len(meta) != n:
            raise ManifestError(f"{metadata}: {len(meta)} rows but {stack} holds {n} images; they must match")
        renamed = {c: c if c.startswith("Metadata_") else f"Metadata_{c}" for c in meta.columns}
        table = pd.concat([table, meta.rename(columns=renamed).reset_index(drop=True)], axis=1)
    return _validate(table, str(stack))


def _stack_length(stack: Path) -> int:
    fix = "save the N x C x H x W stack with numpy.save (.npy) or numpy.savez (.npz, key 'images')"
    shape: tuple[int, ...] | None = None
    try:
        if stack.suffix == ".npy":
            shape = np.load(stack, mmap_mode="r").shape
        else:
            with np.load(stack) as z:
                if z.files:
                    shape = z["images" if "images" in z.files else z.files[0]].shape
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:  # numpy's errors for non-array files
        raise InvalidImageError(f"{stack}: not a readable NumPy array file ({exc}); {fix}") from exc
    if shape is None:
        raise InvalidImageError(f"{stack}: the .npz holds no arrays; {fix}")
    if len(shape) < 3:
        raise InvalidImageError(f"{stack}: shape {shape} is not a stack of images; {fix}")
    return int(shape[0])


class StackCache:
    """Opens stacked files lazily: NPY memory-mapped, NPZ loaded once per chunk and then released."""

    def __init__(self) -> None:
        self._open: dict[str, np.ndarray] = {}

    def get(self, path: str) -> np.ndarray:
        """The stacked array of ``path``."""
        if path not in self._open:
            if path.endswith(".npy"):
                self._open[path] = np.load(path, mmap_mode="r")
            else:
                with np.load(path) as z:
                    self._open[path] = z["images" if "images" in z.files else z.files[0]]
        return self._open[path]

    def clear(self) -> None:
        """Release everything held."""
        self._open.clear()


def load_row(row: dict[str, object], cache: StackCache, *, gray_rgb: bool = False) -> np.ndarray:
    """The ``C x H x W`` image of one source row (``gray_rgb``: RGB image files become one gray channel)."""
    path = str(row["path"])
    index = row.get("index")
    if index is not None and not (isinstance(index, float) and np.isnan(index)):
        arr = np.asarray(cache.get(path)[int(index)])  # type: ignore[call-overload]
        if arr.ndim == 2:
            arr = arr[None]
        if arr.ndim != 3:
            raise InvalidImageError(f"{path}[{index}]: shape {arr.shape} is not C x H x W")
        return arr
    level = row.get("level")
    has_level = level is not None and not (isinstance(level, float) and np.isnan(level))
    return read_image(
        path,
        gray_rgb=gray_rgb,
        level=int(level) if has_level else 0,  # type: ignore[call-overload]
        channels=parse_channels(row.get("channels")),
    )


def load_mask(row: dict[str, object]) -> np.ndarray | None:
    """The label image of one source row, when the source gives one."""
    mask_path = row.get("mask_path")
    if mask_path is None or (isinstance(mask_path, float) and np.isnan(mask_path)):
        return None
    labels, _ = read_raw(str(mask_path))
    labels = np.squeeze(labels)
    if labels.ndim != 2:
        raise InvalidImageError(f"{mask_path}: a mask must be one 2-D label image, got shape {labels.shape}")
    return labels_as_int(labels, str(mask_path))


def labels_as_int(labels: np.ndarray, where: str) -> np.ndarray:
    """A label image as int32, refusing values that a cast would silently change (fractions, NaN, negatives)."""
    if labels.dtype == bool:
        return labels.astype(np.int32)
    if labels.dtype.kind not in "iuf":
        raise InvalidImageError(f"{where}: a label mask must hold numbers, got dtype {labels.dtype}")
    if labels.dtype.kind == "f" and (not np.isfinite(labels).all() or (labels != np.round(labels)).any()):
        raise InvalidImageError(
            f"{where}: the label mask holds NaN or fractional values (a probability map?); "
            "pass the instance mask (0 = background, 1..N = cells)"
        )
    if labels.size and (labels.min() < 0 or labels.max() > np.iinfo(np.int32).max):
        raise InvalidImageError(
            f"{where}: labels must lie in 0..2^31-1 (0 = background), found {labels.min()}..{labels.max()}; "
            "relabel the mask"
        )
    return labels.astype(np.int32)
