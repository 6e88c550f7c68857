"""The feature store against a real embedded PostgreSQL + pgvector server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from services.featurestore import FeatureStore, NotFoundError, StoreError
from services.featurestore.feast_repo import apply_feature_repo, online_features
from services.featurestore.schema import partition_name
from services.featurestore.server import ensure_postgres, stop_postgres
from services.settings import PlatformSettings

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def clustered(n: int, dim: int, *, seed: int = 0, clusters: int = 20) -> np.ndarray:
    """Unit vectors drawn around a few random centres (closer to real embeddings than uniform noise)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim))
    x = centres[rng.integers(clusters, size=n)] + 0.6 * rng.normal(size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def image_table(x: np.ndarray, *, prefix: str = "img") -> pd.DataFrame:
    n = len(x)
    meta = pd.DataFrame(
        {
            "Metadata_ImageID": [f"{prefix}{i:05d}" for i in range(n)],
            "Metadata_Plate": [f"P{i % 4}" for i in range(n)],
            "Metadata_Well": [f"W{i % 96:02d}" for i in range(n)],
            "Metadata_Compound": [f"cmpd{i % 25}" for i in range(n)],
            "Metadata_Label": ["rare" if i % 37 == 0 else "common" for i in range(n)],
            "Metadata_Site": [i % 9 for i in range(n)],
        }
    )
    feats = pd.DataFrame(x, columns=[f"ch0_{k:03d}" for k in range(x.shape[1])])
    return pd.concat([meta, feats], axis=1)


def exact_neighbours(x: np.ndarray, q: np.ndarray, k: int, mask: np.ndarray | None = None) -> list[int]:
    d = 1 - (x @ q) / (np.linalg.norm(x, axis=1) * np.linalg.norm(q))
    if mask is not None:
        d = np.where(mask, d, np.inf)
    return [int(i) for i in np.argsort(d, kind="stable")[:k]]


@pytest.fixture(scope="module")
def store(pg_dsn: str) -> Iterator[FeatureStore]:
    with FeatureStore(pg_dsn) as fs:
        yield fs


@pytest.fixture(scope="module")
def searchable(store: FeatureStore) -> tuple[str, np.ndarray, pd.DataFrame]:
    """3000 clustered 64-d image embeddings published as model 'search-v1'."""
    x = clustered(3000, 64)
    table = image_table(x)
    store.publish("image", table, model_version="search-v1")
    return "search-v1", x, table


def test_publish_twice_keeps_rows_and_update_changes_values(store: FeatureStore) -> None:
    x = clustered(200, 16, seed=1)
    table = image_table(x)
    first = store.publish("image", table, model_version="idem-v1")
    assert (first.inserted, first.updated, first.total) == (200, 0, 200)
    again = store.publish("image", table, model_version="idem-v1")
    assert (again.inserted, again.updated, again.total) == (0, 200, 200)
    assert len(store.page("image", model_version="idem-v1", limit=1000)) == 200

    changed = table.iloc[:10].copy()
    changed["Metadata_Plate"] = "NEW"
    changed[[f"ch0_{k:03d}" for k in range(16)]] = clustered(10, 16, seed=2)
    result = store.publish("image", changed, model_version="idem-v1")
    assert (result.inserted, result.updated) == (0, 10)
    got = store.get("image", ["img00003", "img00150"], model_version="idem-v1")
    assert list(got["entity_id"]) == ["img00003", "img00150"]
    assert list(got["plate"]) == ["NEW", "P2"]
    np.testing.assert_allclose(got["embedding"].iloc[0], clustered(10, 16, seed=2)[3], rtol=1e-6)
    assert got["extra"].iloc[1] == {"Metadata_Site": 150 % 9}
    assert "idem-v1" in store.model_versions("image")
    assert store.counts()["image"] >= 200


def test_exact_search_equals_numpy_and_hnsw_recall_is_high(
    store: FeatureStore, searchable: tuple[str, np.ndarray, pd.DataFrame]
) -> None:
    version, x, table = searchable
    rng = np.random.default_rng(5)
    recalls = []
    for qi in rng.choice(len(x), size=20, replace=False):
        truth = [table["Metadata_ImageID"][i] for i in exact_neighbours(x, x[qi], 11) if i != qi][:10]
        exact = store.search("image", model_version=version, entity_id=table["Metadata_ImageID"][qi], exact=True)
        assert [h.entity_id for h in exact] == truth
        approx = store.search("image", model_version=version, entity_id=table["Metadata_ImageID"][qi])
        recalls.append(len({h.entity_id for h in approx} & set(truth)) / 10)
        wide = store.search("image", model_version=version, entity_id=table["Metadata_ImageID"][qi], ef_search=1000)
        assert len({h.entity_id for h in wide} & set(truth)) >= len({h.entity_id for h in approx} & set(truth)) - 1
    assert np.mean(recalls) >= 0.9
    by_vector = store.search("image", model_version=version, vector=x[7], k=1, exact=True)
    assert by_vector[0].entity_id == "img00007" and by_vector[0].distance == pytest.approx(0, abs=1e-5)


def test_search_uses_the_hnsw_index(store: FeatureStore, searchable: tuple[str, np.ndarray, pd.DataFrame]) -> None:
    version, x, _ = searchable
    part = partition_name("image", version)
    with store._transaction() as cur:
        cur.execute(
            f"EXPLAIN SELECT entity_id FROM {part} WHERE model_version = %s "
            "ORDER BY (embedding::halfvec(64)) <=> %s::halfvec(64) LIMIT 10",
            (version, x[0]),
        )
        plan = "\n".join(r[0] for r in cur.fetchall())
    assert f"{part}_hnsw" in plan, plan  # without disabling sequential scans: the planner picks the index


def test_filters_and_exclude_same(store: FeatureStore, searchable: tuple[str, np.ndarray, pd.DataFrame]) -> None:
    version, x, table = searchable
    rare = (table["Metadata_Label"] == "rare").to_numpy()  # 1 in 37 rows: a filter that starves a plain HNSW scan
    hits = store.search("image", model_version=version, vector=x[1], k=20, filters={"label": "rare"})
    truth = [table["Metadata_ImageID"][i] for i in exact_neighbours(x, x[1], 20, rare)]
    assert len(hits) == 20 and all(h.metadata["label"] == "rare" for h in hits)
    assert len({h.entity_id for h in hits} & set(truth)) >= 18
    query = table.iloc[2]
    hits = store.search(
        "image", model_version=version, entity_id=query["Metadata_ImageID"], k=15, exclude_same=("compound", "plate")
    )
    assert len(hits) == 15
    assert all(h.metadata["compound"] != query["Metadata_Compound"] for h in hits)
    assert all(h.metadata["plate"] != query["Metadata_Plate"] for h in hits)
    assert store.page("image", model_version=version, filters={"plate": "P1"}, limit=5)["plate"].eq("P1").all()


def test_bad_queries_raise_clear_errors(store: FeatureStore, searchable: tuple[str, np.ndarray, pd.DataFrame]) -> None:
    version, x, _ = searchable
    with pytest.raises(StoreError, match="unknown level"):
        store.search("nucleus", model_version=version, vector=x[0])
    with pytest.raises(StoreError, match="cannot filter on"):
        store.search("image", model_version=version, vector=x[0], filters={"plate; DROP TABLE x": "1"})
    with pytest.raises(StoreError, match="k must be between"):
        store.search("image", model_version=version, vector=x[0], k=1001)
    with pytest.raises(StoreError, match="ef_search must be between"):
        store.search("image", model_version=version, vector=x[0], ef_search=0)
    with pytest.raises(StoreError, match="64 finite numbers"):
        store.search("image", model_version=version, vector=x[0, :10])
    with pytest.raises(NotFoundError, match="no image entity"):
        store.search("image", model_version=version, entity_id="nope")
    with pytest.raises(NotFoundError, match="published versions"):
        store.search("image", model_version="never", vector=x[0])


def test_invalid_tables_write_nothing(store: FeatureStore) -> None:
    x = clustered(50, 8, seed=3)
    table = image_table(x)
    store.publish("image", table, model_version="invalid-v1")
    before = store.get("image", ["img00000"], model_version="invalid-v1")

    nan = table.copy()
    nan.loc[5, "ch0_003"] = np.nan
    nan["Metadata_Plate"] = "CHANGED"
    with pytest.raises(StoreError, match="NaN/inf"):
        store.publish("image", nan, model_version="invalid-v1")
    dup = pd.concat([table, table.iloc[[4, 9]]], ignore_index=True)
    with pytest.raises(StoreError, match=r"2 entity ids occur more than once.*img00004"):
        store.publish("image", dup, model_version="invalid-v1")
    with pytest.raises(StoreError, match="lacks Metadata_CellLabel"):
        store.publish("cell", table, model_version="invalid-v1")
    with pytest.raises(StoreError, match="holds 8-d vectors"):
        store.publish("image", image_table(clustered(5, 9)), model_version="invalid-v1")

    after = store.get("image", ["img00000"], model_version="invalid-v1")
    assert after["plate"].iloc[0] == before["plate"].iloc[0] == "P0"
    assert len(store.page("image", model_version="invalid-v1", limit=1000)) == 50


def test_failure_inside_the_transaction_keeps_the_previous_state(
    store: FeatureStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    table = image_table(clustered(100, 8, seed=4))
    store.publish("image", table, model_version="atomic-v1")
    changed = image_table(clustered(150, 8, seed=5))
    changed["Metadata_Plate"] = "CHANGED"

    def fail(self: FeatureStore) -> None:
        raise RuntimeError("injected failure after COPY and upsert")

    monkeypatch.setattr(FeatureStore, "_before_commit", fail)
    with pytest.raises(RuntimeError, match="injected"):
        store.publish("image", changed, model_version="atomic-v1")
    with pytest.raises(RuntimeError, match="injected"):
        store.publish("image", changed, model_version="atomic-new")
    monkeypatch.undo()
    page = store.page("image", model_version="atomic-v1", limit=1000)
    assert len(page) == 100 and not page["plate"].eq("CHANGED").any()
    assert "atomic-new" not in store.model_versions("image")


KILLED_PUBLISH = """
import sys, time
import numpy as np, pandas as pd
from services.featurestore.store import FeatureStore

class Paused(FeatureStore):
    def _before_commit(self):
        print("IN_TRANSACTION", flush=True)
        time.sleep(120)

x = np.random.default_rng(0).normal(size=(300, 8)).astype("float32")
table = pd.DataFrame(x, columns=[f"ch0_{k:03d}" for k in range(8)])
table.insert(0, "Metadata_ImageID", [f"img{i:05d}" for i in range(300)])
table.insert(1, "Metadata_Plate", "KILLED")
Paused(sys.argv[1]).publish("image", table, model_version="killed-v1")
"""


def test_publish_killed_mid_transaction_leaves_the_store_consistent(store: FeatureStore, pg_dsn: str) -> None:
    store.publish("image", image_table(clustered(100, 8, seed=6)), model_version="killed-v1")
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(KILLED_PUBLISH), pg_dsn],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "IN_TRANSACTION"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        proc.kill()
    page = store.page("image", model_version="killed-v1", limit=1000)
    assert len(page) == 100 and not page["plate"].eq("KILLED").any()
    again = store.publish("image", image_table(clustered(100, 8, seed=6)), model_version="killed-v1")
    assert again.updated == 100  # the dead session's locks are gone


def test_levels_build_their_ids(store: FeatureStore) -> None:
    cells = pd.DataFrame(
        {
            "Metadata_ImageID": ["a", "a", "b"],
            "Metadata_CellLabel": [1, 2, 1],
            "Metadata_BoxX0": [0, 5, 1],
            "Metadata_BoxY0": [0, 5, 1],
            "Metadata_BoxX1": [4, 9, 6],
            "Metadata_BoxY1": [4, 9, 6],
        }
    )
    cells[["ch0_000", "ch1_000"]] = clustered(3, 2, seed=7)
    store.publish("cell", cells, model_version="levels-v1")
    got = store.get("cell", ["a:2", "b:1"], model_version="levels-v1")
    assert list(got["entity_id"]) == ["a:2", "b:1"] and list(got["box_x1"]) == [9, 6]
    treatments = pd.DataFrame(
        {"Metadata_Compound": ["taxol", "taxol"], "Metadata_Concentration": [0.1, 1.0], "Metadata_MoA": ["MT", "MT"]}
    )
    treatments["Metadata_n"] = [3, 4]
    treatments[["f0", "f1", "f2"]] = clustered(2, 3, seed=8)
    store.publish("treatment", treatments, model_version="levels-v1")
    meta, matrix = store.vectors("treatment", model_version="levels-v1")
    assert list(meta["entity_id"]) == ["taxol@0.1", "taxol@1.0"] and matrix.shape == (2, 3)
    assert list(meta["dose"]) == [0.1, 1.0] and meta["extra"].iloc[1] == {"Metadata_n": 4}


def test_feast_apply_and_online_features(store: FeatureStore, pg_settings: PlatformSettings, tmp_path: Path) -> None:
    treatments = pd.DataFrame(
        {
            "Metadata_Compound": ["taxol", "nocodazole", "dmso"],
            "Metadata_Concentration": [1.0, 3.0, 0.0],
            "Metadata_MoA": ["Microtubule stabilizers", "Microtubule destabilizers", "DMSO"],
            "Metadata_n": [12, 8, 96],
        }
    )
    treatments[[f"ch0_{k:03d}" for k in range(4)]] = clustered(3, 4, seed=9)
    store.publish("treatment", treatments, model_version="feast-v1")
    repo = apply_feature_repo(pg_settings, repo_dir=tmp_path / "feast")
    assert (repo / "feature_store.yaml").exists() and (repo / "registry.db").exists()
    # the password stays out of the file (Feast's ${VAR} substitution), yet the store connected with it
    assert "password: ${MICROSNOOP_FEAST_PG_PASSWORD}" in (repo / "feature_store.yaml").read_text()
    got = online_features(
        pg_settings, "treatment", ["nocodazole@3.0", "taxol@1.0", "absent@1"], model_version="feast-v1", repo_dir=repo
    )
    assert list(got["treatment_id"]) == ["nocodazole@3.0", "taxol@1.0", "absent@1"]
    assert list(got["moa"][:2]) == ["Microtubule destabilizers", "Microtubule stabilizers"]
    assert list(got["n"][:2]) == [8, 12] and got["dose"].iloc[0] == 3.0
    assert pd.isna(got["moa"].iloc[2])


CONCURRENT_START = """
import sys
from pathlib import Path
from services.featurestore.server import ensure_postgres
from services.settings import PlatformSettings
print(ensure_postgres(PlatformSettings().with_data_dir(Path(sys.argv[1]))), flush=True)
"""


def test_ensure_postgres_from_two_processes_starts_one_server(pg_tmp_dir: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CONCURRENT_START, str(pg_tmp_dir)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )  # fmt: skip
        for _ in range(2)
    ]
    settings = PlatformSettings().with_data_dir(pg_tmp_dir)
    try:
        outputs = [p.communicate(timeout=120)[0].strip() for p in procs]
        assert all(p.returncode == 0 for p in procs)
        assert outputs[0] == outputs[1] == ensure_postgres(settings)
        assert f"host={settings.pg_data_dir}" in outputs[0]
    finally:
        stop_postgres(settings)
    assert not (settings.pg_data_dir / "postmaster.pid").exists()
    assert ensure_postgres(PlatformSettings(pg_dsn="host=db.example port=5432 dbname=x")) == (
        "host=db.example port=5432 dbname=x"
    )
