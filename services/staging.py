"""Getting inputs in and results out: source tables (local, file:// or s3://) staged into self-contained
folders, and files archived in the object store by content hash with manifests."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import pandas as pd

from services.settings import PlatformSettings, settings_or_env


def archive_files(files: list[Path], *, kind: str, manifest: str, settings: PlatformSettings | None = None) -> str:
    """Store files by content hash under ``kind`` and write a manifest naming them; returns the manifest URI."""
    from services.storage import open_store

    store = open_store(settings_or_env(settings))
    objects = [store.put_file(f, kind=kind) for f in files if f.is_file()]
    return store.write_manifest(manifest_name(manifest), objects)


def manifest_name(text: str) -> str:
    """``text`` made a valid manifest name (one path segment): other characters become ``-``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text)


def content_digest(table: pd.DataFrame) -> str:
    """A short content digest of a table's ids (names manifests of the same inputs alike)."""
    column = "Metadata_ImageID" if "Metadata_ImageID" in table.columns else table.columns[0]
    return hashlib.sha256("\n".join(map(str, table[column])).encode()).hexdigest()[:12]


def fetch_source(source: str, dest: Path, settings: PlatformSettings) -> Path:
    """Download an ``s3://.../table.csv`` and the images it lists (relative to it, or ``s3://`` URIs) to ``dest``.

    Every download stays inside ``dest``: entries with ``..`` segments are refused.
    """
    from services.storage import contained, open_store

    root, _, name = source.rpartition("/")
    store = open_store(settings, root)
    dest.mkdir(parents=True, exist_ok=True)
    local = store.get_file(source, contained(dest, name))
    table = pd.read_parquet(local) if name.endswith(".parquet") else pd.read_csv(local)
    if "path" not in table.columns:
        raise ValueError(f"{source}: no 'path' column; list one image per row (relative to the table, or s3:// URIs)")
    if "Metadata_ImageID" not in table.columns:
        table["Metadata_ImageID"] = table["path"].astype(str)  # ids from the table, not from download paths
    paths = []
    for raw in table["path"].astype(str):
        uri = raw if raw.startswith("s3://") else f"{root}/{raw.lstrip('/')}"
        if any(part in (".", "..") for part in uri.removeprefix("s3://").split("/")):
            raise ValueError(f"{source}: path {raw!r} has '.' or '..' segments; list each image by its plain key")
        target = contained(dest / "files", uri.removeprefix("s3://"))
        target.parent.mkdir(parents=True, exist_ok=True)
        open_store(settings, uri.rpartition("/")[0]).get_file(uri, target)
        paths.append(str(target))
    table["path"] = paths
    fetched = dest / "table.csv"
    table.to_csv(fetched, index=False)
    return fetched


def fetch_folder(uri: str, dest: Path, settings: PlatformSettings | None = None) -> Path:
    """Download every object under ``s3://bucket/prefix`` into ``dest`` (same relative layout, never outside it)."""
    from services.storage import contained, open_store

    store = open_store(settings_or_env(settings), uri.rstrip("/"))
    uris = store.list_uris()
    if not uris:
        raise FileNotFoundError(f"{uri}: no objects under this prefix; upload the folder first")
    for item in uris:
        target = contained(dest, store.key_for(item))
        target.parent.mkdir(parents=True, exist_ok=True)
        store.get_file(item, target)
    return dest


def local_input(path: str, dest: Path, settings: PlatformSettings | None = None, *, table: bool = False) -> Path:
    """A local path for a step input: itself, or a download of an ``s3://`` table (with its files) or folder."""
    if not path.startswith("s3://"):
        return Path(path.removeprefix("file://"))
    if table:
        return fetch_source(path, dest, settings_or_env(settings))
    return fetch_folder(path, dest, settings)


def stage_source_step(
    source: str, out_dir: str, *, level: int = 0, settings: PlatformSettings | None = None
) -> dict[str, Any]:
    """Store a source table's images by content hash and copy them into a self-contained staged folder.

    The staged folder (``source.csv`` with paths relative to it, plus ``images/``) travels between
    pipeline steps as one artifact; ``Metadata_ImageURI`` points at the object store copy. ``source`` is
    a local path, ``file://`` URI or ``s3://`` URI of the table (a cluster step reads it from S3), or of
    an OME-Zarr image or HCS plate (``.zarr``): each field is staged at resolution ``level`` with
    ``Metadata_Plate``/``Metadata_Well``/``Metadata_Site`` (see :func:`omezarr_source`).
    """
    import tempfile

    from microsnoop.io.sources import source_from_table

    settings = settings_or_env(settings)
    with tempfile.TemporaryDirectory(prefix="source-") as tmp:
        if is_omezarr_source(source):
            table = omezarr_source(source, Path(tmp), settings, level=level)
        else:
            table = source_from_table(local_input(source, Path(tmp), settings, table=True))
        return _stage(table, Path(out_dir), source, settings)


