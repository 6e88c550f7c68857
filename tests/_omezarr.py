"""Small OME-Zarr images and HCS plates for tests, written with the ome-zarr library (no downloads)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import zarr
from ome_zarr.format import FormatV04
from ome_zarr.writer import write_image, write_plate_metadata, write_well_metadata


def blobs(rng: np.random.Generator, *, size: int = 96, n_cells: int = 6, channels: int = 2) -> np.ndarray:
    """A ``C x size x size`` uint16 field of round nuclei (channel 0) and a dimmer halo around them."""
    yy, xx = np.mgrid[:size, :size]
    out = np.full((channels, size, size), 100, np.float32)
    for _ in range(n_cells):
        cy, cx = rng.uniform(12, size - 12, 2)
        r2 = (yy - cy) ** 2 + (xx - cx) ** 2
        out[0] += 3000 * np.exp(-r2 / (2 * 4.0**2))
        for c in range(1, channels):
            out[c] += (800 + 300 * c) * np.exp(-r2 / (2 * 9.0**2))
    out += rng.normal(0, 20, out.shape)
    return np.clip(out, 0, 65535).astype(np.uint16)


def omero(names: Sequence[str]) -> dict[str, object]:
    """OMERO rendering metadata naming the channels."""
    window = {"start": 0, "end": 4000, "min": 0, "max": 65535}
    return {"channels": [{"label": n, "color": "FFFFFF", "window": window, "active": True} for n in names]}


def write_field(
    group: zarr.Group, pixels: np.ndarray, names: Sequence[str], *, levels: int = 2, v04: bool = False
) -> None:
    """One ``C x H x W`` image with ``levels`` resolution levels (2x downsampling) into ``group``."""
    write_image(
        pixels,
        group,
        axes="cyx",
        scale_factors=[2] * (levels - 1),
        omero=omero(names),
        fmt=FormatV04() if v04 else None,
    )


def write_plate(
    path: Path,
    *,
    wells: Sequence[str] = ("A/1", "B/2"),
    fields: int = 2,
    names: Sequence[str] = ("DAPI", "Actin"),
    size: int = 96,
    levels: int = 2,
    plate_name: str = "P1",
    images: Sequence[np.ndarray] | None = None,
    v04: bool = False,
    seed: int = 0,
) -> Path:
    """An HCS plate: ``wells`` (``ROW/COL``) with ``fields`` fields each; ``images`` replace the synthetic fields."""
    rng = np.random.default_rng(seed)
    root = zarr.open_group(str(path), mode="w", zarr_format=2 if v04 else 3)
    rows = sorted({w.split("/")[0] for w in wells})
    cols = sorted({w.split("/")[1] for w in wells}, key=int)
    fmt = FormatV04() if v04 else None
    write_plate_metadata(root, rows, cols, list(wells), name=plate_name, fmt=fmt)
    k = 0
    for well in wells:
        row, col = well.split("/")
        well_group = root.require_group(row).require_group(col)
        write_well_metadata(well_group, [str(f) for f in range(fields)], fmt=fmt)
        for f in range(fields):
            pixels = images[k % len(images)] if images is not None else blobs(rng, size=size, channels=len(names))
            write_field(well_group.require_group(str(f)), pixels, names, levels=levels, v04=v04)
            k += 1
    return path


def write_single(path: Path, pixels: np.ndarray, names: Sequence[str], *, levels: int = 2, v04: bool = False) -> Path:
    """A single OME-Zarr image at ``path``."""
    root = zarr.open_group(str(path), mode="w", zarr_format=2 if v04 else 3)
    write_field(root, pixels, names, levels=levels, v04=v04)
    return path
