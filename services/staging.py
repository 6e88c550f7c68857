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
    """Download an ``s3://.../table.csv`` and the images it lists (relative to it, or ``s3://`` URIs) to ``dest``."""
    from services.storage import open_store

    root, _, name = source.rpartition("/")
    store = open_store(settings, root)
    dest.mkdir(parents=True, exist_ok=True)
    local = store.get_file(source, dest / name)
    table = pd.read_parquet(local) if name.endswith(".parquet") else pd.read_csv(local)
    if "path" not in table.columns:
        raise ValueError(f"{source}: no 'path' column; list one image per row (relative to the table, or s3:// URIs)")
    if "Metadata_ImageID" not in table.columns:
        table["Metadata_ImageID"] = table["path"].astype(str)  # ids from the table, not from download paths
    paths = []
    for raw in table["path"].astype(str):
        uri = raw if raw.startswith("s3://") else f"{root}/{raw.lstrip('/')}"
        target = dest / "files" / uri.removeprefix("s3://")
        target.parent.mkdir(parents=True, exist_ok=True)
        open_store(settings, uri.rpartition("/")[0]).get_file(uri, target)
        paths.append(str(target))
    table["path"] = paths
    fetched = dest / "table.csv"
    table.to_csv(fetched, index=False)
    return fetched


def fetch_folder(uri: str, dest: Path, settings: PlatformSettings | None = None) -> Path:
    """Download every object under ``s3://bucket/prefix`` into ``dest`` (same relative layout)."""
    from services.storage import open_store

    store = open_store(settings_or_env(settings), uri.rstrip("/"))
    uris = store.list_uris()
    if not uris:
        raise FileNotFoundError(f"{uri}: no objects under this prefix; upload the folder first")
    for item in uris:
        target = dest / store.key_for(item)
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


def stage_source_step(source: str, out_dir: str, *, settings: PlatformSettings | None = None) -> dict[str, Any]:
    """Store a source table's images by content hash and copy them into a self-contained staged folder.

    The staged folder (``source.csv`` with paths relative to it, plus ``images/``) travels between
    pipeline steps as one artifact; ``Metadata_ImageURI`` points at the object store copy. ``source`` is
    a local path, ``file://`` URI or ``s3://`` URI of the table (a cluster step reads it from S3).
    """
    import tempfile

    from microsnoop.io.sources import source_from_table

    settings = settings_or_env(settings)
    with tempfile.TemporaryDirectory(prefix="source-") as tmp:
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
