"""Readable distances: published vectors centred per model version, raw queries centred the same way.

Real embedded PostgreSQL + pgvector (the ``pg_dsn`` fixture); the vectors mimic raw Microsnoop embeddings
(one dominant shared direction plus small cell-specific parts).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from services.featurestore import FeatureStore, StoreError
from services.featurestore.centering import apply_centre, fit_centre
from services.settings import PlatformSettings
from services.steps import publish_step

pytestmark = pytest.mark.integration


def crowded(n: int, dim: int = 32, seed: int = 0) -> np.ndarray:
    """Unit vectors sharing one direction (median pairwise cosine > 0.99), in 4 clusters of small offsets."""
    rng = np.random.default_rng(seed)
    common = np.ones(dim)
    offsets = rng.normal(size=(4, dim)) * 0.05
    x = common + offsets[np.arange(n) % 4] + 0.01 * rng.normal(size=(n, dim))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def embeddings_dir(tmp: Path, x: np.ndarray) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    meta = pd.DataFrame({"Metadata_ImageID": [f"im{i:03d}" for i in range(len(x))], "Metadata_Plate": "P1"})
    feats = pd.DataFrame(x.astype(np.float32), columns=[f"ch0_{k:03d}" for k in range(x.shape[1])])
    pd.concat([meta, feats], axis=1).to_parquet(tmp / "embeddings.parquet")
    return tmp


def median_cosine(x: np.ndarray) -> float:
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    c = u @ u.T
    return float(np.median(c[np.triu_indices(len(c), 1)]))


def test_centring_spreads_crowded_vectors_and_keeps_the_ranking() -> None:
    x = crowded(200)
    assert median_cosine(x) > 0.99
    y = apply_centre(x, fit_centre(x))
    assert median_cosine(y) < 0.5
    # same-cluster neighbours stay neighbours
    q = 0
    raw_nn = np.argsort(-(x @ x[q]))[1:6]
    cen_nn = np.argsort(-(y @ y[q]))[1:6]
    assert all(i % 4 == 0 for i in raw_nn) and all(i % 4 == 0 for i in cen_nn)


def test_publish_centres_and_raw_queries_land_in_the_same_space(
    pg_dsn: str, pg_settings: PlatformSettings, tmp_path: Path
) -> None:
    x = crowded(120)
    publish_step(str(embeddings_dir(tmp_path / "run", x)), model_version="centred-v1", settings=pg_settings)
    with FeatureStore(pg_dsn) as store:
        centre = store.centre("image", "centred-v1")
        assert centre is not None and np.allclose(centre, x.mean(axis=0), atol=1e-6)
        by_id = store.search("image", model_version="centred-v1", entity_id="im000", k=5)
        by_raw = store.search("image", model_version="centred-v1", vector=x[0], k=6)
        assert by_raw[0].entity_id == "im000" and by_raw[0].distance < 1e-4
        assert [h.entity_id for h in by_raw[1:]] == [h.entity_id for h in by_id]
        assert np.median([h.distance for h in by_id]) > 1e-2  # readable, not 1e-7
        # a second publish of more rows keeps the first centre (stored vectors stay comparable)
        more = crowded(40, seed=1)
        publish_step(str(embeddings_dir(tmp_path / "more", more)), model_version="centred-v1", settings=pg_settings)
        assert np.allclose(store.centre("image", "centred-v1"), centre)


def test_raw_publish_stores_no_centre(pg_dsn: str, pg_settings: PlatformSettings, tmp_path: Path) -> None:
    x = crowded(30)
    publish_step(str(embeddings_dir(tmp_path / "raw", x)), model_version="raw-v1", centre=False, settings=pg_settings)
    with FeatureStore(pg_dsn) as store:
        assert store.centre("image", "raw-v1") is None
        hits = store.search("image", model_version="raw-v1", vector=x[3], k=1)
        assert hits[0].entity_id == "im003"


def test_publish_keeps_the_dataset_intensity_levels_of_the_run(
    pg_dsn: str, pg_settings: PlatformSettings, tmp_path: Path
) -> None:
    """A run embedded on one dataset scale (run.json / Parquet metadata) publishes its levels with the version."""
    import json

    import pyarrow.parquet as pq

    run = embeddings_dir(tmp_path / "scaled", crowded(12))
    table = pq.read_table(run / "embeddings.parquet")
    info = {"contract": {"intensity": "dataset", "intensity_levels": [[10.0, 900.0]]}}
    pq.write_table(
        table.replace_schema_metadata({b"microsnoop": json.dumps(info).encode()}), run / "embeddings.parquet"
    )
    publish_step(str(run), model_version="scaled-v1", settings=pg_settings)
    with FeatureStore(pg_dsn) as store:
        assert store.intensity_levels("image", "scaled-v1") == ((10.0, 900.0),)
    with pytest.raises(StoreError, match="one version, one intensity scale"):  # a per-crop run may not join it
        publish_step(
            str(embeddings_dir(tmp_path / "crop", crowded(12, seed=1))), model_version="scaled-v1", settings=pg_settings
        )
