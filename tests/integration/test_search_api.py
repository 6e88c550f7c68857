"""The search API through FastAPI's TestClient against a real embedded PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import get_args

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from services.featurestore import FeatureStore
from services.featurestore.centering import centre_table
from services.featurestore.schema import FILTER_KEYS
from services.search_api import FilterKey, create_app
from services.settings import PlatformSettings

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def vectors(pg_dsn: str) -> np.ndarray:
    """300 image embeddings published under two versions (api-v2 is the latest)."""
    rng = np.random.default_rng(11)
    x = rng.normal(size=(300, 12)).astype(np.float32)
    table = pd.DataFrame(x, columns=[f"ch0_{k:03d}" for k in range(12)])
    table.insert(0, "Metadata_ImageID", [f"api{i:04d}" for i in range(300)])
    table.insert(1, "Metadata_Plate", [f"P{i % 3}" for i in range(300)])
    table.insert(2, "Metadata_Compound", [f"c{i % 7}" for i in range(300)])
    with FeatureStore(pg_dsn) as store:
        store.publish("image", table.iloc[:10, :5], model_version="api-v1", feature_columns=["ch0_000", "ch0_001"])
        store.publish("image", table, model_version="api-v2")
    return x


@pytest.fixture(scope="module")
def client(pg_settings: PlatformSettings, vectors: np.ndarray) -> Iterator[TestClient]:
    with TestClient(create_app(pg_settings)) as c:
        yield c


def test_filter_keys_match_the_store() -> None:
    assert set(get_args(FilterKey)) == set(FILTER_KEYS)


def test_health(client: TestClient) -> None:
    response = client.get("/health")
    assert response.status_code == 200 and response.json()["status"] == "ok"
    assert response.json()["counts"]["image"] >= 300


def test_search_by_id_and_by_vector(client: TestClient, vectors: np.ndarray) -> None:
    response = client.post("/search", json={"level": "image", "entity_id": "api0005", "k": 5, "exact": True})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_version"] == "api-v2" and len(body["ids"]) == 5 and "api0005" not in body["ids"]
    assert body["distances"] == sorted(body["distances"])
    x = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    order = [f"api{i:04d}" for i in np.argsort(-(x @ x[5]))[1:6]]
    assert body["ids"] == order
    response = client.post(
        "/search",
        json={"level": "image", "vector": vectors[9].tolist(), "k": 3, "filters": {"plate": "P0"}, "exact": True},
    )
    assert response.status_code == 200, response.text
    assert response.json()["ids"][0] == "api0009"
    assert all(h["metadata"]["plate"] == "P0" for h in response.json()["hits"])
    response = client.post(
        "/search", json={"level": "image", "entity_id": "api0001", "k": 10, "exclude_same": ["compound"]}
    )
    assert all(h["metadata"]["compound"] != "c1" for h in response.json()["hits"])
    response = client.post("/search", json={"level": "image", "model_version": "api-v1", "vector": [1.0, 0.0], "k": 2})
    assert response.status_code == 200 and response.json()["model_version"] == "api-v1"


def test_get_entity(client: TestClient, vectors: np.ndarray) -> None:
    response = client.get("/entities/image/api0003")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["metadata"]["plate"] == "P0" and body["model_version"] == "api-v2"
    np.testing.assert_allclose(body["vector"], vectors[3], rtol=1e-6)
    assert client.get("/entities/image/nope").status_code == 404
    assert client.get("/entities/organelle/api0003").status_code == 422


def test_raw_and_published_query_vectors_on_a_centred_version(client: TestClient, pg_dsn: str) -> None:
    """Raw embeddings share a large common offset; the published space is centred on it."""
    rng = np.random.default_rng(5)
    raw = (rng.normal(size=(40, 12)) + 25.0).astype(np.float32)
    cols = [f"ch0_{k:03d}" for k in range(12)]
    table = pd.DataFrame(raw, columns=cols)
    table.insert(0, "Metadata_ImageID", [f"cen{i:02d}" for i in range(40)])
    with FeatureStore(pg_dsn) as store:
        centre = store.centre("image", "api-centred", raw)
        assert centre is not None
        store.publish("image", centre_table(table, cols, centre), model_version="api-centred")

    def ask(vector: list[float], **extra: object) -> dict[str, object]:
        body = {"level": "image", "model_version": "api-centred", "vector": vector, "k": 3, "exact": True, **extra}
        response = client.post("/search", json=body)
        assert response.status_code == 200, response.text
        return response.json()

    raw_hit = ask(raw[7].tolist())  # a raw vector, as 'microsnoop embed' writes it
    assert raw_hit["ids"][0] == "cen07" and raw_hit["distances"][0] < 1e-4
    published = client.get("/entities/image/cen07", params={"model_version": "api-centred"}).json()
    assert published["space"] == "published"
    same = ask(published["vector"], space="published")
    assert same["ids"][0] == "cen07" and same["distances"][0] < 1e-4
    twice = ask(published["vector"])  # the published vector read as raw is centred a second time
    assert twice["distances"][0] > same["distances"][0] + 1e-3
    wrong = client.post("/search", json={"level": "image", "vector": [1.0] * 12, "space": "centred"})
    assert wrong.status_code == 422 and "space" in wrong.text


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"level": "image"}, "exactly one of vector or entity_id"),
        ({"level": "image", "entity_id": "api0001", "vector": [1.0]}, "exactly one of vector or entity_id"),
        ({"level": "image", "entity_id": "api0001", "k": 0}, "greater than or equal to 1"),
        ({"level": "image", "entity_id": "api0001", "k": 5000}, "less than or equal to 1000"),
        ({"level": "nucleus", "entity_id": "api0001"}, "level"),
        ({"level": "image", "entity_id": "api0001", "filters": {"password": "x"}}, "filters"),
        ({"level": "image", "vector": [1.0, 2.0], "exclude_same": ["plate"]}, "exclude_same needs entity_id"),
        ({"level": "image", "vector": [1.0, 2.0, 3.0]}, "12 finite numbers"),
        ({"level": "image", "entity_id": "api0001", "bogus": 1}, "bogus"),
    ],
)
def test_invalid_requests_are_422(client: TestClient, body: dict[str, object], fragment: str) -> None:
    response = client.post("/search", json=body)
    assert response.status_code == 422
    assert fragment in response.text


def test_unknown_entity_and_version_are_404(client: TestClient) -> None:
    assert client.post("/search", json={"level": "image", "entity_id": "nope"}).status_code == 404
    response = client.post("/search", json={"level": "image", "entity_id": "api0001", "model_version": "v-none"})
    assert response.status_code == 404 and "published versions" in response.text
    assert client.post("/search", json={"level": "cell", "entity_id": "x:1"}).status_code == 404


def test_database_down_is_503(tmp_path: Path) -> None:
    settings = PlatformSettings(pg_dsn=f"host={tmp_path} port=5432 dbname=microsnoop user=postgres connect_timeout=2")
    with TestClient(create_app(settings)) as down:
        assert down.get("/health").status_code == 503
        response = down.post("/search", json={"level": "image", "entity_id": "a"})
        assert response.status_code == 503 and "unavailable" in response.text
