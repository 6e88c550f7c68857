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
from collections.abc import Sequence
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


def shard_step(
    staged_dir: str,
    n_shards: int,
    *,
    intensity: str = "crop",
    model_ref: str = "champion",
    gray_rgb: bool = False,
    settings: PlatformSettings | None = None,
) -> list[dict[str, Any]]:
    """The shard plan; under ``intensity="dataset"`` every item also carries the intensity levels, fitted once
    on the whole staged folder with the model's percentiles, so that every shard embeds on one scale."""
    if intensity == "crop":
        return plan_shards(staged_dir, n_shards)
    from microsnoop.io.sources import source_from_table
    from microsnoop.models.checkpoint import load_checkpoint
    from microsnoop.protocol import with_embedding_options
    from microsnoop.stream import fit_source_levels
    from services.registry import resolve_encoder

    settings = settings_or_env(settings)
    contract = with_embedding_options(
        load_checkpoint(resolve_encoder(settings, model_ref)).preprocess, intensity=intensity
    )
    records = source_from_table(Path(staged_dir) / "source.csv").to_dict("records")
    levels = fit_source_levels(records, contract, gray_rgb=gray_rgb).intensity_levels
    log.info("shard plan: intensity levels %s fitted on the staged folder", levels)
    return plan_shards(staged_dir, n_shards, intensity_levels=levels)


def plan_shards(
    staged_dir: str, n_shards: int, *, intensity_levels: Sequence[Sequence[float]] = ()
) -> list[dict[str, Any]]:
    """The non-empty shards of a staged folder: index, count, key (content of its rows) and image count, and the
    intensity levels every shard embeds with (when given)."""
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
        item: dict[str, Any] = {"index": int(index), "n_shards": int(n_shards), "key": key, "n_images": len(rows)}
        if intensity_levels:
            item["intensity_levels"] = [[float(lo), float(hi)] for lo, hi in intensity_levels]
        plan.append(item)
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
    intensity: str = "crop",
    settings: PlatformSettings | None = None,
) -> dict[str, Any]:
    """Embed one segmented shard (restored from the object store when done before with the same model); under
    ``intensity="dataset"`` with the levels the shard plan carries."""
    from microsnoop.stream import levels_digest
    from services.registry import resolve_encoder
    from services.steps import embed_step, model_version_of

    _check_shard(shard)
    levels = shard.get("intensity_levels") or []
    if intensity == "dataset" and not levels:
        raise ShardError("this shard carries no intensity levels; plan the shards with intensity='dataset' too")
    if intensity != "dataset":
        levels = []
    settings = settings_or_env(settings)
    out = Path(out_dir)
    version = model_version_of(resolve_encoder(settings, model_ref), settings)
    scale = f"-dataset-{levels_digest(levels)}" if levels else ""  # per-crop runs keep their cache names
    name = manifest_name(f"shard-embeddings-{shard['key']}-{version}-{mode}-rc{rc:g}-g{int(gray_rgb)}{scale}")
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
        intensity=intensity,
        intensity_levels=levels,
        settings=settings,
    )
    summary = {**summary, "shard": int(shard["index"]), "key": shard["key"]}
    (out / SHARD_FILE).write_text(json.dumps(shard, sort_keys=True))
    save_folder(name, out, summary, settings)
    return {**summary, "cached": False}


def _sorted(df: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    by = [c for c in by if c in df.columns]
    return df.sort_values(by, kind="stable").reset_index(drop=True) if by and len(df) else df


def _common_run(found: dict[str, Path]) -> dict[str, Any] | None:
    """The run information every shard's embeddings share (model, contract, profile), or a one-line error."""
    from microsnoop.stream import read_run_info

    runs: list[dict[str, Any]] = []
    for key in sorted(found):
        path = found[key] / "embeddings.parquet"
        if path.is_file():
            info = read_run_info(path)
            runs.append({k: info[k] for k in ("model_id", "contract", "profile") if k in info})
    if not runs:
        return None
    if any(r != runs[0] for r in runs[1:]):
        raise ShardError("shards were embedded with different models, contracts or modes; re-run them with one set")
    return runs[0]


def merge_shards_step(shard_dirs: list[str], out_dir: str, *, plan: list[dict[str, Any]]) -> dict[str, Any]:
    """Gather shard embeddings by key into one embeddings folder, checking every planned shard is there once."""
    from microsnoop.stream import write_parquet

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
    run = _common_run(found)
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
        keep = {"microsnoop": json.dumps(run)} if run and name != "skipped.parquet" else {}
        write_parquet(merged, out / name, keep)  # the shards' contract (intensity levels) travels on to publish
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
