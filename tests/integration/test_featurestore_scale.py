"""Feature store at scale, against a real embedded PostgreSQL + pgvector: per-model partitions, the bulk and
insert publish paths, replace vs upsert, and the migration of stores made before partitioning."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg2
import pytest
from psycopg2 import sql

from services.featurestore import FeatureStore, StoreError
from services.featurestore.index import IndexConfig, IndexInfo, index_info
from services.featurestore.schema import index_name, partition_name
from services.settings import PlatformSettings
from tests.integration.test_featurestore import clustered, image_table

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def store(pg_dsn: str) -> Iterator[FeatureStore]:
    with FeatureStore(pg_dsn) as fs:
        yield fs


def _index_oid(store: FeatureStore, level: str, version: str) -> int | None:
    with store._transaction(vectors=False) as cur:
        cur.execute("SELECT to_regclass(%s)::oid", (index_name(level, version),))
        row = cur.fetchone()
    return None if row is None or row[0] is None else int(row[0])


def test_new_versions_load_in_bulk_and_small_updates_insert(store: FeatureStore) -> None:
    table = image_table(clustered(2000, 32, seed=11))
    first = store.publish("image", table, model_version="bulk-v1")
    assert first.method == "bulk" and first.total == 2000 and first.index_seconds > 0
    oid = _index_oid(store, "image", "bulk-v1")
    assert oid is not None

    few = image_table(clustered(100, 32, seed=12), prefix="new")  # 5 % of the rows held: keep the index
    small = store.publish("image", few, model_version="bulk-v1")
    assert (small.method, small.inserted, small.index_seconds) == ("insert", 100, 0.0)
    assert _index_oid(store, "image", "bulk-v1") == oid, "an insert must not rebuild the index"

    many = image_table(clustered(1000, 32, seed=13), prefix="more")  # 48 % of the rows held: rebuild once
    big = store.publish("image", many, model_version="bulk-v1")
    assert big.method == "bulk" and big.inserted == 1000
    assert _index_oid(store, "image", "bulk-v1") not in (None, oid)
    hits = store.search("image", model_version="bulk-v1", vector=many.filter(like="ch0_").to_numpy()[7], k=1)
    assert hits[0].entity_id == "more00007" and hits[0].distance == pytest.approx(0, abs=1e-4)


def test_replace_drops_rows_the_new_table_lacks_and_upsert_keeps_them(store: FeatureStore) -> None:
    old = image_table(clustered(300, 16, seed=21))
    store.publish("image", old, model_version="replace-v1")
    newer = image_table(clustered(200, 16, seed=22), prefix="img")  # ids img00000..img00199, new vectors

    upsert = store.publish("image", newer, model_version="replace-v1")
    assert (upsert.inserted, upsert.updated, upsert.deleted) == (0, 200, 0)
    assert len(store.page("image", model_version="replace-v1", limit=1000)) == 300  # img00200.. kept

    replaced = store.publish("image", newer, model_version="replace-v1", replace=True)
    assert (replaced.method, replaced.inserted, replaced.deleted) == ("bulk", 200, 300)
    ids = store.page("image", model_version="replace-v1", limit=1000)["entity_id"]
    assert sorted(ids) == sorted(newer["Metadata_ImageID"])
    got = store.get("image", ["img00005"], model_version="replace-v1")
    np.testing.assert_allclose(got["embedding"].iloc[0], newer.filter(like="ch0_").to_numpy()[5], rtol=1e-6)


def test_one_models_publish_never_touches_another_models_partition(store: FeatureStore) -> None:
    store.publish("image", image_table(clustered(500, 16, seed=31)), model_version="iso-a")
    store.publish("image", image_table(clustered(500, 16, seed=32)), model_version="iso-b")
    oid_a = _index_oid(store, "image", "iso-a")
    before = store.get("image", ["img00001"], model_version="iso-a")
    store.publish("image", image_table(clustered(800, 16, seed=33)), model_version="iso-b", replace=True)
    store.publish("image", image_table(clustered(900, 16, seed=34)), model_version="iso-b")
    assert _index_oid(store, "image", "iso-a") == oid_a
    after = store.get("image", ["img00001"], model_version="iso-a")
    np.testing.assert_array_equal(after["embedding"].iloc[0], before["embedding"].iloc[0])
    with store._transaction(vectors=False) as cur:
        cur.execute(
            "SELECT count(*) FROM pg_inherits WHERE inhparent = 'image_embeddings'::regclass AND inhrelid IN "
            "(to_regclass(%s), to_regclass(%s))",
            (partition_name("image", "iso-a"), partition_name("image", "iso-b")),
        )
        assert cur.fetchone()[0] == 2  # type: ignore[index]
        cur.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(partition_name("image", "iso-a"))))
        assert cur.fetchone()[0] == 500  # type: ignore[index]


LEGACY_DDL = """CREATE TABLE image_embeddings (
    model_version text NOT NULL, entity_id text NOT NULL, plate text, well text, compound text,
    dose double precision, moa text, label text, image_id text, cell_label bigint,
    box_x0 bigint, box_y0 bigint, box_x1 bigint, box_y1 bigint,
    extra jsonb NOT NULL DEFAULT '{}'::jsonb, published_at timestamptz NOT NULL DEFAULT now(),
    dim integer NOT NULL, embedding vector NOT NULL, PRIMARY KEY (model_version, entity_id))"""


def test_a_store_of_the_single_table_layout_is_migrated_on_open(pg_dsn: str) -> None:
    """An older store (one plain table per level, no image_uri column) opens with its rows in partitions."""
    dsn = pg_dsn
    x = clustered(50, 8, seed=41)
    admin = psycopg2.connect(dsn)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute("DROP DATABASE IF EXISTS legacy_store")
        cur.execute("CREATE DATABASE legacy_store")
    admin.close()
    legacy_dsn = dsn.replace("dbname=microsnoop", "dbname=legacy_store")
    conn = psycopg2.connect(legacy_dsn)
    with conn, conn.cursor() as cur:
        cur.execute("CREATE EXTENSION vector")
        cur.execute(LEGACY_DDL)
        for i, v in enumerate(x):
            cur.execute(
                "INSERT INTO image_embeddings (model_version, entity_id, plate, dim, embedding) "
                "VALUES (%s, %s, %s, 8, %s::vector)",
                ("old-v1" if i < 30 else "old-v2", f"img{i:05d}", "P1", str(v.tolist())),
            )
        cur.execute(
            "CREATE TABLE embedding_models (level text, model_version text, dim integer, "
            "created_at timestamptz DEFAULT clock_timestamp(), updated_at timestamptz DEFAULT clock_timestamp(), "
            "PRIMARY KEY (level, model_version))"
        )
        cur.execute("INSERT INTO embedding_models (level, model_version, dim) VALUES ('image', 'old-v1', 8)")
        cur.execute("INSERT INTO embedding_models (level, model_version, dim) VALUES ('image', 'old-v2', 8)")
    conn.close()
    with FeatureStore(legacy_dsn) as fs:
        assert len(fs.page("image", model_version="old-v1", limit=100)) == 30
        hits = fs.search("image", model_version="old-v2", vector=x[40], k=1)
        assert hits[0].entity_id == "img00040" and hits[0].metadata["plate"] == "P1"
        assert _index_oid(fs, "image", "old-v2") is not None
        fs.publish("image", image_table(clustered(5, 8, seed=42), prefix="n"), model_version="old-v1")
        assert len(fs.page("image", model_version="old-v1", limit=100)) == 35
    with FeatureStore(legacy_dsn) as again:  # opening a migrated store again changes nothing
        assert again.counts()["image"] == 55


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"m": 1}, "HNSW m must be"),
        ({"m": 32, "ef_construction": 40}, "at least 2 \\* m"),
        ({"ef_search": 0}, "ef_search must be"),
        ({"bulk_share": 1.5}, "bulk_share must be"),
        ({"max_build_memory_mb": 1}, "max_build_memory_mb"),
    ],
)
def test_index_config_rejects_bad_values(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(StoreError, match=message):
        IndexConfig(**kwargs)  # type: ignore[arg-type]


def test_index_config_sizes_the_build_and_chooses_the_path() -> None:
    config = IndexConfig()
    assert config.build_memory_mb(1_000_000, 256) > config.build_memory_mb(100_000, 256) >= 64
    assert config.build_memory_mb(10**9, 768) == config.max_build_memory_mb
    assert config.use_bulk(10, 0, replace=False) and config.use_bulk(10, 10**6, replace=True)
    hnsw = IndexInfo("hnsw")
    assert not config.use_bulk(2000, 100_000, replace=False, index=hnsw)
    assert config.use_bulk(20_000, 100_000, replace=False, index=hnsw)
    assert config.search_breadth(10, None) == config.ef_search and config.search_breadth(400, None) == 800
    assert config.search_breadth(10, 37) == 37


def test_feast_materialises_only_rows_published_since_its_last_run(
    store: FeatureStore, pg_settings: PlatformSettings, tmp_path: Path
) -> None:
    from feast import FeatureStore as FeastStore

    from services.featurestore.feast_repo import apply_feature_repo, online_features

    def treatments(names: list[str]) -> pd.DataFrame:
        table = pd.DataFrame({"Metadata_Compound": names, "Metadata_Concentration": [1.0] * len(names)})
        table["Metadata_MoA"] = [f"moa-{n}" for n in names]
        table[[f"f{k}" for k in range(4)]] = clustered(len(names), 4, seed=len(names))
        return table

    store.publish("treatment", treatments(["a", "b"]), model_version="inc-v1")
    repo = apply_feature_repo(pg_settings, repo_dir=tmp_path / "feast")
    first = FeastStore(repo_path=str(repo)).get_feature_view("treatment_metadata").most_recent_end_time
    assert first is not None
    store.publish("treatment", treatments(["c", "d", "e"]), model_version="inc-v1")
    apply_feature_repo(pg_settings, repo_dir=repo)
    intervals = FeastStore(repo_path=str(repo)).get_feature_view("treatment_metadata").materialization_intervals
    assert len(intervals) == 2 and intervals[1][0] == first  # the second run started where the first ended
    got = online_features(pg_settings, "treatment", ["a@1.0", "e@1.0"], model_version="inc-v1", repo_dir=repo)
    assert list(got["moa"]) == ["moa-a", "moa-e"]


def test_large_partitions_get_ivfflat_and_are_rebuilt_when_outgrown(pg_dsn: str) -> None:
    """With ivf_min_rows lowered to 1000, a 3000-row version gets IVFFlat (3 lists) and still finds its rows."""
    config = IndexConfig(ivf_min_rows=1000, ivf_probes=2)
    with FeatureStore(pg_dsn, index=config) as fs:
        x = clustered(3000, 32, seed=51)
        first = fs.publish("image", image_table(x), model_version="ivf-v1")
        with fs._transaction(vectors=False) as cur:
            assert index_info(cur, "image", "ivf-v1") == IndexInfo("ivfflat", 3)
        assert first.method == "bulk"
        recalls = []
        for qi in range(0, 3000, 150):
            exact = {h.entity_id for h in fs.search("image", model_version="ivf-v1", vector=x[qi], exact=True)}
            approx = fs.search("image", model_version="ivf-v1", vector=x[qi])
            assert approx[0].entity_id == f"img{qi:05d}"
            recalls.append(len(exact & {h.entity_id for h in approx}) / 10)
        assert np.mean(recalls) >= 0.9
        small = fs.publish("image", image_table(clustered(100, 32, seed=52), prefix="s"), model_version="ivf-v1")
        assert small.method == "insert"
        with fs._transaction(vectors=False) as cur:
            assert index_info(cur, "image", "ivf-v1") == IndexInfo("ivfflat", 3)
        hits = fs.search("image", model_version="ivf-v1", vector=x[5], k=5, filters={"plate": "P1"})
        assert len(hits) == 5 and all(h.metadata["plate"] == "P1" for h in hits)  # iterative scan fills k


def test_outgrown_indexes_take_the_bulk_path() -> None:
    config = IndexConfig()
    hnsw, ivf = IndexInfo("hnsw"), IndexInfo("ivfflat", 300)
    assert not config.use_bulk(10_000, 150_000, replace=False, index=hnsw)
    assert config.use_bulk(10_000, 195_000, replace=False, index=hnsw)  # crosses into IVFFlat's range
    assert not config.use_bulk(10_000, 1_000_000, replace=False, index=ivf)  # 1.01M < 4 x 300 lists x 1000
    assert config.use_bulk(10_000, 1_195_000, replace=False, index=ivf)
    assert config.use_bulk(10, 1000, replace=False, index=IndexInfo(""))  # no index at all
    assert IndexConfig.lists_for(3000) == 3 and IndexConfig.lists_for(4_000_000) == 2000
    assert config.probes(1000, None) == 10 and config.probes(1000, 400) == 40 and config.probes(3, None) == 3


def test_the_embedded_server_keeps_indexes_in_shared_buffers(store: FeatureStore) -> None:
    from services.featurestore.server import shared_buffers_mb

    with store._transaction(vectors=False) as cur:
        cur.execute("SELECT setting::bigint * 8 / 1024 FROM pg_settings WHERE name = 'shared_buffers'")
        assert cur.fetchone()[0] == shared_buffers_mb() >= 128  # type: ignore[index]


def test_indexes_are_back_in_shared_buffers_after_a_restart() -> None:
    """autoprewarm (pg_prewarm preloaded) dumps the buffer list at shutdown and reloads it at start, so the
    first queries after a restart do not read the ANN index from disk (1M x 256: first-pass p95 17 ms cold)."""
    from services.featurestore.server import ensure_postgres, stop_postgres
    from tests.integration._postgres import embedded_platform

    query = (
        "SELECT count(*), (SELECT pg_relation_size(to_regclass(%s)) / 8192) FROM pg_buffercache "
        "WHERE relfilenode = pg_relation_filenode(to_regclass(%s)) AND relforknumber = 0 "
        "AND reldatabase = (SELECT oid FROM pg_database WHERE datname = current_database())"
    )
    name = index_name("image", "warm")
    with embedded_platform("prewarm") as settings:
        with FeatureStore(ensure_postgres(settings)) as fs:
            fs.publish("image", image_table(clustered(3000, 32, seed=11)), model_version="warm")
            with fs._transaction(vectors=False) as cur:
                cur.execute("CREATE EXTENSION IF NOT EXISTS pg_buffercache")
        stop_postgres(settings)
        with FeatureStore(ensure_postgres(settings)) as fs, fs._transaction(vectors=False) as cur:
            deadline = time.monotonic() + 30  # the autoprewarm worker loads in the background just after start
            while True:
                cur.execute(query, (name, name))
                cached, blocks = cur.fetchone()  # type: ignore[misc]
                if cached >= blocks or time.monotonic() > deadline:
                    break
                cur.connection.commit()
                time.sleep(0.1)
    assert blocks > 0 and cached >= blocks


def test_a_model_version_holds_one_intensity_scale(store: FeatureStore, pg_dsn: str) -> None:
    table = image_table(clustered(40, 16, seed=3))
    levels = ((0.0, 100.0), (5.0, 60.0))
    store.publish("image", table, model_version="scaled", intensity_levels=levels)
    assert store.intensity_levels("image", "scaled") == levels
    assert store.publish("image", table, model_version="scaled", intensity_levels=levels).inserted == 0  # idempotent
    with pytest.raises(StoreError, match="per-crop intensity scale"):
        store.publish("image", table, model_version="scaled")
    with pytest.raises(StoreError, match="one version, one intensity scale"):
        store.publish("image", table, model_version="scaled", intensity_levels=((0.0, 50.0), (5.0, 60.0)))
    assert store.intensity_levels("image", "scaled") == levels  # the refused publishes changed nothing
    store.publish("image", table, model_version="scaled", replace=True)  # every row replaced: a new scale is fine
    assert store.intensity_levels("image", "scaled") == ()
    assert store.intensity_levels("image", "never-published") == ()
    # a store made before the column: a reader sees the per-crop scale, the next writer adds the column
    with store._transaction(vectors=False) as cur:
        cur.execute("ALTER TABLE embedding_models DROP COLUMN intensity_levels")
    from services.featurestore.store import ReadOnlyStore

    with ReadOnlyStore(pg_dsn) as reader:
        assert reader.intensity_levels("image", "scaled") == ()
    with FeatureStore(pg_dsn) as writer:
        writer.publish("image", table, model_version="scaled-again", intensity_levels=levels)
        assert writer.intensity_levels("image", "scaled-again") == levels
