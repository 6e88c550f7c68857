"""Sharded profiling: split a staged folder by image content, segment and embed each shard, merge by key.

* **Split**: an image belongs to shard ``int(sha256[:16], 16) % n_shards`` of its content hash (the
  staged file name), so the split is deterministic and independent of row order. A shard's ``key`` is
  the SHA-256 of its rows (sorted by image hash, metadata included): the same images and metadata give
  the same key in every run.
* **Per-shard steps** keep their outputs in the object store under a manifest named by the shard key and
  the step's parameters (for embed: the resolved model version, mode, rc, gray_rgb). A step whose
  manifest exists restores it instead of computing, so a re-run recomputes only the shards that are
  missing, and a shard retried by the orchestrator redoes only itself.
* **Merge** gathers shard outputs by key (every planned key exactly once, or a one-line error naming the
  missing ones), never by order, and sorts rows by image id (cells by image id and label).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from services.settings import PlatformSettings, settings_or_env
from services.staging import manifest_name

log = logging.getLogger(__name__)

ID = "Metadata_ImageID"
SHARD_FILE = "shard.json"
_SHA = re.compile(r"[0-9a-f]{64}")


class ShardError(ValueError):
    """A shard plan or shard output that cannot be used; the message names the fix."""


def image_hash(staged_dir: Path, relative: str) -> str:
    """The content hash of a staged image: its file name (stage names files by SHA-256), else computed."""
    stem = Path(relative).name.split(".")[0]
    if _SHA.fullmatch(stem):
        return stem
    from services.storage import sha256_file

    return sha256_file(staged_dir / relative)


def shard_of(content_hash: str, n_shards: int) -> int:
    """The shard of an image: its content hash modulo the shard count."""
    return int(content_hash[:16], 16) % n_shards


def plan_shards(staged_dir: str, n_shards: int) -> list[dict[str, Any]]:
    """The non-empty shards of a staged folder: index, count, key (content of its rows) and image count."""
    if not 1 <= int(n_shards) <= 10_000:
        raise ShardError(f"n_shards must be between 1 and 10000, got {n_shards}")
    staged = Path(staged_dir)
    table = _source(staged)
    hashes = [image_hash(staged, p) for p in table["path"].astype(str)]
    table = table.assign(_hash=hashes, _shard=[shard_of(h, n_shards) for h in hashes])
    plan = []
    for index, rows in table.groupby("_shard", sort=True):
        rows = rows.sort_values(["_hash", ID] if ID in rows.columns else ["_hash"], kind="stable")
        body = rows.drop(columns=["_shard"]).to_csv(index=False).encode()
        key = hashlib.sha256(body).hexdigest()[:20]
        plan.append({"index": int(index), "n_shards": int(n_shards), "key": key, "n_images": len(rows)})
    return plan


def _source(folder: Path) -> pd.DataFrame:
    path = folder / "source.csv"
    if not path.is_file():
        raise ShardError(f"{folder}: no source.csv; pass the output folder of the stage step")
    return pd.read_csv(path)


def _check_shard(shard: dict[str, Any]) -> None:
    missing = {"index", "n_shards", "key"} - set(shard)
    if missing:
        raise ShardError(f"shard {shard!r} lacks {sorted(missing)}; pass an item of the shard step's output")


def write_shard(staged_dir: Path, shard: dict[str, Any], out_dir: Path) -> Path:
    """A self-contained staged folder holding only this shard's rows and images."""
    _check_shard(shard)
    table = _source(staged_dir)
    keep = [shard_of(image_hash(staged_dir, p), int(shard["n_shards"])) == int(shard["index"]) for p in table["path"]]
    rows = table[keep]
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    for rel in rows["path"].astype(str):
        target = out_dir / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            shutil.copyfile(staged_dir / rel, target)
    rows.to_csv(out_dir / "source.csv", index=False)
    return out_dir


def restore_folder(name: str, dest: Path, settings: PlatformSettings) -> dict[str, Any] | None:
    """Download a folder stored by :func:`save_folder` into dest; returns its summary, or None when not stored."""
    from services.storage import contained, open_store

    store = open_store(settings)
    uri = name if "://" in name else store.manifest_uri(name)
    if not store.exists(uri):
        return None
    body = store.read_manifest(uri)
    for entry in body["objects"]:
        store.get_file(entry["uri"], contained(dest, entry["name"]), sha256=entry["sha256"])
    return dict(body["extra"].get("summary", {}))


def save_folder(
    name: str, folder: Path, summary: dict[str, Any], settings: PlatformSettings, *, only: tuple[str, ...] = ()
) -> str:
    """Store a folder's files (relative names kept; ``parts/`` skipped; only these names if given); manifest URI."""
    from dataclasses import replace

    from services.storage import open_store

    store = open_store(settings)
    objects = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        relative = path.relative_to(folder)
        if "parts" in relative.parts or (only and str(relative) not in only):
            continue
        objects.append(replace(store.put_file(path, kind="folders"), name=str(relative)))
    return store.write_manifest(name, objects, extra={"summary": summary})


