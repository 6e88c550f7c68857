"""Hardening of the search API (issue 14), against a real embedded PostgreSQL; each test failed on the old code."""

from __future__ import annotations

import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
import uvicorn
from fastapi.testclient import TestClient

from services.featurestore import FeatureStore
from services.featurestore.server import ensure_postgres, stop_postgres
from services.search_api import ApiConfig, create_app, serve
from services.search_auth import KeyRing, new_key
from services.settings import PlatformSettings

pytestmark = pytest.mark.integration

DIM = 8


@pytest.fixture(scope="module")
def vectors(pg_dsn: str) -> np.ndarray:
    """60 image embeddings under sec-v1, some with '/' in their ids."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(60, DIM)).astype(np.float32)
    table = pd.DataFrame(x, columns=[f"ch0_{k:03d}" for k in range(DIM)])
    table.insert(0, "Metadata_ImageID", [f"plate{i % 2}/well{i:02d}.tif" for i in range(60)])
    table.insert(1, "Metadata_Plate", [f"P{i % 2}" for i in range(60)])
    with FeatureStore(pg_dsn) as store:
        store.publish("image", table, model_version="sec-v1")
    return x


@pytest.fixture(scope="module")
def client(pg_settings: PlatformSettings, vectors: np.ndarray) -> Iterator[TestClient]:
    with TestClient(create_app(pg_settings)) as c:
        yield c


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def live_url(pg_settings: PlatformSettings, vectors: np.ndarray) -> Iterator[str]:
    """The API served by uvicorn on a loopback port (real sockets and threads, as in production)."""
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(pg_settings), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def test_concurrent_clients_get_no_errors(live_url: str, vectors: np.ndarray) -> None:
    """32 clients at once: every answer 200 (the 4-connection pool answered 500 from 5 concurrent requests)."""

    def one(i: int) -> tuple[int, int]:
        with httpx.Client(base_url=live_url, timeout=30) as http:
            search = http.post("/search", json={"level": "image", "vector": vectors[i % 60].tolist(), "k": 5})
            health = http.get("/health")
            return search.status_code, health.status_code

    with ThreadPoolExecutor(32) as pool:
        codes = list(pool.map(one, range(160)))
    assert codes == [(200, 200)] * 160


def test_health_answers_while_every_pool_slot_is_busy(pg_settings: PlatformSettings, vectors: np.ndarray) -> None:
    app = create_app(pg_settings, config=ApiConfig(pool_size=2, acquire_timeout_s=0.2))
    with TestClient(app) as c:
        slots = app.state.store_holder._slots
        for _ in range(2):
            assert slots.acquire(timeout=1)
        try:
            assert c.get("/health").status_code == 200
            busy = c.post("/search", json={"level": "image", "entity_id": "plate0/well00.tif"})
            assert busy.status_code == 503 and "retry" in busy.text
        finally:
            slots.release()
            slots.release()
        assert c.post("/search", json={"level": "image", "entity_id": "plate0/well00.tif"}).status_code == 200


def test_api_keys_hashed_and_rotated_without_restart(pg_settings: PlatformSettings, tmp_path: Path) -> None:
    old, old_line = new_key("old")
    new, new_line = new_key("new")
    keys_file = tmp_path / "api-keys"
    keys_file.write_text(old_line + "\n")
    assert old not in keys_file.read_text()  # only the hash is stored
    app = create_app(pg_settings, keys=KeyRing(keys_file, check_interval_s=0))
    body = {"level": "image", "entity_id": "plate0/well00.tif", "k": 3}
    with TestClient(app) as c:
        assert c.post("/search", json=body).status_code == 401
        assert c.post("/search", json=body, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert c.post("/search", json=body, headers={"Authorization": f"Bearer {old}"}).status_code == 200
        assert c.get("/entities/image/plate0/well00.tif", headers={"X-API-Key": old}).status_code == 200
        assert c.get("/health").status_code == 200  # probes need no key
        keys_file.write_text(new_line + "\n")  # rotation: the old key is gone, the new one works, no restart
        assert c.post("/search", json=body, headers={"Authorization": f"Bearer {old}"}).status_code == 401
        assert c.post("/search", json=body, headers={"Authorization": f"Bearer {new}"}).status_code == 200
        keys_file.write_text("garbage line\n")  # a broken file keeps the last good keys
        assert c.post("/search", json=body, headers={"Authorization": f"Bearer {new}"}).status_code == 200


def test_serving_open_on_a_public_address_is_refused(pg_settings: PlatformSettings) -> None:
    with pytest.raises(SystemExit, match="MICROSNOOP_SEARCH_API_KEYS"):
        serve(pg_settings, host="0.0.0.0", port=_free_port())


def test_request_bodies_are_capped_and_422_does_not_echo(client: TestClient) -> None:
    huge = {"level": "image", "vector": [0.5] * 200_000}
    response = client.post("/search", json=huge)
    assert response.status_code == 413 and len(response.content) < 500
    bad = {"level": "image", "vector": ["x" * 5000] * 5}
    response = client.post("/search", json=bad)
    assert response.status_code == 422 and "x" * 100 not in response.text and len(response.content) < 5000


@pytest.mark.parametrize(
    "body",
    [
        {"level": "image", "entity_id": "a\x00b"},
        {"level": "image", "entity_id": "plate0/well00.tif", "filters": {"plate": "P\x000"}},
        {"level": "image", "entity_id": "plate0/well00.tif", "model_version": "v\x00"},
    ],
)
def test_nul_bytes_are_422(client: TestClient, body: dict[str, object]) -> None:
    assert client.post("/search", json=body).status_code == 422


def test_entity_ids_with_slash_and_nul_in_the_path(client: TestClient, vectors: np.ndarray) -> None:
    response = client.get("/entities/image/plate1/well03.tif")
    assert response.status_code == 200, response.text
    np.testing.assert_allclose(response.json()["vector"], vectors[3], rtol=1e-6)
    assert client.get("/entities/image/plate1%00x").status_code == 422


def test_503_does_not_reveal_socket_paths(tmp_path: Path) -> None:
    settings = PlatformSettings(pg_dsn=f"host={tmp_path} port=5432 dbname=microsnoop user=postgres connect_timeout=2")
    with TestClient(create_app(settings)) as down:
        for response in (down.get("/health"), down.post("/search", json={"level": "image", "entity_id": "a"})):
            assert response.status_code == 503
            assert str(tmp_path) not in response.text and ".s.PGSQL" not in response.text


def test_docs_load_nothing_from_a_cdn(client: TestClient) -> None:
    response = client.get("/docs")
    assert response.status_code == 200 and "/search" in response.text
    assert "cdn" not in response.text.lower() and "<script" not in response.text.lower()


@pytest.mark.parametrize("scale", [1e-30, 1e20, 3e38])
def test_tiny_and_huge_query_vectors_rank_like_the_unit_vector(
    client: TestClient, vectors: np.ndarray, scale: float
) -> None:
    query = vectors[7] / np.linalg.norm(vectors[7])
    base = client.post("/search", json={"level": "image", "vector": query.tolist(), "k": 5, "exact": True}).json()
    scaled = [float(v) * scale for v in query]
    response = client.post("/search", json={"level": "image", "vector": scaled, "k": 5, "exact": True})
    assert response.status_code == 200, response.text
    assert response.json()["ids"] == base["ids"]
    np.testing.assert_allclose(response.json()["distances"], base["distances"], atol=1e-5)


def test_the_api_does_not_restart_a_database_an_operator_stopped() -> None:
    path = Path(tempfile.mkdtemp(prefix="microsnoop-stop-"))
    settings = PlatformSettings().with_data_dir(path)
    try:
        ensure_postgres(settings)
        with TestClient(create_app(settings)) as c:
            assert c.get("/health").status_code == 200
            stop_postgres(settings)
            time.sleep(1.1)  # past the health cache
            assert c.get("/health").status_code == 503
            assert c.post("/search", json={"level": "image", "entity_id": "x"}).status_code == 503
        assert not (settings.pg_data_dir / "postmaster.pid").exists()
    finally:
        stop_postgres(settings)
        shutil.rmtree(path, ignore_errors=True)


def test_the_api_runs_with_a_read_only_database_role(pg_dsn: str, vectors: np.ndarray) -> None:
    """The chart gives the search API a SELECT-only role; the API must not need DDL rights."""
    import psycopg2
    from psycopg2.extensions import make_dsn, parse_dsn

    conn = psycopg2.connect(pg_dsn)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("DROP ROLE IF EXISTS sec_reader")
        cur.execute("CREATE ROLE sec_reader LOGIN PASSWORD 'reader-pw'")
        cur.execute("GRANT SELECT ON ALL TABLES IN SCHEMA public TO sec_reader")
        cur.execute("ALTER ROLE sec_reader SET default_transaction_read_only = on")
    conn.close()
    reader = make_dsn(**{**parse_dsn(pg_dsn), "user": "sec_reader", "password": "reader-pw"})
    with TestClient(create_app(PlatformSettings(pg_dsn=reader))) as c:
        response = c.post("/search", json={"level": "image", "entity_id": "plate0/well00.tif", "k": 3})
        assert response.status_code == 200, response.text
        assert c.get("/health").json()["counts"]["image"] >= 60
