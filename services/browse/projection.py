"""2-D maps (UMAP or PCA) of one level's embeddings, computed once per (level, model version) and cached.

The cache is a Parquet file under ``data_dir/dashboard/maps``; it is reused while the level's row count
is unchanged (a new publish recomputes it), so a large store is projected once, not on every visit.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from services.browse.errors import BrowseError
from services.featurestore import FeatureStore
from services.settings import PlatformSettings

log = logging.getLogger(__name__)
METHODS = ("umap", "pca")
MAX_POINTS = 20_000
# Metadata a map can be coloured by, in the order offered (extra Metadata_* columns follow).
COLOUR_COLUMNS = ("label", "plate", "compound", "moa", "well", "dose", "image_id")


def flatten_metadata(frame: pd.DataFrame) -> pd.DataFrame:
    """Store rows with the ``extra`` JSON spread into ``Metadata_*`` columns (scalars only)."""
    out = frame.drop(columns=["extra"], errors="ignore").copy()
    if "extra" in frame and len(frame):
        extra = pd.DataFrame([e if isinstance(e, dict) else {} for e in frame["extra"]], index=frame.index)
        for col in extra.columns:
            if col not in out.columns:
                out[col] = extra[col]
    if "published_at" in out:
        out["published_at"] = out["published_at"].astype(str)
    return out


def colour_columns(frame: pd.DataFrame) -> list[str]:
    """Metadata columns with at least one value, worth colouring a map by."""
    extra = sorted(c for c in frame.columns if str(c).startswith("Metadata_") and c != "Metadata_ImageURI")
    return [c for c in (*COLOUR_COLUMNS, *extra) if c in frame.columns and frame[c].notna().any()]


def project(vectors: np.ndarray, *, method: str = "umap", seed: int = 0) -> np.ndarray:
    """``n x 2`` coordinates of ``n x d`` vectors (cosine UMAP, or PCA on L2-normalised rows)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    x = np.asarray(vectors, dtype=np.float32)
    n = len(x)
    if n < 3:
        raise BrowseError(f"{n} embeddings are too few for a map; publish at least 3")
    if method == "pca":
        from sklearn.decomposition import PCA

        norm = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        return PCA(n_components=2, random_state=seed).fit_transform(norm).astype(np.float32)
    import umap

    reducer = umap.UMAP(
        n_neighbors=min(15, n - 1), metric="cosine", random_state=seed, init="random" if n < 10 else "spectral"
    )
    return np.asarray(reducer.fit_transform(x), dtype=np.float32)


def _cache_path(settings: PlatformSettings, level: str, model_version: str, method: str) -> Path:
    digest = hashlib.sha1(model_version.encode()).hexdigest()[:12]
    return settings.data_dir / "dashboard" / "maps" / f"{level}-{method}-{digest}.parquet"


def embedding_map(
    store: FeatureStore,
    settings: PlatformSettings,
    level: str,
    model_version: str,
    *,
    method: str = "umap",
    max_points: int = MAX_POINTS,
) -> pd.DataFrame:
    """Metadata plus ``x``, ``y`` map coordinates of up to ``max_points`` entities (first by entity id).

    Computed once and cached on disk per (level, model version, method); recomputed when the level's
    row count changes.
    """
    path = _cache_path(settings, level, model_version, method)
    signature = {"rows": store.counts()[level], "max_points": max_points, "model_version": model_version}
    meta_path = path.with_suffix(".json")
    if path.is_file() and meta_path.is_file():
        try:
            if json.loads(meta_path.read_text()) == signature:
                return pd.read_parquet(path)
        except (ValueError, OSError) as exc:
            log.warning("ignoring unreadable map cache %s: %s", path, exc)
    frame, vectors = store.vectors(level, model_version=model_version, limit=max_points)
    if not len(frame):
        raise BrowseError(f"no {level} embeddings under model {model_version}; run the profiling pipeline")
    coords = project(vectors, method=method)
    out = flatten_metadata(frame)
    out["x"], out["y"] = coords[:, 0], coords[:, 1]
    out = _parquet_safe(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    out.to_parquet(path, index=False)
    meta_path.write_text(json.dumps(signature))
    log.info("projected %d %s embeddings of %s with %s -> %s", len(out), level, model_version, method, path)
    return out


def _parquet_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """Mixed-type object columns (lists, dicts from JSON) as text, so the frame round-trips through Parquet."""
    out = frame.copy()
    for col in out.columns:
        if out[col].dtype == object:
            kinds: set[Any] = {type(v) for v in out[col].dropna()}
            if len(kinds) > 1 or kinds - {str}:
                out[col] = [None if v is None else str(v) for v in out[col]]
    return out
