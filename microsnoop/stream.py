"""Task distribution: stream a source through the encoder in bounded memory, resumably.

Images are read in chunks sized by a CPU memory budget; each chunk is profiled (batches sized for the
device), written as its own Parquet part (atomically), and freed. A killed run restarted with the same
arguments skips the parts already written and gives identical output. Under ``torchrun`` each process
takes every WORLD_SIZE-th chunk; rank 0 merges.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch.distributed as dist
from tqdm.auto import tqdm

from microsnoop.config import PreprocessContract
from microsnoop.device import Runtime, precision_record
from microsnoop.embed import prepare_encoder
from microsnoop.errors import ChannelMismatchError, ConfigError, InvalidImageError
from microsnoop.io.sources import ID, StackCache, load_mask, load_row
from microsnoop.models.unet import MicrosnoopEncoder
from microsnoop.preprocess.crop import check_mask
from microsnoop.preprocess.normalize import check_levels, with_intensity_levels
from microsnoop.profile import ImageProfile, ProfileConfig, Segment, profile_images

log = logging.getLogger(__name__)
CROPS_PER_IMAGE_GUESS = {"single-cell": 1, "rescale": 1, "tile": 9, "cell-region": 64}
INTENSITY_SAMPLE = 512  # images read (evenly spaced) to fit intensity='dataset' levels


@dataclass(frozen=True)
class StreamConfig:
    """Memory budget, chunking and outputs of an embedding run."""

    memory_budget_mb: float = 1024.0
    chunk_images: int | None = None
    empty: str = "drop"
    write_h5ad: bool = False
    gray_rgb: bool = False  # RGB image files (histology, colour) become one gray channel, as in pretraining

    def __post_init__(self) -> None:
        if self.empty not in ("drop", "zero"):
            raise ConfigError(f"empty must be 'drop' or 'zero', got {self.empty!r}")
        if self.memory_budget_mb <= 0 or (self.chunk_images is not None and self.chunk_images <= 0):
            raise ConfigError("memory_budget_mb and chunk_images must be positive")


@dataclass
class EmbedResult:
    """What a run wrote and what it skipped."""

    embeddings: Path
    cells: Path | None
    n_images: int
    n_skipped: int
    chunks_done: int
    chunks_reused: int
    skipped: list[dict[str, str]] = field(default_factory=list)


def feature_names(n_channels: int, dim: int) -> list[str]:
    """Column names ``ch{c}_{k:03d}``: the channel is in every feature's name."""
    return [f"ch{c}_{k:03d}" for c in range(n_channels) for k in range(dim)]


