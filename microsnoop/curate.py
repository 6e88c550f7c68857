"""Pool curation: every channel of every image becomes a typed, split, hashed one-channel plane."""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from microsnoop.errors import ConfigError, InvalidImageError, ManifestError
from microsnoop.io.images import IMAGE_SUFFIXES, check_plane, read_image
from microsnoop.io.omezarr import find_omezarr_roots, image_stem, is_zarr_group, omezarr_root, omezarr_table

log = logging.getLogger(__name__)

IMAGE_TYPES = ("fluorescence", "brightfield", "tissue", "histology")
TYPE_ALIASES = {
    "phase-contrast": "brightfield",
    "phase": "brightfield",
    "phase_contrast": "brightfield",
    "brightfield": "brightfield",
    "fluorescence": "fluorescence",
    "tissue": "tissue",
    "histology": "histology",
    "he": "histology",
    "stained": "histology",
}
SPLIT_NAMES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val", "test": "val"}
MANIFEST_COLUMNS = [
    "plane_id",
    "source",
    "path",
    "type",
    "split",
    "channel",
    "height",
    "width",
    "dtype",
    "content_hash",
    "plane_path",
]


@dataclass(frozen=True)
class CurateConfig:
    """How a pool is built from input folders."""

    val_fraction: float = 0.2
    seed: int = 0
    max_side: int = 2048
    level: int = 0  # resolution level of OME-Zarr inputs (0: full resolution)

    def __post_init__(self) -> None:
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction must be in [0, 1), got {self.val_fraction}; e.g. --val-fraction 0.2")
        if self.max_side < 16:
            raise ConfigError(f"max_side must be at least 16 pixels, got {self.max_side}; e.g. --max-side 2048")


@dataclass
class CurateReport:
    """What curation kept and what it skipped, by reason, with the files named."""

    n_files: int = 0
    n_planes: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    duplicates: int = 0
    by_type: Counter[str] = field(default_factory=Counter)

    def summary(self) -> str:
        """A one-paragraph human summary."""
        reasons = Counter(r.split(":")[0] for _, r in self.skipped)
        return (
            f"{self.n_files} files -> {self.n_planes} one-channel planes "
            f"({', '.join(f'{k}: {v}' for k, v in sorted(self.by_type.items()))}); "
            f"skipped {len(self.skipped)} ({dict(reasons)}), {self.duplicates} duplicate planes"
        )


def normalize_type(name: str, *, where: str = "") -> str:
    """Map a user's type name (case-insensitive, aliases allowed) to one of ``IMAGE_TYPES``."""
    key = str(name).strip().lower()
    if key not in TYPE_ALIASES:
        raise ManifestError(f"{where}unknown image type {name!r}; use one of {IMAGE_TYPES} (or phase-contrast)")
    return TYPE_ALIASES[key]


def infer_type(image: np.ndarray) -> str:
    """Rule for untyped images: colour -> histology; dark background -> fluorescence; else brightfield."""
    if image.shape[0] >= 3 and not (np.array_equal(image[0], image[1]) and np.array_equal(image[1], image[2])):
        return "histology"
    plane = image[0].astype(np.float32)
    lo, med, hi = np.percentile(plane, [0.5, 50, 99.5])
    return "fluorescence" if (med - lo) < 0.25 * max(hi - lo, 1e-6) else "brightfield"


def split_from_path(path: Path) -> str | None:
    """A source's own split, read from a ``train``/``val``/``test`` folder in the path."""
    for part in path.parts[:-1]:
        if part.lower() in SPLIT_NAMES:
            return SPLIT_NAMES[part.lower()]
    return None


def hash_split(key: str, *, val_fraction: float, seed: int) -> str:
    """Deterministic hold-out: ``val`` for ``val_fraction`` of keys, the same for every run."""
    h = int(hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()[:12], 16)
    return "val" if (h % 10_000) < val_fraction * 10_000 else "train"


def plane_hash(plane: np.ndarray) -> str:
    """Content hash of a plane: dtype, shape and bytes."""
    digest = hashlib.sha256(f"{plane.dtype.str}{plane.shape}".encode())
    digest.update(np.ascontiguousarray(plane).tobytes())
    return digest.hexdigest()


