"""The HNSW index of one model version's partition: its parameters, bulk build and the legacy-layout migration.

Why these defaults (measured with ``benchmarks/bench_search.py``, numbers in ``docs/scaling.md``): the
index stores ``halfvec`` (half the bytes of ``vector``, so 10^6 x 256 fits in a few hundred MB of
shared buffers) and is built with ``m = 24``, ``ef_construction = 128``, which lifts recall@10 on
clustered embeddings from ~0.89 (m 16 / ef_construction 64) to >= 0.95 at the default ``ef_search``
without raising query latency much. Results are re-ranked by the exact ``vector`` distance. A build is
given ``maintenance_work_mem`` sized to hold the whole graph (capped) and parallel workers, because a
graph that spills out of memory builds several times slower.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg2.extensions
from psycopg2 import sql

from services.featurestore import schema
from services.featurestore.schema import StoreError


@dataclass(frozen=True)
class IndexConfig:
    """HNSW parameters, search breadth and when a publish takes the bulk path (drop index, load, rebuild)."""

    m: int = 24
    ef_construction: int = 128
    ef_search: int = 100  # per-query candidate list; a query uses max(ef_search, 2k)
    bulk_share: float = 0.2  # bulk path when incoming rows >= this share of the rows already held
    max_build_memory_mb: int = 4096  # cap of maintenance_work_mem for one build
    build_workers: int = 2  # max_parallel_maintenance_workers for one build

    def __post_init__(self) -> None:
        if not 2 <= self.m <= 100:
            raise StoreError(f"HNSW m must be between 2 and 100, got {self.m}")
        if not 4 <= self.ef_construction <= 1000 or self.ef_construction < 2 * self.m:
            raise StoreError(
                f"ef_construction must be between 4 and 1000 and at least 2 * m, "
                f"got {self.ef_construction} (m={self.m})"
            )
        if not 1 <= self.ef_search <= 1000:
            raise StoreError(f"ef_search must be between 1 and 1000, got {self.ef_search}")
        if not 0 <= self.bulk_share <= 1:
            raise StoreError(f"bulk_share must be between 0 and 1, got {self.bulk_share}")
        if self.max_build_memory_mb < 64 or not 0 <= self.build_workers <= 64:
            raise StoreError("max_build_memory_mb must be >= 64 and build_workers between 0 and 64")

    def search_breadth(self, k: int, ef_search: int | None) -> int:
        """The hnsw.ef_search of one query: the given value, else max(default, 2k), at most 1000."""
        return int(ef_search) if ef_search is not None else max(self.ef_search, min(1000, 2 * k))

    def build_memory_mb(self, rows: int, dim: int) -> int:
        """maintenance_work_mem (MB) that holds the graph of rows x dim halfvecs in memory (1.5x margin), capped."""
        per_row = 2 * dim + 8 + 2 * self.m * 10 + 64  # halfvec, neighbour lists of layer 0 and the element header
        return int(min(self.max_build_memory_mb, max(64, 1.5 * rows * per_row / 2**20)))

    def use_bulk(self, incoming: int, held: int, *, replace: bool) -> bool:
        """Whether a publish of incoming rows into a partition of held rows should drop and rebuild the index."""
        return replace or held == 0 or incoming >= self.bulk_share * held


def vector_expr(dim: int) -> sql.Composable:
    """The indexed expression: the embedding as a typed halfvec."""
    return sql.SQL("(embedding::halfvec({d}))").format(d=sql.Literal(int(dim)))


def query_distance(dim: int) -> sql.Composable:
    """The ORDER BY expression that the HNSW index serves (the query is a %s parameter)."""
    return sql.SQL("{e} <=> %s::halfvec({d})").format(e=vector_expr(dim), d=sql.Literal(int(dim)))


def drop_index(cur: psycopg2.extensions.cursor, level: str, model_version: str) -> None:
    """Drop the HNSW index of one model version's partition, if any (inside the caller's transaction)."""
    cur.execute(sql.SQL("DROP INDEX IF EXISTS {}").format(sql.Identifier(schema.index_name(level, model_version))))


def build_index(
    cur: psycopg2.extensions.cursor, level: str, model_version: str, dim: int, rows: int, config: IndexConfig
) -> None:
    """CREATE the HNSW index of one partition with memory and parallel workers sized for rows x dim."""
    cur.execute("SELECT set_config('maintenance_work_mem', %s, true)", (f"{config.build_memory_mb(rows, dim)}MB",))
    cur.execute("SELECT set_config('max_parallel_maintenance_workers', %s, true)", (str(config.build_workers),))
    cur.execute(
        sql.SQL(
            "CREATE INDEX IF NOT EXISTS {idx} ON {p} USING hnsw ({e} halfvec_cosine_ops) "
            "WITH (m = {m}, ef_construction = {ef})"
        ).format(
            idx=sql.Identifier(schema.index_name(level, model_version)),
            p=sql.Identifier(schema.partition_name(level, model_version)),
            e=vector_expr(dim),
            m=sql.Literal(config.m),
            ef=sql.Literal(config.ef_construction),
        )
    )


def ensure_partition(cur: psycopg2.extensions.cursor, level: str, model_version: str) -> None:
    """Create the (empty) partition of one model version unless it exists."""
    cur.execute("SELECT to_regclass(%s)", (schema.partition_name(level, model_version),))
    row = cur.fetchone()
    if row is not None and row[0] is not None:
        return
    cur.execute(
        sql.SQL("CREATE TABLE IF NOT EXISTS {p} PARTITION OF {t} FOR VALUES IN ({v})").format(
            p=sql.Identifier(schema.partition_name(level, model_version)),
            t=sql.Identifier(schema.table_name(level)),
            v=sql.Literal(model_version),
        )
    )


def migrate_unpartitioned(cur: psycopg2.extensions.cursor, level: str, config: IndexConfig) -> int:
    """Move a level table of the older single-table layout into per-model partitions; returns rows moved.

    Runs inside the schema transaction (all or nothing); a store already partitioned is left alone.
    """
    table = schema.table_name(level)
    cur.execute("SELECT relkind FROM pg_class WHERE oid = to_regclass(%s)", (table,))
    row = cur.fetchone()
    if row is None or row[0] != "r":
        return 0
    legacy = f"{table}_unpartitioned"
    cur.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(sql.Identifier(table), sql.Identifier(legacy)))
    cur.execute(
        sql.SQL("ALTER TABLE {} RENAME CONSTRAINT {} TO {}").format(
            sql.Identifier(legacy), sql.Identifier(f"{table}_pkey"), sql.Identifier(f"{legacy}_pkey")
        )
    )
    cur.execute(schema.table_ddl(level))
    cur.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = %s AND table_schema = current_schema()",
        (legacy,),
    )
    old = {r[0] for r in cur.fetchall()}
    cur.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = %s AND table_schema = current_schema() "
        "ORDER BY ordinal_position",
        (table,),
    )
    cols = sql.SQL(", ").join(sql.Identifier(r[0]) for r in cur.fetchall() if r[0] in old)
    cur.execute(sql.SQL("SELECT model_version, count(*), max(dim) FROM {} GROUP BY 1").format(sql.Identifier(legacy)))
    moved = 0
    for version, count, dim in cur.fetchall():
        ensure_partition(cur, level, version)
        cur.execute(
            sql.SQL("INSERT INTO {p} ({c}) SELECT {c} FROM {l} WHERE model_version = %s").format(
                p=sql.Identifier(schema.partition_name(level, version)), c=cols, l=sql.Identifier(legacy)
            ),
            (version,),
        )
        build_index(cur, level, version, int(dim), int(count), config)
        moved += int(count)
    cur.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(legacy)))
    return moved