def chunk_size(first_image: np.ndarray, contract: PreprocessContract, mode: str, config: StreamConfig) -> int:
    """Images per chunk so the prepared float32 planes of a chunk fit the CPU memory budget."""
    if config.chunk_images:
        return config.chunk_images
    c = first_image.shape[0]
    side = max(contract.input_size, *first_image.shape[-2:]) if mode == "single-cell" else contract.input_size
    per_image = c * side * side * 4 * CROPS_PER_IMAGE_GUESS[mode] + first_image.nbytes
    return int(np.clip(config.memory_budget_mb * 2**20 // (2 * per_image), 1, 8192))


def _fingerprint(
    source: pd.DataFrame,
    model_id: str,
    contract: PreprocessContract,
    profile: ProfileConfig,
    chunk: int,
    gray_rgb: bool = False,
) -> str:
    digest = hashlib.sha256()
    cols = [c for c in (ID, "path", "index", "mask_path", "level", "channels") if c in source.columns]
    digest.update(pd.util.hash_pandas_object(source[cols].astype(str), index=False).values.tobytes())
    recorded = contract.to_dict()
    if contract.intensity == "crop":  # only when another scale is set, so runs written before it resume as before
        recorded.pop("intensity")
        recorded.pop("intensity_levels")
    items: list[Any] = [model_id, recorded, asdict(profile), chunk]
    if gray_rgb:  # only when set, so runs written before this option resume as before
        items.append("gray_rgb")
    digest.update(json.dumps(items, sort_keys=True).encode())
    return digest.hexdigest()


def inputs_digest(source: pd.DataFrame) -> str:
    """SHA-256 over the content of every input file (images, stacks, masks): a file changed in place
    under the same path and size must not be reused on resume."""
    digest = hashlib.sha256()
    cols = [c for c in ("path", "mask_path") if c in source.columns]
    for name in sorted({str(p) for c in cols for p in source[c].dropna()}):
        digest.update(name.encode() + b"\0")
        path = Path(name)
        if path.is_file():
            with open(path, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()


def _part_usable(path: Path) -> bool:
    """True when a finished part file exists and reads back (a truncated one is computed again)."""
    if not path.exists():
        return False
    try:
        pq.read_metadata(path)
    except (OSError, pa.ArrowException) as exc:
        log.warning("%s is unreadable (%s); computing that chunk again", path, exc)
        path.unlink()
        return False
    return True


def _prepare_out(out_dir: Path, run_info: dict[str, Any], runtime: Runtime) -> None:
    parts = out_dir / "parts"
    run_file = out_dir / "run.json"
    if runtime.is_main:
        parts.mkdir(parents=True, exist_ok=True)
        if run_file.exists():
            try:
                old = json.loads(run_file.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise ConfigError(
                    f"{run_file}: corrupt ({exc}); delete {out_dir} to start over, or give a new --out folder"
                ) from exc
            if not isinstance(old, dict):
                raise ConfigError(f"{run_file}: not a run description; delete {out_dir} or give a new --out folder")
            stale = old.get("inputs_sha256") not in (None, run_info["inputs_sha256"])
            if old.get("fingerprint") != run_info["fingerprint"] or stale:
                raise ConfigError(
                    f"{out_dir}: holds a run with other inputs, model or settings; "
                    "give a new --out folder, or delete this one to start over"
                )
        else:
            run_file.write_text(json.dumps(run_info, indent=2))
    if runtime.world_size > 1:
        dist.barrier()


def write_parquet(table: pd.DataFrame, path: Path, metadata: dict[str, str]) -> None:
    """Write ``table`` to ``path`` atomically (temp file, then rename), ``metadata`` added to its schema."""
    arrow = pa.Table.from_pandas(table, preserve_index=False)
    arrow = arrow.replace_schema_metadata({**(arrow.schema.metadata or {}), **metadata})
    tmp = path.with_suffix(".tmp")
    pq.write_table(arrow, tmp)
    tmp.replace(path)


def _meta_columns(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k.startswith("Metadata_")}


def _load_chunk(
    rows: list[dict[str, Any]], cache: StackCache, n_channels: int | None, gray_rgb: bool = False
) -> tuple[list[dict[str, Any]], list[np.ndarray], list[np.ndarray | None], list[dict[str, str]]]:
    kept, images, masks, skipped = [], [], [], []
    for row in rows:
        where = f"{row['path']}" + (f"[{row['index']}]" if row.get("index") is not None else "")
        try:
            image = load_row(row, cache, gray_rgb=gray_rgb)
            if image.dtype.kind == "f" and not np.isfinite(image).all():
                raise InvalidImageError(f"{where}: contains NaN/Inf pixels; fix or drop the image")
            flat = image.reshape(image.shape[0], -1)
            if (flat.max(axis=1) == flat.min(axis=1)).all():
                raise InvalidImageError(f"{where}: every channel is constant (blank image); drop it")
            if n_channels is not None and image.shape[0] != n_channels:
                raise ChannelMismatchError(
                    f"{where}: has {image.shape[0]} channels but this run's images have {n_channels}; "
                    "embed sets with different channel counts separately, or pass gray_rgb (--gray-rgb) "
                    "to turn RGB files into one gray channel"
                )
            mask = load_mask(row)
            if mask is not None:
                check_mask(image, mask, path=where)
        except ChannelMismatchError:
            raise
        except InvalidImageError as exc:
            skipped.append({ID: str(row[ID]), "path": where, "reason": str(exc)})
            log.warning("skipped %s", exc)
            continue
        kept.append(row)
        images.append(image)
        masks.append(mask)
    return kept, images, masks, skipped


def _tables(
    rows: list[dict[str, Any]], profiles: list[ImageProfile], names: list[str], empty: str
) -> tuple[pd.DataFrame, pd.DataFrame, list[dict[str, str]]]:
    image_rows, cell_rows, skipped = [], [], []
    for row, prof in zip(rows, profiles, strict=True):
        meta = _meta_columns(row)
        emb = prof.embedding
        if emb is None:
            if empty == "drop":
                skipped.append({ID: str(row[ID]), "path": str(row["path"]), "reason": "no cells detected"})
                continue
            emb = np.zeros(len(names), np.float32)
        image_rows.append({**meta, "Metadata_n_cells": len(prof.cells), **dict(zip(names, emb, strict=True))})
        for box, vec in zip(prof.cells, prof.cell_embeddings if prof.cell_embeddings is not None else [], strict=True):
            cell_rows.append(
                {
                    **meta,
                    "Metadata_CellLabel": box.label,
                    "Metadata_BoxX0": box.x0,
                    "Metadata_BoxY0": box.y0,
                    "Metadata_BoxX1": box.x1,
                    "Metadata_BoxY1": box.y1,
                    "Metadata_CentroidY": box.centroid_y,
                    "Metadata_CentroidX": box.centroid_x,
                    **dict(zip(names, vec, strict=True)),
                }
            )
    return pd.DataFrame(image_rows), pd.DataFrame(cell_rows), skipped


def _first_readable(records: list[dict[str, Any]], cache: StackCache, gray_rgb: bool) -> np.ndarray:
    """The first image that loads (it sizes the chunks); unreadable ones are skipped later, not fatal here."""
    for row in records:
        try:
            return load_row(row, cache, gray_rgb=gray_rgb)
        except InvalidImageError as exc:
            log.warning("sizing chunks: %s", exc)
    raise InvalidImageError(f"none of the {len(records)} input images can be read; check the paths and formats")


def fit_source_levels(
    records: list[dict[str, Any]],
    contract: PreprocessContract,
    n_channels: int | None = None,
    *,
    gray_rgb: bool = False,
    sample: int = INTENSITY_SAMPLE,
) -> PreprocessContract:
    """The contract ready for the source: under ``intensity='dataset'`` without levels, levels fitted on up to
    ``sample`` evenly spaced readable images of ``n_channels`` channels (default: the first readable one's;
    fields in cell-region mode, cells in single-cell mode); each image is sampled as it is read, so memory
    stays bounded.

    Deterministic for a given source, so a resumed or re-run embedding fits the same levels.
    """
    if contract.intensity != "dataset" or contract.intensity_levels:
        return contract
    cache = StackCache()
    used = 0

    def readable() -> Iterator[np.ndarray]:
        nonlocal used, n_channels
        for i in np.unique(np.linspace(0, len(records) - 1, min(sample, len(records))).astype(int)):
            try:
                image = load_row(records[i], cache, gray_rgb=gray_rgb)
            except InvalidImageError as exc:
                log.warning("fitting intensity levels: %s", exc)
                continue
            if n_channels is None:
                n_channels = image.shape[0]
            if image.shape[0] == n_channels:  # another layout stops the run later, with a one-line error
                used += 1
                yield image

    fitted = with_intensity_levels(contract, readable())
    cache.clear()
    log.info("intensity levels fitted on %d images: %s", used, fitted.intensity_levels)
    return fitted


def _levels_for_all_ranks(
    records: list[dict[str, Any]], contract: PreprocessContract, n_channels: int, runtime: Runtime, gray_rgb: bool
) -> PreprocessContract:
    """Fit the levels once, on rank 0, and give every rank the same ones (a rank's read error must not move them)."""
    if runtime.world_size == 1 or not dist.is_initialized():
        return fit_source_levels(records, contract, n_channels, gray_rgb=gray_rgb)
    box: list[Any] = [fit_source_levels(records, contract, n_channels, gray_rgb=gray_rgb) if runtime.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def run_embedding(
    source: pd.DataFrame,
    out_dir: Path,
    encoder: MicrosnoopEncoder,
    contract: PreprocessContract,
    runtime: Runtime,
    *,
    model_id: str,
    profile: ProfileConfig,
    stream: StreamConfig | None = None,
    segment: Segment | None = None,
    progress: bool = True,
) -> EmbedResult:
    """Embed every row of ``source`` into ``out_dir/embeddings.parquet`` (and ``cells.parquet``)."""
    stream = stream or StreamConfig()
    records = source.to_dict("records")
    cache = StackCache()
    first = _first_readable(records, cache, stream.gray_rgb)
    if profile.mode == "cell-region" and profile.nucleus_channel >= first.shape[0]:
        raise ConfigError(
            f"nucleus_channel {profile.nucleus_channel} does not exist: the images have {first.shape[0]} channel(s); "
            f"pass --nucleus-channel between 0 and {first.shape[0] - 1}"
        )
    contract = _levels_for_all_ranks(records, contract, first.shape[0], runtime, stream.gray_rgb)
    check_levels(contract, {first.shape[0]})  # before run.json is written: a corrected rerun is not refused
    chunk = chunk_size(first, contract, profile.mode, stream)
    cache.clear()
    n_chunks = -(-len(records) // chunk)
    fingerprint = _fingerprint(source, model_id, contract, profile, chunk, stream.gray_rgb)
    run_info = {
        "fingerprint": fingerprint,
        "model_id": model_id,
        "contract": contract.to_dict(),
        "profile": asdict(profile),
        "chunk_images": chunk,
        "n_chunks": n_chunks,
        "n_images": len(records),
        "inputs_sha256": inputs_digest(source),
        "precision": precision_record(runtime),  # informative; a resume may run on another machine
    }
    _prepare_out(out_dir, run_info, runtime)
    metadata = {"microsnoop": json.dumps({k: v for k, v in run_info.items() if k != "n_chunks"})}
    encoder = prepare_encoder(encoder, runtime)  # same device and memory format as the inputs
    names = feature_names(first.shape[0], encoder.config.embedding_dim)
    n_channels = len(names) // encoder.config.embedding_dim
    cache.clear()
    done = reused = 0
    mine = range(runtime.rank, n_chunks, runtime.world_size)
    for k in tqdm(mine, desc="embed", unit="chunk", disable=not (progress and runtime.is_main)):
        part = out_dir / "parts" / f"images-{k:05d}.parquet"
        others = [out_dir / "parts" / f"{kind}-{k:05d}.parquet" for kind in ("skipped", "cells")]
        usable = _part_usable(part)
        for other in others:  # a corrupt companion part means the chunk is computed again
            if other.exists() and not _part_usable(other):
                usable = False
        if usable:
            reused += 1
            continue
        kept, images, masks, skipped = _load_chunk(
            records[k * chunk : (k + 1) * chunk], cache, n_channels, stream.gray_rgb
        )
        profiles = profile_images(encoder, images, contract, runtime, profile, masks=masks, segment=segment)
        images_df, cells_df, empty = _tables(kept, profiles, names, stream.empty)
        skipped_df = pd.DataFrame(skipped + empty, columns=[ID, "path", "reason"])
        # Parts other than images-*.parquet first: the images part marks the chunk as done.
        write_parquet(skipped_df, out_dir / "parts" / f"skipped-{k:05d}.parquet", metadata)
        if profile.mode == "cell-region":
            write_parquet(cells_df, out_dir / "parts" / f"cells-{k:05d}.parquet", metadata)
        write_parquet(images_df, part, metadata)
        cache.clear()
        del images, masks, profiles
        done += 1
    if runtime.world_size > 1:
        dist.barrier()
    result = EmbedResult(out_dir / "embeddings.parquet", None, 0, 0, done, reused)
    if runtime.is_main:
        result = _merge(out_dir, n_chunks, profile.mode == "cell-region", metadata, result, stream.write_h5ad)
    return result


def _merge(
    out_dir: Path, n_chunks: int, with_cells: bool, metadata: dict[str, str], result: EmbedResult, h5ad: bool
) -> EmbedResult:
    """Concatenate the parts in chunk order into the final files, streaming one part at a time."""
    kinds = ["images", "skipped"] + (["cells"] if with_cells else [])
    counts = {}
    for kind in kinds:
        parts = [out_dir / "parts" / f"{kind}-{k:05d}.parquet" for k in range(n_chunks)]
        target = out_dir / ("embeddings.parquet" if kind == "images" else f"{kind}.parquet")
        tables = [pq.read_table(p) for p in parts if p.exists()]
        tables = [t for t in tables if t.num_rows or kind == "images"]
        merged = pa.concat_tables(tables, promote_options="default") if tables else pa.table({})
        merged = merged.replace_schema_metadata({**(merged.schema.metadata or {}), **metadata})
        tmp = target.with_suffix(".tmp")
        pq.write_table(merged, tmp)
        tmp.replace(target)
        counts[kind] = merged.num_rows
    skipped = pd.read_parquet(out_dir / "skipped.parquet").to_dict("records") if counts["skipped"] else []
    result = EmbedResult(
        out_dir / "embeddings.parquet",
        out_dir / "cells.parquet" if with_cells else None,
        counts["images"],
        counts["skipped"],
        result.chunks_done,
        result.chunks_reused,
        skipped,
    )
    if h5ad:
        write_h5ad(out_dir / "embeddings.parquet", out_dir / "embeddings.h5ad")
    return result


def _run_of(metadata: dict[bytes, bytes] | None) -> dict[str, Any]:
    return dict(json.loads((metadata or {}).get(b"microsnoop", b"{}")))


def read_embeddings(path: Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """An embeddings table and the run information stored in its schema (model, contract, mode)."""
    table = pq.read_table(path)
    return table.to_pandas(), _run_of(table.schema.metadata)


def read_run_info(path: Path) -> dict[str, Any]:
    """The run information stored in an embeddings table's schema ({} when none), without reading its rows."""
    return _run_of(pq.read_schema(path).metadata)


def write_h5ad(parquet: Path, out: Path) -> Path:
    """AnnData copy of an embeddings table: X = features, obs = Metadata_*, uns = run information."""
    import anndata  # lazy: only needed on request

    df, info = read_embeddings(parquet)
    feats = [c for c in df.columns if not c.startswith("Metadata_")]
    obs = df[[c for c in df.columns if c.startswith("Metadata_")]].astype(str)
    obs.index = obs[ID].astype(str) if ID in obs else obs.index.astype(str)
    adata = anndata.AnnData(X=df[feats].to_numpy(np.float32), obs=obs, var=pd.DataFrame(index=feats))
    adata.uns["microsnoop"] = json.dumps(info)
    adata.write_h5ad(out)
    return out


def levels_digest(levels: Sequence[Sequence[float]]) -> str:
    """A short, stable name for a set of intensity levels (model versions and cache keys carry it).

    >>> levels_digest([(0.0, 1.0)])
    '054f4364'
    """
    return hashlib.sha256(json.dumps([[float(v) for v in pair] for pair in levels]).encode()).hexdigest()[:8]