def read_types_table(path: Path) -> dict[str, dict[str, str]]:
    """Read a CSV of ``path,type[,split][,source]`` (paths relative to the CSV) keyed by resolved path."""
    try:
        table = pd.read_csv(path, dtype=str)
    except pd.errors.ParserError as exc:
        detail = str(exc).strip().splitlines()[-1]
        raise ManifestError(f"{path}: malformed CSV ({detail}); check its quotes and commas") from exc
    except (UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise ManifestError(
            f"{path}: not a readable UTF-8 CSV ({exc.__class__.__name__}); write it as text with columns "
            "path,type[,split][,source]"
        ) from exc
    missing = {"path", "type"} - set(table.columns)
    if missing:
        raise ManifestError(
            f"{path}: missing columns {sorted(missing)}; a types table needs path,type[,split][,source]"
        )
    out: dict[str, dict[str, str]] = {}
    for number, row in enumerate(table.to_dict("records"), start=2):
        if not isinstance(row["path"], str) or not isinstance(row["type"], str):
            raise ManifestError(f"{path} line {number}: no path or no type (check the CSV's quotes and commas)")
        key = str((path.parent / str(row["path"])).resolve())
        out[key] = {k: str(v) for k, v in row.items() if isinstance(v, str) and k != "path"}
        out[key]["type"] = normalize_type(row["type"], where=f"{path}: ")
    return out


def list_images(inputs: list[Path]) -> list[Path]:
    """All image files under the given files or folders, sorted for reproducibility.

    An OME-Zarr image or plate (given, or found in a folder) lists its images (``plate.zarr/A/1/0``).
    """
    files: list[Path] = []
    for item in inputs:
        if item.is_dir():
            roots, found = find_omezarr_roots(item)
            files.extend(p for p in found if p.suffix.lower() in IMAGE_SUFFIXES)
            files.extend(Path(p) for root in roots for p in omezarr_table(root)["path"])
        elif item.is_file():
            files.append(item)
        else:
            raise FileNotFoundError(f"{item}: no such file or folder to curate")
    return sorted(set(files))


def _downscale(plane: np.ndarray, max_side: int) -> np.ndarray:
    step = int(np.ceil(max(plane.shape) / max_side))
    return plane[::step, ::step] if step > 1 else plane


def curate_pool(
    inputs: list[Path],
    out_dir: Path,
    *,
    types_table: Path | None = None,
    config: CurateConfig | None = None,
    progress: bool = True,
) -> tuple[pd.DataFrame, CurateReport]:
    """Build a pool under ``out_dir`` (``planes/*.npy`` + ``manifest.parquet``) from image files."""
    config = config or CurateConfig()
    types = read_types_table(types_table) if types_table else {}
    planes_dir = out_dir / "planes"
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"{out_dir} is a file; give --out a folder (new or an earlier pool)")
    try:
        planes_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create {planes_dir} ({exc.strerror}); give --out a writable folder") from exc
    report = CurateReport()
    rows: list[dict[str, object]] = []
    seen: set[str] = set()
    files = list_images(inputs) if inputs else sorted(Path(k) for k in types)
    if not files:
        raise FileNotFoundError("nothing to curate: give input folders/files or a types table listing the images")
    for path in tqdm(files, desc="curate", unit="file", disable=not progress):
        report.n_files += 1
        meta = types.get(str(path.resolve()), {})
        try:
            image = read_image(path, level=config.level)
            itype = meta.get("type") or infer_type(image)
            if image.shape[0] >= 3 and itype in ("histology", "brightfield") and meta.get("rgb") != "split":
                image = read_image(path, gray_rgb=True, level=config.level)
        except InvalidImageError as exc:
            report.skipped.append((str(path), f"unreadable: {exc}"))
            log.warning("skipped %s", exc)
            continue
        in_zarr = is_zarr_group(path)  # an OME-Zarr image: named by its root and inner path (plate_A_1_0)
        source = meta.get("source") or (omezarr_root(path).name.removesuffix(".zarr") if in_zarr else path.parent.name)
        name = image_stem(path) if in_zarr else path.name
        split = (
            meta.get("split")
            or split_from_path(path)
            or hash_split(f"{source}/{name}", val_fraction=config.val_fraction, seed=config.seed)
        )
        for channel, plane in enumerate(image):
            plane = _downscale(plane, config.max_side)
            try:
                check_plane(plane, path=path, channel=channel)
            except InvalidImageError as exc:
                reason = "constant" if "constant" in str(exc) else "non-finite" if "NaN" in str(exc) else "empty"
                report.skipped.append((f"{path}#{channel}", f"{reason}: {exc}"))
                log.warning("skipped %s", exc)
                continue
            digest = plane_hash(plane)
            if digest in seen:
                report.duplicates += 1
                continue
            seen.add(digest)
            rel = f"planes/{digest[:20]}.npy"
            np.save(out_dir / rel, plane)
            rows.append(
                {
                    "plane_id": digest[:20],
                    "source": source,
                    "path": str(path),
                    "type": itype,
                    "split": split,
                    "channel": channel,
                    "height": plane.shape[0],
                    "width": plane.shape[1],
                    "dtype": str(plane.dtype),
                    "content_hash": digest,
                    "plane_path": rel,
                }
            )
            report.n_planes += 1
            report.by_type[itype] += 1
    manifest = pd.DataFrame(rows, columns=MANIFEST_COLUMNS)
    manifest.to_parquet(out_dir / "manifest.parquet", index=False)
    (out_dir / "skipped.tsv").write_text("".join(f"{p}\t{r}\n" for p, r in report.skipped))
    log.info("pool %s: %s", out_dir, report.summary())
    return manifest, report


def manifest_hash(manifest: pd.DataFrame) -> str:
    """Identity of a pool: hash of its sorted content hashes, types and splits."""
    columns = zip(manifest["content_hash"], manifest["type"], manifest["split"], strict=True)
    keys = sorted(f"{h}:{t}:{s}" for h, t, s in columns)
    return hashlib.sha256("\n".join(keys).encode()).hexdigest()


def load_pool_manifest(pool_dir: Path) -> pd.DataFrame:
    """Read and validate ``pool_dir/manifest.parquet``."""
    path = pool_dir / "manifest.parquet"
    if not path.is_file():
        raise ManifestError(f"{path}: no pool manifest; build the pool with 'microsnoop curate' first")
    manifest = pd.read_parquet(path)
    missing = set(MANIFEST_COLUMNS) - set(manifest.columns)
    if missing:
        raise ManifestError(f"{path}: missing columns {sorted(missing)}; rebuild the pool")
    if manifest["plane_id"].duplicated().any():
        dup = manifest.loc[manifest["plane_id"].duplicated(), "plane_id"].iloc[0]
        raise ManifestError(f"{path}: duplicate plane_id {dup}; rebuild the pool")
    if manifest.empty:
        raise ManifestError(f"{path}: the pool is empty; check the inputs given to 'microsnoop curate'")
    return manifest