def _stage(table: pd.DataFrame, out: Path, source: str, settings: PlatformSettings) -> dict[str, Any]:
    import shutil

    from services.storage import open_store

    store = open_store(settings)
    (out / "images").mkdir(parents=True, exist_ok=True)
    uris, paths, objects = [], [], []
    for path in table["path"]:
        stored = store.put_file(Path(path), kind="images")
        objects.append(stored)
        local = Path("images") / f"{stored.sha256}{Path(path).suffix.lower()}"
        if not (out / local).exists():
            shutil.copyfile(path, out / local)
        uris.append(stored.uri)
        paths.append(str(local))
    table["Metadata_ImageURI"], table["path"] = uris, paths
    table.to_csv(out / "source.csv", index=False)
    manifest = store.write_manifest(manifest_name(f"staged-{Path(source).stem}"), objects, extra={"source": source})
    return {"n_images": len(table), "manifest": manifest}


# -- OME-Zarr sources ----------------------------------------------------------------------------
ZARR_METADATA = ("zarr.json", ".zattrs", ".zgroup", ".zarray")


def is_omezarr_source(source: str) -> bool:
    """True when a step's source names an OME-Zarr (``*.zarr``, or a local Zarr group) rather than a table."""
    from microsnoop.io.omezarr import is_zarr_group

    plain = source.rstrip("/")
    return plain.endswith(".zarr") or (not plain.startswith("s3://") and is_zarr_group(plain.removeprefix("file://")))


def fetch_omezarr(uri: str, dest: Path, settings: PlatformSettings, *, level: int = 0) -> Path:
    """Download an OME-Zarr from ``s3://`` into ``dest``: all metadata, then the chunks of ``level`` only."""
    from microsnoop.io.omezarr import omezarr_table, open_omezarr
    from services.storage import open_store

    store = open_store(settings, uri.rstrip("/"))
    keys = {store.key_for(u): u for u in store.list_uris()}  # key_for refuses '..' segments
    if not keys:
        raise FileNotFoundError(f"{uri}: no objects under this prefix; upload the OME-Zarr folder first")
    root = dest / uri.rstrip("/").rpartition("/")[2]

    def get(key: str) -> None:
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        store.get_file(keys[key], root / key)

    metadata = [k for k in keys if k.rpartition("/")[2] in ZARR_METADATA]
    for key in metadata:
        get(key)
    arrays = []
    for path in omezarr_table(root, level=level)["path"]:
        image = open_omezarr(path, level=level)
        arrays.append(f"{Path(path).relative_to(root).as_posix()}/{image.dataset}/".removeprefix("./"))
    for key in sorted(set(keys) - set(metadata)):
        if any(key.startswith(prefix) for prefix in arrays):
            get(key)
    return root


def omezarr_source(source: str, work: Path, settings: PlatformSettings, *, level: int = 0) -> pd.DataFrame:
    """A source table of an OME-Zarr image or plate (local or ``s3://``): one ``.npy`` per field at ``level``.

    Fields are read one at a time (memory stays at one field); ``Metadata_SourceURI`` names each field
    in the original Zarr, and the plate layout becomes ``Metadata_Plate``/``Metadata_Well``/``Metadata_Site``.
    """
    import numpy as np

    from microsnoop.io.omezarr import image_stem, omezarr_table, read_omezarr

    plain = source.rstrip("/")
    root = fetch_omezarr(plain, work / "zarr", settings, level=level) if plain.startswith("s3://") else None
    root = root or Path(plain.removeprefix("file://"))
    table = omezarr_table(root, level=level)
    (work / "fields").mkdir(parents=True, exist_ok=True)
    paths, origins = [], []
    for path in table["path"]:
        target = work / "fields" / f"{image_stem(path)}.npy"
        np.save(target, read_omezarr(path, level=level))
        paths.append(str(target))
        origins.append(f"{plain}/{Path(path).relative_to(root).as_posix()}".removesuffix("/."))
    table["path"], table["Metadata_SourceURI"] = paths, origins
    return table.drop(columns=["level", "channels"])
