"""Read microscopy images (TIFF/OME-TIFF/SVS, PNG, JPEG, NPY/NPZ, OME-Zarr) into channels-first arrays.

The only image-file I/O in the core. Every failure raises :class:`InvalidImageError` naming the
file, the problem and the fix; nothing returns ``None``.
"""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np
import tifffile

from microsnoop.errors import InvalidImageError
from microsnoop.io.omezarr import ChannelSpec, is_zarr_group, read_omezarr

IMAGE_SUFFIXES = (".tif", ".tiff", ".svs", ".png", ".jpg", ".jpeg", ".npy", ".npz")
MAX_PIXELS = 1 << 28  # 268 Mpx per plane: beyond this, tile the image first


def _read_tiff(path: Path) -> tuple[np.ndarray, str]:
    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        # Pyramidal files (SVS, OME pyramids): level 0 is the full resolution.
        level = series.levels[0] if series.levels else series
        n_px = int(np.prod(level.shape))
        if n_px > MAX_PIXELS * 4:
            raise InvalidImageError(
                f"{path}: {level.shape} is too large to load at once ({n_px} values); crop or tile it before curating"
            )
        return np.asarray(level.asarray()), series.axes


def _read_numpy(path: Path) -> np.ndarray:
    loaded = np.load(path, allow_pickle=False)
    if isinstance(loaded, np.lib.npyio.NpzFile):
        with loaded:
            keys = list(loaded.keys())
            key = "image" if "image" in keys else ("images" if "images" in keys else keys[0] if keys else None)
            if key is None:
                raise InvalidImageError(f"{path}: the .npz holds no arrays; save the image under the key 'image'")
            return np.asarray(loaded[key])
    return np.asarray(loaded)


def read_raw(path: str | Path) -> tuple[np.ndarray, str | None]:
    """Read a file as stored, returning the array and its axes string when the format gives one."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise InvalidImageError(f"{path}: unsupported file type {suffix!r}; use one of {', '.join(IMAGE_SUFFIXES)}")
    if not path.is_file():
        raise InvalidImageError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise InvalidImageError(f"{path}: file is empty (0 bytes); re-export or remove it")
    try:
        if suffix in (".tif", ".tiff", ".svs"):
            return _read_tiff(path)
        if suffix in (".npy", ".npz"):
            return _read_numpy(path), None
        return np.asarray(iio.imread(path)), None
    except InvalidImageError:
        raise
    except Exception as exc:  # decoders raise many unrelated types on corrupt input
        raise InvalidImageError(
            f"{path}: cannot be decoded ({exc.__class__.__name__}: {exc}); the file is corrupt or truncated, "
            "re-export it"
        ) from exc


def to_channels_first(array: np.ndarray, axes: str | None, *, path: str | Path = "<array>") -> np.ndarray:
    """Return a ``C x H x W`` view of a 2-D image, rejecting 3-D stacks and time series.

    Without axes, a trailing dimension of 3 or 4 is read as RGB(A) and a leading dimension of at
    most 8 as channels.
    """
    a = np.squeeze(array)
    if axes is not None:
        kept = "".join(ax for ax, n in zip(axes, array.shape, strict=True) if n != 1)
        if any(ax in kept for ax in "ZTQI") and a.ndim > 2 and kept not in ("YXS", "SYX", "CYX", "YXC"):
            raise InvalidImageError(
                f"{path}: has axes {axes} with shape {array.shape}; a 2-D image is expected. "
                "Take one plane or a projection (e.g. max over Z) first"
            )
        if kept.endswith("S") or kept.endswith("C"):
            a = np.moveaxis(a, -1, 0)
    elif a.ndim == 3 and a.shape[-1] in (3, 4) and a.shape[0] > 4:
        a = np.moveaxis(a, -1, 0)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3:
        raise InvalidImageError(
            f"{path}: shape {array.shape} is not a 2-D image (expected H x W, C x H x W or H x W x C); "
            "3-D stacks and time series must be split into planes first"
        )
    if a.shape[0] > 8 and a.shape[-1] <= 8:
        a = np.moveaxis(a, -1, 0)
    if a.shape[0] > 8:
        raise InvalidImageError(
            f"{path}: {a.shape[0]} planes along the first axis looks like a Z-stack or time series; "
            "a 2-D image with at most 8 channels is expected"
        )
    if min(a.shape[-2:]) < 8:
        raise InvalidImageError(f"{path}: image of {a.shape[-2]}x{a.shape[-1]} pixels is too small (min 8x8)")
    return a


def rgb_to_gray(rgb: np.ndarray) -> np.ndarray:
    """Luminance (ITU-R 601) of a ``3/4 x H x W`` image as float32, keeping the input's range."""
    weights = np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return np.tensordot(weights, rgb[:3].astype(np.float32), axes=1)


def check_plane(plane: np.ndarray, *, path: str | Path, channel: int = 0) -> None:
    """Raise if a one-channel plane is empty, non-finite or constant (nothing to learn from)."""
    where = f"{path} (channel {channel})"
    if plane.size == 0:
        raise InvalidImageError(f"{where}: empty image; remove it from the input")
    if plane.dtype.kind == "f" and not np.isfinite(plane).all():
        n_bad = int((~np.isfinite(plane)).sum())
        raise InvalidImageError(f"{where}: {n_bad} NaN/Inf pixels; fix the export or mask them to a finite value")
    if plane.min() == plane.max():
        raise InvalidImageError(f"{where}: constant image (all pixels = {plane.flat[0]}); remove it from the input")


def read_image(path: str | Path, *, gray_rgb: bool = False, level: int = 0, channels: ChannelSpec = None) -> np.ndarray:
    """Read one 2-D image as ``C x H x W``; with ``gray_rgb`` an RGB image becomes one gray channel.

    An OME-Zarr image folder (e.g. ``plate.zarr/A/1/0``) is read at resolution ``level``, only the
    ``channels`` given (indices or OMERO names; all when None).
    """
    if is_zarr_group(path):
        image = read_omezarr(path, level=level, channels=channels)
    else:
        raw, axes = read_raw(path)
        if raw.size == 0:
            raise InvalidImageError(f"{path}: holds an empty array; re-export it")
        image = to_channels_first(raw, axes, path=path)
        if image.shape[0] == 4 and axes is None:
            image = image[:3]  # drop alpha
    if gray_rgb and image.shape[0] == 3:
        image = rgb_to_gray(image)[None]
    return image
