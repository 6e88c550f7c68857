"""The ANN index of one model version's partition: its kind and parameters, bulk build, and the migration
of stores made before partitioning.

Two kinds, chosen per partition when its index is (re)built:

* **HNSW** below ``IndexConfig.ivf_min_rows`` rows (m 16, ef_construction 64; a query uses
  ``hnsw.ef_search = max(ef_search, 2k)``): high recall at these sizes, cheap to keep up to date row by row.
* **IVFFlat** from ``ivf_min_rows`` on: ``lists = rows / 1000`` (``sqrt(rows)`` above 10^6, pgvector's
  guidance) and ``ivfflat.probes`` per query. On 10^6 clustered 256-d vectors (benchmarks/bench_search.py,
  numbers in docs/scaling.md) HNSW m 16 / ef_construction 64 reached recall@10 0.70 / 0.79 / 0.87 at
  ef_search 100 / 200 / 400 (10-18 ms on 2 loaded cores) and took 11 minutes to build, while IVFFlat
  (1000 lists) built in 2 minutes and reached recall@10 1.0 at 5-10 probes.

Both index ``halfvec`` (half the bytes of ``vector``, so the index stays in shared buffers) and the
store ranks the candidates by the exact ``vector`` distance. A build gets ``maintenance_work_mem``
sized for the index (capped) and parallel workers. An IVFFlat index whose partition has grown past
``ivf_regrow`` times the rows its lists were sized for is rebuilt at the next publish.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import psycopg2.extensions
from psycopg2 import sql

from services.featurestore import schema
from services.featurestore.schema import StoreError


@dataclass(frozen=True)
class IndexInfo:
    """The index a partition has: its access method (``hnsw``, ``ivfflat``; empty if none) and IVF lists."""

    kind: str
    lists: int = 0


@dataclass(frozen=True)
class IndexConfig:
    """Index kinds and parameters, search breadth, and when a publish takes the bulk path (drop, load, rebuild)."""

    m: int = 16
    ef_construction: int = 64
    ef_search: int = 100  # HNSW candidate list; a query uses max(ef_search, 2k)
    ivf_min_rows: int = 200_000  # partitions this large get IVFFlat, smaller ones HNSW
    ivf_probes: int = 10  # lists an IVFFlat query visits (scaled by an explicit ef_search / self.ef_search)
    ivf_regrow: float = 4.0  # rebuild an IVFFlat index once rows exceed this many times what it was sized for
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
        if self.ivf_min_rows < 1000 or not 1 <= self.ivf_probes <= 1000 or self.ivf_regrow <= 1:
            raise StoreError("need ivf_min_rows >= 1000, 1 <= ivf_probes <= 1000 and ivf_regrow > 1")
        if not 0 <= self.bulk_share <= 1:
            raise StoreError(f"bulk_share must be between 0 and 1, got {self.bulk_share}")
        if self.max_build_memory_mb < 64 or not 0 <= self.build_workers <= 64:
            raise StoreError("max_build_memory_mb must be >= 64 and build_workers between 0 and 64")

    def search_breadth(self, k: int, ef_search: int | None) -> int:
        """The hnsw.ef_search of one query: the given value, else max(default, 2k), at most 1000."""
        return int(ef_search) if ef_search is not None else max(self.ef_search, min(1000, 2 * k))

    def probes(self, lists: int, ef_search: int | None) -> int:
        """The ivfflat.probes of one query: the default, scaled by an explicit ef_search, at most every list."""
        scale = 1.0 if ef_search is None else int(ef_search) / self.ef_search
        return max(1, min(max(lists, 1), math.ceil(self.ivf_probes * scale)))

    @staticmethod
    def lists_for(rows: int) -> int:
        """IVFFlat lists for rows: rows / 1000 up to 10^6 rows, sqrt(rows) above (pgvector's guidance)."""
        return max(1, rows // 1000 if rows <= 1_000_000 else math.isqrt(rows))

    def kind_for(self, rows: int) -> str:
        """The index kind a partition of rows gets when its index is built."""
        return "ivfflat" if rows >= self.ivf_min_rows else "hnsw"

    def build_memory_mb(self, rows: int, dim: int) -> int:
        """maintenance_work_mem (MB) that holds an HNSW graph of rows x dim halfvecs in memory (1.5x margin), capped."""
        per_row = 2 * dim + 8 + 2 * self.m * 10 + 64  # halfvec, neighbour lists of layer 0 and the element header
        return int(min(self.max_build_memory_mb, max(64, 1.5 * rows * per_row / 2**20)))

    def use_bulk(self, incoming: int, held: int, *, replace: bool, index: IndexInfo | None = None) -> bool:
        """Whether a publish of incoming rows into a partition of held rows should drop and rebuild the index."""
        if replace or held == 0 or incoming >= self.bulk_share * held or index is None or not index.kind:
            return True
        after = held + incoming
        if index.kind == "ivfflat":  # lists sized for far fewer rows: every probe scans too much
            return after > self.ivf_regrow * 1000 * max(index.lists, 1) and after > self.lists_for(after) * 1000 / 2
        return after >= self.ivf_min_rows  # an HNSW partition grown into IVFFlat's range


def index_info(cur: psycopg2.extensions.cursor, level: str, model_version: str) -> IndexInfo:
    """The access method and IVF lists of one partition's index (kind '' when it has none)."""
    cur.execute(
        "SELECT a.amname, c.reloptions FROM pg_class c JOIN pg_am a ON a.oid = c.relam WHERE c.oid = to_regclass(%s)",
        (schema.index_name(level, model_version),),
    )
    row = cur.fetchone()
    if row is None:
        return IndexInfo("")
    options = dict(o.split("=", 1) for o in (row[1] or []))
    return IndexInfo(str(row[0]), int(options.get("lists", 0)))


def vector_expr(dim: int) -> sql.Composable:
    """The indexed expression: the embedding as a typed halfvec."""
    return sql.SQL("(embedding::halfvec({d}))").format(d=sql.Literal(int(dim)))


def query_distance(dim: int) -> sql.Composable:
    """The ORDER BY expression that the index serves (the query is a %s parameter)."""
    return sql.SQL("{e} <=> %s::halfvec({d})").format(e=vector_expr(dim), d=sql.Literal(int(dim)))


def search_settings(info: IndexInfo, k: int, ef_search: int | None, config: IndexConfig) -> sql.Composable:
    """The statement setting one query's breadth and iterative scan for the index kind (transaction-local)."""
    if info.kind == "ivfflat":
        name, breadth, value = "ivfflat", "probes", config.probes(info.lists, ef_search)
    else:
        name, breadth, value = "hnsw", "ef_search", config.search_breadth(k, ef_search)
    return sql.SQL("SELECT set_config({b}, {v}, true), set_config({s}, 'relaxed_order', true)").format(
        b=sql.Literal(f"{name}.{breadth}"), v=sql.Literal(str(value)), s=sql.Literal(f"{name}.iterative_scan")
    )


def drop_index(cur: psycopg2.extensions.cursor, level: str, model_version: str) -> None:
    """Drop the HNSW index of one model version's partition, if any (inside the caller's transaction)."""
    cur.execute(sql.SQL("DROP INDEX IF EXISTS {}").format(sql.Identifier(schema.index_name(level, model_version))))


def build_index(
    cur: psycopg2.extensions.cursor, level: str, model_version: str, dim: int, rows: int, config: IndexConfig
) -> IndexInfo:
    """CREATE the partition's index (kind by rows) with memory and parallel workers sized for it, unless it exists."""
    current = index_info(cur, level, model_version)
    if current.kind:
        return current
    kind = config.kind_for(rows)
    cur.execute("SELECT set_config('maintenance_work_mem', %s, true)", (f"{config.build_memory_mb(rows, dim)}MB",))
    cur.execute("SELECT set_config('max_parallel_maintenance_workers', %s, true)", (str(config.build_workers),))
    if kind == "ivfflat":
        params = sql.SQL("lists = {}").format(sql.Literal(config.lists_for(rows)))
    else:
        params = sql.SQL("m = {}, ef_construction = {}").format(
            sql.Literal(config.m), sql.Literal(config.ef_construction)
        )
    cur.execute(
        sql.SQL("CREATE INDEX {idx} ON {p} USING {kind} ({e} halfvec_cosine_ops) WITH ({params})").format(
            idx=sql.Identifier(schema.index_name(level, model_version)),
            p=sql.Identifier(schema.partition_name(level, model_version)),
            kind=sql.SQL(kind),
            e=vector_expr(dim),
            params=params,
        )
    )
    return index_info(cur, level, model_version)


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