def segment_shard_step(
    staged_dir: str,
    out_dir: str,
    *,
    shard: dict[str, Any],
    channel: int = 0,
    segmenter: str = "auto",
    settings: PlatformSettings | None = None,
) -> dict[str, Any]:
    """Segment one shard of a staged folder (restored from the object store when this shard was done before)."""
    from services.steps import segment_step

    _check_shard(shard)
    settings = settings_or_env(settings)
    out = Path(out_dir)
    name = manifest_name(f"shard-segmented-{shard['key']}-{segmenter}-c{channel}")
    cached = restore_folder(name, out, settings)
    if cached is not None:
        log.info("segment: shard %s restored from %s", shard["index"], name)
        return {**cached, "cached": True}
    with tempfile.TemporaryDirectory(prefix="shard-") as tmp:
        part = write_shard(Path(staged_dir), shard, Path(tmp) / "staged")
        summary = segment_step(str(part), out_dir, channel=channel, segmenter=segmenter, settings=settings)
    summary = {**summary, "shard": int(shard["index"]), "key": shard["key"]}
    (out / SHARD_FILE).write_text(json.dumps(shard, sort_keys=True))
    save_folder(name, out, summary, settings)
    return {**summary, "cached": False}


def embed_shard_step(
    segmented_dir: str,
    out_dir: str,
    *,
    shard: dict[str, Any],
    model_ref: str = "champion",
    mode: str = "cell-region",
    rc: float = 1.0,
    gray_rgb: bool = False,
    device: str = "auto",
    settings: PlatformSettings | None = None,
) -> dict[str, Any]:
    """Embed one segmented shard (restored from the object store when done before with the same model)."""
    from services.registry import resolve_encoder
    from services.steps import embed_step, model_version_of

    _check_shard(shard)
    settings = settings_or_env(settings)
    out = Path(out_dir)
    version = model_version_of(resolve_encoder(settings, model_ref), settings)
    name = manifest_name(f"shard-embeddings-{shard['key']}-{version}-{mode}-rc{rc:g}-g{int(gray_rgb)}")
    cached = restore_folder(name, out, settings)
    if cached is not None:
        log.info("embed: shard %s restored from %s", shard["index"], name)
        return {**cached, "cached": True}
    summary = embed_step(
        segmented_dir,
        out_dir,
        model_ref=model_ref,
        mode=mode,
        rc=rc,
        gray_rgb=gray_rgb,
        device=device,
        settings=settings,
    )
    summary = {**summary, "shard": int(shard["index"]), "key": shard["key"]}
    (out / SHARD_FILE).write_text(json.dumps(shard, sort_keys=True))
    save_folder(name, out, summary, settings)
    return {**summary, "cached": False}


def _sorted(df: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    by = [c for c in by if c in df.columns]
    return df.sort_values(by, kind="stable").reset_index(drop=True) if by and len(df) else df


def merge_shards_step(shard_dirs: list[str], out_dir: str, *, plan: list[dict[str, Any]]) -> dict[str, Any]:
    """Gather shard embeddings by key into one embeddings folder, checking every planned shard is there once."""
    found: dict[str, Path] = {}
    for folder in map(Path, shard_dirs):
        info = folder / SHARD_FILE
        if not info.is_file():
            raise ShardError(f"{folder}: no {SHARD_FILE}; pass the outputs of the embed shard step")
        key = json.loads(info.read_text())["key"]
        if key in found:
            raise ShardError(f"shard {key} was given twice ({found[key]} and {folder}); pass each shard once")
        found[key] = folder
    planned = {s["key"] for s in plan}
    missing, extra = sorted(planned - set(found)), sorted(set(found) - planned)
    if missing or extra:
        raise ShardError(
            f"shard outputs do not match the plan: missing {missing}, unexpected {extra}; re-run the missing shards"
        )
    versions = {(found[k] / "model_version.txt").read_text().strip() for k in sorted(found)}
    if len(versions) != 1:
        raise ShardError(f"shards were embedded with different models {sorted(versions)}; re-run with one model_ref")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    counts = {}
    for name, by in (
        ("embeddings.parquet", [ID]),
        ("cells.parquet", [ID, "Metadata_CellLabel"]),
        ("skipped.parquet", [ID]),
    ):
        frames = [pd.read_parquet(found[k] / name) for k in sorted(found) if (found[k] / name).is_file()]
        frames = [f for f in frames if len(f.columns)]
        if not frames:
            continue
        merged = _sorted(pd.concat(frames, ignore_index=True), by)
        if name != "skipped.parquet" and merged.duplicated(by).any():
            raise ShardError(f"{name}: rows occur in two shards; re-plan the shards from one staged folder")
        merged.to_parquet(out / name, index=False)
        counts[name] = len(merged)
    version = versions.pop()
    (out / "model_version.txt").write_text(version)
    return {
        "model_version": version,
        "n_images": counts.get("embeddings.parquet", 0),
        "n_cells": counts.get("cells.parquet", 0),
        "n_skipped": counts.get("skipped.parquet", 0),
        "n_shards": len(found),
    }
