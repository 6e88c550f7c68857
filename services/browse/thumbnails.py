"""Thumbnails from the stored images: per-channel percentile contrast, a colour per channel, cell crops.

Feature store rows carry their image's object-store URI (``image_uri``, or ``Metadata_ImageURI`` in
``extra``) and, for cells, the cell's box (``box_x0`` ... ``box_y1``).

>>> img = np.stack([np.arange(64.0).reshape(8, 8)] * 2)
>>> rgb = colourize(stretch_channels(img), ["green", "magenta"])
>>> rgb.shape, rgb.dtype
((8, 8, 3), dtype('uint8'))
"""

from __future__ import annotations

import tempfile
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from services.settings import PlatformSettings

COLOURS: dict[str, tuple[float, float, float]] = {
    "gray": (1.0, 1.0, 1.0),
    "red": (1.0, 0.0, 0.0),
    "green": (0.0, 1.0, 0.0),
    "blue": (0.0, 0.0, 1.0),
    "cyan": (0.0, 1.0, 1.0),
    "magenta": (1.0, 0.0, 1.0),
    "yellow": (1.0, 1.0, 0.0),
    "off": (0.0, 0.0, 0.0),
}
DEFAULT_COLOURS: tuple[str, ...] = ("blue", "green", "red", "magenta", "cyan", "yellow", "gray", "gray")
_CACHE: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()
_CACHE_SIZE = 64


def default_colours(n_channels: int) -> list[str]:
    """Gray for one channel, else blue/green/red/... in channel order."""
    return ["gray"] if n_channels == 1 else list(DEFAULT_COLOURS[:n_channels])


def stretch_channels(image: np.ndarray, *, low: float = 1.0, high: float = 99.5) -> np.ndarray:
    """Scale each channel of a ``C x H x W`` image so its ``low``/``high`` percentiles map to 0/1 (clipped)."""
    if not 0 <= low < high <= 100:
        raise ValueError(f"need 0 <= low < high <= 100, got low={low} high={high}")
    out = np.empty(image.shape, dtype=np.float32)
    for c, plane in enumerate(image.astype(np.float32)):
        lo, hi = np.percentile(plane, [low, high])
        out[c] = np.clip((plane - lo) / (hi - lo), 0, 1) if hi > lo else 0.0
    return out


def colourize(image01: np.ndarray, colours: Sequence[str]) -> np.ndarray:
    """Blend ``C x H x W`` values in [0, 1] into an ``H x W x 3`` uint8 image, one colour per channel."""
    if len(colours) < image01.shape[0]:
        colours = [*colours, *default_colours(image01.shape[0])[len(colours) :]]
    rgb = np.zeros((*image01.shape[1:], 3), dtype=np.float32)
    for plane, name in zip(image01, colours, strict=False):
        if name not in COLOURS:
            raise ValueError(f"unknown colour {name!r}; use one of {', '.join(COLOURS)}")
        rgb += plane[..., None] * np.asarray(COLOURS[name], dtype=np.float32)
    return (np.clip(rgb, 0, 1) * 255).astype(np.uint8)


def decode_image(data: bytes, name: str) -> np.ndarray:
    """Decode image bytes (any format the core reads, chosen by ``name``'s suffix) into ``C x H x W``."""
    from microsnoop.io.images import read_image

    suffix = Path(name).suffix.lower() or ".png"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"image{suffix}"
        path.write_bytes(data)
        return read_image(path)


def load_stored_image(settings: PlatformSettings, uri: str) -> np.ndarray:
    """The ``C x H x W`` image behind an object-store URI (a small in-process cache keeps recent ones)."""
    from services.storage import open_store

    key = (settings.store_uri, uri)
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    image = decode_image(open_store(settings).read_bytes(uri), uri)
    _CACHE[key] = image
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return image


def image_uri(row: Mapping[str, Any]) -> str | None:
    """The object-store URI of a feature-store row's image (``image_uri`` or ``Metadata_ImageURI``)."""
    for key in ("image_uri", "Metadata_ImageURI"):
        value = row.get(key)
        if isinstance(value, str) and "://" in value:
            return value
    extra = row.get("extra")
    if isinstance(extra, Mapping):
        value = extra.get("Metadata_ImageURI")
        if isinstance(value, str) and value:
            return value
    return None


def cell_box(row: Mapping[str, Any]) -> tuple[int, int, int, int] | None:
    """``(x0, y0, x1, y1)`` of a cell row, or None for image rows."""
    values = [row.get(k) for k in ("box_x0", "box_y0", "box_x1", "box_y1")]
    if any(v is None or (isinstance(v, float) and np.isnan(v)) for v in values):
        return None
    x0, y0, x1, y1 = (int(v) for v in values)  # type: ignore[arg-type]
    return x0, y0, x1, y1


def crop_cell(image: np.ndarray, box: tuple[int, int, int, int], *, pad: int = 8) -> np.ndarray:
    """The cell's box (plus ``pad`` pixels of context) cut from a ``C x H x W`` image."""
    x0, y0, x1, y1 = box
    h, w = image.shape[-2:]
    return image[:, max(0, y0 - pad) : min(h, y1 + pad), max(0, x0 - pad) : min(w, x1 + pad)]


def render_thumbnail(
    image: np.ndarray,
    *,
    colours: Sequence[str] | None = None,
    low: float = 1.0,
    high: float = 99.5,
    size: int = 128,
) -> np.ndarray:
    """A ``size``-pixel (longest side) RGB uint8 thumbnail of a ``C x H x W`` image."""
    rgb = colourize(stretch_channels(image, low=low, high=high), colours or default_colours(image.shape[0]))
    pil = Image.fromarray(rgb)
    scale = size / max(pil.size)
    pil = pil.resize((max(1, round(pil.width * scale)), max(1, round(pil.height * scale))), Image.Resampling.NEAREST)
    return np.asarray(pil)


def stored_thumbnail(
    settings: PlatformSettings,
    uri: str,
    box: tuple[int, int, int, int] | None = None,
    *,
    colours: Sequence[str] | None = None,
    low: float = 1.0,
    high: float = 99.5,
    size: int = 128,
) -> np.ndarray:
    """The thumbnail of a stored image, or of one cell's box in it."""
    image = load_stored_image(settings, uri)
    if box is not None:
        image = crop_cell(image, box)
    return render_thumbnail(image, colours=colours, low=low, high=high, size=size)


def channel_count(settings: PlatformSettings, uri: str) -> int:
    """Number of channels of a stored image."""
    return int(load_stored_image(settings, uri).shape[0])
