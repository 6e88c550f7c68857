"""OME-Zarr (NGFF 0.4 and 0.5) input: single images and HCS plates, read lazily with ``zarr``.

An OME-Zarr *image* is a group with ``multiscales`` metadata (a resolution pyramid, level 0 the
finest); a *plate* is a group with ``plate`` metadata whose wells (``ROW/COL``) hold fields (images).
Only metadata is read when a plate is listed; a field's pixels are read, one level and the chosen
channels only, when :func:`read_omezarr` is called. Every failure raises :class:`InvalidImageError`
naming the path, the problem and the fix.

>>> table = omezarr_table("plate.zarr", level=1)  # doctest: +SKIP
>>> table[["Metadata_Plate", "Metadata_Well", "Metadata_Site"]].head(1)  # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from microsnoop.errors import InvalidImageError

ZARR_MARKERS = ("zarr.json", ".zattrs", ".zgroup")
MAX_PIXELS = 1 << 30  # values of one field at one level: beyond this, pick a coarser level
ChannelSpec = Sequence[int | str] | None


def is_zarr_group(path: str | Path) -> bool:
    """True when ``path`` is a folder holding Zarr (v2 or v3) group metadata."""
    p = Path(path)
    return p.is_dir() and any((p / m).is_file() for m in ZARR_MARKERS)


def _open_group(path: Path) -> Any:
    import zarr  # lazy: only OME-Zarr input needs it

    if not is_zarr_group(path):
        raise InvalidImageError(f"{path}: not a Zarr group (no zarr.json or .zattrs); give an OME-Zarr folder")
    try:
        return zarr.open_group(str(path), mode="r")
    except Exception as exc:  # zarr raises several types on broken metadata
        raise InvalidImageError(f"{path}: cannot open as Zarr ({exc.__class__.__name__}: {exc}); re-export it") from exc


def _ome_attrs(group: Any) -> dict[str, Any]:
    """NGFF attributes: under ``ome`` in 0.5, at the top level in 0.4."""
    attrs = dict(group.attrs)
    return dict(attrs["ome"]) if isinstance(attrs.get("ome"), dict) else attrs


@dataclass(frozen=True)
class OmeZarrImage:
    """One OME-Zarr image at one resolution level; pixels are read on demand by :func:`read_omezarr`."""

    path: Path
    level: int
    n_levels: int
    dataset: str
    axes: str
    shape: tuple[int, ...]
    channel_names: tuple[str, ...]

    @property
    def n_channels(self) -> int:
        """Channels of the image (1 when it has no channel axis)."""
        return self.shape[self.axes.index("c")] if "c" in self.axes else 1

    def channel_indices(self, channels: ChannelSpec) -> list[int]:
        """Indices of ``channels`` (indices or OMERO names, in the order given); all when None."""
        if channels is None or len(channels) == 0:
            return list(range(self.n_channels))
        names = ", ".join(f"{i}={n}" for i, n in enumerate(self.channel_names)) or "unnamed"
        out = []
        for ch in channels:
            if isinstance(ch, str) and not ch.lstrip("-").isdigit():
                if ch not in self.channel_names:
                    raise InvalidImageError(f"{self.path}: no channel named {ch!r}; its channels are {names}")
                out.append(self.channel_names.index(ch))
                continue
            index = int(ch)
            if not 0 <= index < self.n_channels:
                raise InvalidImageError(
                    f"{self.path}: channel {index} is out of range; it has {self.n_channels} channel(s) ({names}), "
                    f"pick 0..{self.n_channels - 1}"
                )
            out.append(index)
        return out


def _axes_of(multiscale: dict[str, Any], ndim: int, path: Path) -> str:
    axes = multiscale.get("axes")
    if axes is None:  # NGFF 0.1/0.2: always 5-D TCZYX
        names = "tczyx"[-ndim:]
    else:
        kinds = {"channel": "c", "time": "t"}  # typed axes may have any name; space axes go by name (z, y, x)
        names = "".join(
            kinds.get(str(a.get("type")), str(a["name"]).lower()[:1]) if isinstance(a, dict) else str(a).lower()[:1]
            for a in axes
        )
    if len(names) != ndim or not names.endswith("yx") or set(names) - set("tczyx"):
        raise InvalidImageError(
            f"{path}: axes {names!r} do not fit an array of {ndim} dimensions ending in y, x; "
            "only t, c, z, y, x axes are supported"
        )
    return names


def open_omezarr(path: str | Path, *, level: int = 0) -> OmeZarrImage:
    """Read the metadata of one OME-Zarr image at resolution ``level`` (no pixels are read)."""
    path = Path(path)
    group = _open_group(path)
    attrs = _ome_attrs(group)
    multiscales = attrs.get("multiscales")
    if not multiscales:
        kind = "a plate" if "plate" in attrs else "a well" if "well" in attrs else "not an image"
        raise InvalidImageError(
            f"{path}: no 'multiscales' metadata ({kind}); give an OME-Zarr image (e.g. plate.zarr/A/1/0) or list a "
            "plate with omezarr_table / --folder"
        )
    datasets = multiscales[0].get("datasets") or []
    if not 0 <= level < len(datasets):
        raise InvalidImageError(
            f"{path}: resolution level {level} does not exist; it has {len(datasets)} level(s), "
            f"pick 0..{len(datasets) - 1} (0 is full resolution)"
        )
    dataset = str(datasets[level]["path"])
    try:
        array = group[dataset]
    except KeyError as exc:
        raise InvalidImageError(f"{path}: level {level} names a missing dataset {dataset!r}; re-export it") from exc
    axes = _axes_of(multiscales[0], array.ndim, path)
    omero = attrs.get("omero") or {}
    names = tuple(str(c.get("label", i)) for i, c in enumerate(omero.get("channels") or []))
    n_ch = array.shape[axes.index("c")] if "c" in axes else 1
    if len(names) != n_ch:
        names = tuple(str(i) for i in range(n_ch))
    return OmeZarrImage(path, level, len(datasets), dataset, axes, tuple(array.shape), names)


def read_omezarr(path: str | Path, *, level: int = 0, channels: ChannelSpec = None) -> np.ndarray:
    """The ``C x H x W`` pixels of an OME-Zarr image at ``level`` (only the chosen channels are read)."""
    image = open_omezarr(path, level=level)
    chans = image.channel_indices(channels)
    index: list[Any] = []
    for ax, n in zip(image.axes, image.shape, strict=True):
        if ax in "tz" and n > 1:
            raise InvalidImageError(
                f"{image.path}: has {n} {'time points' if ax == 't' else 'z planes'}; a 2-D image is expected. "
                "Take one plane or a projection (e.g. max over Z) into its own OME-Zarr first"
            )
        index.append(0 if ax in "tz" else slice(None))
    n_px = len(chans) * image.shape[-1] * image.shape[-2]
    if n_px > MAX_PIXELS:
        raise InvalidImageError(
            f"{image.path}: level {level} is {image.shape} ({n_px} values), too large to load at once; "
            f"pick a coarser level (up to {image.n_levels - 1}) or tile the image first"
        )
    array = _open_group(image.path)[image.dataset]
    if "c" in image.axes:
        planes = [
            np.asarray(array[tuple(ch if ax == "c" else i for ax, i in zip(image.axes, index, strict=True))])
            for ch in chans
        ]
        pixels = np.stack(planes)
    else:
        pixels = np.asarray(array[tuple(index)])[None]
    if min(pixels.shape[-2:]) < 8:
        raise InvalidImageError(
            f"{image.path}: level {level} is {pixels.shape[-2]}x{pixels.shape[-1]} pixels, too small (min 8x8); "
            "pick a finer level"
        )
    return pixels


def _rows_of_plate(path: Path, attrs: dict[str, Any], prefix: str) -> list[dict[str, Any]]:
    plate = attrs["plate"]
    name = str(plate.get("name") or path.name.removesuffix(".zarr"))
    rows = []
    for well in plate.get("wells") or []:
        well_path = str(well["path"])
        parts = well_path.split("/")
        if len(parts) != 2:
            raise InvalidImageError(f"{path}: well path {well_path!r} is not ROW/COLUMN; the plate metadata is broken")
        row_name, col_name = parts
        well_group = path / row_name / col_name
        if not is_zarr_group(well_group):
            raise InvalidImageError(f"{well_group}: listed in the plate metadata but missing; re-export the plate")
        fields = (_ome_attrs(_open_group(well_group)).get("well") or {}).get("images") or []
        col = f"{int(col_name):02d}" if col_name.isdigit() else col_name
        for site, field in enumerate(fields):
            field_path = str(field["path"])
            rows.append(
                {
                    "path": str(well_group / field_path),
                    "Metadata_ImageID": f"{prefix}/{well_path}/{field_path}",
                    "Metadata_Plate": name,
                    "Metadata_Well": f"{row_name}{col}",
                    "Metadata_WellRow": row_name,
                    "Metadata_WellColumn": col_name,
                    "Metadata_Site": site,
                }
            )
    if not rows:
        raise InvalidImageError(f"{path}: the plate lists no wells with fields; nothing to read")
    return rows


def _image_rows(path: Path, prefix: str) -> list[dict[str, Any]]:
    """Rows for a plate, a well, a bioformats2raw container or a single image at ``path``."""
    attrs = _ome_attrs(_open_group(path))
    if "plate" in attrs:
        return _rows_of_plate(path, attrs, prefix)
    if "well" in attrs:
        fields = attrs["well"].get("images") or []
        return [
            {"path": str(path / str(f["path"])), "Metadata_ImageID": f"{prefix}/{f['path']}", "Metadata_Site": site}
            for site, f in enumerate(fields)
        ]
    if "multiscales" in attrs:
        return [{"path": str(path), "Metadata_ImageID": prefix}]
    series = [p for p in sorted(path.iterdir(), key=lambda p: (len(p.name), p.name)) if p.name.isdigit()]
    if "bioformats2raw.layout" in attrs and series:
        return [
            {"path": str(s), "Metadata_ImageID": f"{prefix}/{s.name}", "Metadata_Site": int(s.name)}
            for s in series
            if is_zarr_group(s)
        ]
    raise InvalidImageError(
        f"{path}: no 'multiscales', 'plate' or 'well' metadata: not an OME-Zarr image or plate; "
        "convert it to OME-Zarr (NGFF 0.4/0.5) first"
    )


def omezarr_table(
    path: str | Path, *, level: int = 0, channels: ChannelSpec = None, id_prefix: str | None = None
) -> pd.DataFrame:
    """A source table (one row per image or field) of an OME-Zarr image, well or HCS plate.

    Plates give ``Metadata_Plate`` (the plate's name), ``Metadata_Well`` (``A01``), ``Metadata_Site``
    (field index in the well) and the row/column names; every row gets ``level``, ``channels`` and
    ``Metadata_Channels`` (the OMERO names read). The level and channels are checked on the first
    image here, so a wrong choice fails at once rather than image by image.
    """
    path = Path(path)
    rows = _image_rows(path, id_prefix or path.name)
    first = open_omezarr(rows[0]["path"], level=level)
    chosen = first.channel_indices(channels)
    table = pd.DataFrame(rows)
    table["level"] = level
    table["channels"] = "|".join(str(c) for c in chosen)
    table["Metadata_Channels"] = "|".join(first.channel_names[c] for c in chosen)
    return table


def parse_channels(value: object) -> list[int | str] | None:
    """Channels from a table cell or option: ``"0|2"``, ``"DAPI,Actin"`` or empty (all)."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    text = str(value).replace(",", "|").strip()
    if not text:
        return None
    return [int(c) if c.strip().isdigit() else c.strip() for c in text.split("|")]


def find_omezarr_roots(folder: str | Path) -> tuple[list[Path], list[Path]]:
    """OME-Zarr roots under ``folder`` and the other files, without walking into the Zarr chunks."""
    roots: list[Path] = []
    files: list[Path] = []
    for current, dirs, names in os.walk(folder):
        here = Path(current)
        if is_zarr_group(here):
            roots.append(here)
            dirs[:] = []
            continue
        dirs.sort()
        files.extend(here / n for n in sorted(names))
    return sorted(roots), files


def omezarr_root(path: str | Path) -> Path:
    """The outermost Zarr group holding ``path`` (the ``.zarr`` folder of a plate's field)."""
    root = Path(path)
    while is_zarr_group(root.parent):
        root = root.parent
    return root


def image_stem(path: str | Path) -> str:
    """A file's stem, or for an image inside an OME-Zarr the root's stem and the inner path (``plate_A_1_0``)."""
    p = Path(path)
    if not is_zarr_group(p):
        return p.stem
    root = omezarr_root(p)
    return "_".join([root.name.removesuffix(".zarr"), *p.relative_to(root).parts])
