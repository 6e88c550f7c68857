"""FeatureStore: publish embeddings tables into PostgreSQL + pgvector and search them (see schema.py for the layout).

A publish is one transaction on the model version's own partition: binary COPY into a temporary
table, then ``INSERT ... ON CONFLICT DO UPDATE`` keyed by (model_version, entity_id). Two paths:

* **bulk** (a new model version, ``replace=True``, incoming rows >= ``IndexConfig.bulk_share`` of the
  rows held, or an index outgrown by the partition): drop the partition's index, load, then build it
  once (HNSW or IVFFlat by size, see :mod:`.index`) with ``maintenance_work_mem`` and parallel workers;
* **insert** (a few rows into a large model version): the index is maintained row by row.

``replace=True`` first empties the model version (rows absent from the new table are gone); the default
upsert keeps them. An exception or a killed process before COMMIT leaves the previous state untouched.
While a bulk publish of a model version runs, searches of that version wait for it; other versions
are not blocked (their partitions are not locked).
"""

from __future__ import annotations

import io
import logging
import time
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import numpy as np
import pandas as pd
import psycopg2
import psycopg2.errors
import psycopg2.extensions
from pgvector.psycopg2 import register_vector
from psycopg2 import sql
from psycopg2.pool import ThreadedConnectionPool

from services.featurestore import schema
from services.featurestore.binary_copy import encode_copy
from services.featurestore.centering import apply_centre, claim_centre, stored_centre
from services.featurestore.index import (
    IndexConfig,
    IndexInfo,
    build_index,
    drop_index,
    ensure_partition,
    index_info,
    migrate_unpartitioned,
    query_distance,
    search_settings,
)
from services.featurestore.schema import EXTRA_FILTERS, FILTER_KEYS, SCALARS, StoreError, check_level, table_name
from services.settings import PlatformSettings

_log = logging.getLogger(__name__)

MAX_K = 1000
MAX_PAGE = 1000
_SCHEMA_LOCK = 0x6D736E6F  # advisory lock key for DDL
META_COLUMNS: tuple[str, ...] = ("entity_id", "model_version", *SCALARS, "extra", "published_at")


class NotFoundError(StoreError):
    """An entity or model version that the store does not hold."""


@dataclass(frozen=True)
class PublishResult:
    """Rows a publish inserted (new ids) and updated (existing ids); total = inserted + updated.

    ``method`` is ``bulk`` (index dropped and rebuilt) or ``insert`` (index maintained row by row);
    ``deleted`` counts the rows a ``replace`` removed; the seconds split loading from the index build.
    """

    inserted: int
    updated: int
    total: int
    method: str = "insert"
    deleted: int = 0
    load_seconds: float = 0.0
    index_seconds: float = 0.0


@dataclass(frozen=True)
class Hit:
    """One search result: the entity, its cosine distance to the query and its metadata."""

    entity_id: str
    distance: float
    metadata: dict[str, Any]


def _check_model_version(model_version: str) -> str:
    if not isinstance(model_version, str) or not model_version.strip() or len(model_version) > 200:
        raise StoreError(f"model_version must be a non-empty string of at most 200 characters, got {model_version!r}")
    return model_version


def _scale_name(levels: Sequence[float]) -> str:
    """How an intensity scale reads in an error message."""
    return "the per-crop intensity scale" if not levels else f"dataset intensity levels {list(levels)}"


def _metadata(row: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in row.items() if v is not None and k not in ("entity_id", "distance", "embedding")}
    if "published_at" in out:
        out["published_at"] = out["published_at"].isoformat()
    return out


def unit_vector(q: np.ndarray) -> np.ndarray:
    """``q`` scaled to unit length in float64 first (no under/overflow), returned as float32."""
    x = np.asarray(q, dtype=np.float64)
    x = x / np.abs(x).max()
    return (x / np.linalg.norm(x)).astype(np.float32)


def _filter_column(key: str) -> sql.Composable:
    """The SQL expression a filter key compares: its column, or its text in the ``extra`` jsonb."""
    if key in EXTRA_FILTERS:
        return sql.SQL("({} ->> {})").format(sql.Identifier("extra"), sql.Literal(EXTRA_FILTERS[key]))
    return sql.Identifier(key)


def _metadata_value(row: dict[str, Any], key: str) -> Any:
    """A stored row's value of a filter key (text for keys kept in ``extra``)."""
    if key in EXTRA_FILTERS:
        value = (row.get("extra") or {}).get(EXTRA_FILTERS[key])
        return None if value is None else str(value)
    return row[key]


class FeatureStore:
    """Embeddings of cells, images and treatments in PostgreSQL + pgvector, with similarity search.

    >>> with FeatureStore.from_settings(load_settings()) as store:  # doctest: +SKIP
    ...     store.publish("image", table, model_version="v1")
    ...     hits = store.search("image", model_version="v1", entity_id="img-001", k=5)
    """

    def __init__(self, dsn: str, *, max_connections: int = 4, index: IndexConfig | None = None) -> None:
        self.index = index or IndexConfig()
        try:
            self._pool = ThreadedConnectionPool(1, max_connections, dsn)
        except psycopg2.OperationalError as exc:
            raise ConnectionError(
                f"cannot reach PostgreSQL ({exc}); start it with ensure_postgres(settings) or fix MICROSNOOP_PG_DSN"
            ) from exc
        self._registered: weakref.WeakSet[Any] = weakref.WeakSet()
        self._ensure_schema()

    @classmethod
    def from_settings(cls, settings: PlatformSettings) -> FeatureStore:
        """Open the store of settings, starting the embedded server if needed."""
        from services.featurestore.server import ensure_postgres

        return cls(ensure_postgres(settings))

    def close(self) -> None:
        """Close every pooled connection."""
        self._pool.closeall()

    def __enter__(self) -> FeatureStore:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @contextmanager
    def _transaction(self, *, vectors: bool = True) -> Iterator[psycopg2.extensions.cursor]:
        """A cursor inside one transaction (commit on success, rollback on error) from the pool."""
        conn = self._pool.getconn()
        broken = False
        try:
            with conn:
                if vectors and conn not in self._registered:
                    register_vector(conn)
                    self._registered.add(conn)
                with conn.cursor() as cur:
                    yield cur
        except (psycopg2.OperationalError, psycopg2.InterfaceError):
            broken = True
            raise
        finally:
            self._pool.putconn(conn, close=broken or bool(conn.closed))

    def _ensure_schema(self) -> None:
        with self._transaction(vectors=False) as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            cur.execute("SELECT 1 FROM pg_extension WHERE extname = 'vector'")
            if cur.fetchone() is None:
                try:
                    cur.execute("CREATE EXTENSION IF NOT EXISTS vector")
                except psycopg2.Error as exc:
                    raise StoreError(
                        f"pgvector is not enabled and cannot be created here ({exc.pgerror}); "
                        "ask the database owner to run CREATE EXTENSION vector"
                    ) from exc
            cur.execute(schema.CATALOG_DDL)
            cur.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = %s "
                "AND table_schema = current_schema()",
                (schema.CATALOG,),
            )
            present = {r[0] for r in cur.fetchall()}
            for column, kind in schema.CATALOG_ADDED_COLUMNS.items():
                if column not in present:
                    cur.execute(f"ALTER TABLE {schema.CATALOG} ADD COLUMN {column} {kind}")
            for level in schema.LEVELS:
                moved = migrate_unpartitioned(cur, level, self.index)
                if moved:
                    _log.info("moved %d %s rows into per-model partitions", moved, level)
                cur.execute(schema.table_ddl(level))

    def centre(
        self, level: str, model_version: str, vectors: np.ndarray | None = None, *, refit: bool = False
    ) -> np.ndarray | None:
        """The centre of level's published vectors of model_version; with ``vectors``, fit and store it when
        there is none yet (or ``refit``). See :mod:`services.featurestore.centering`."""
        check_level(level)
        with self._transaction(vectors=False) as cur:
            if vectors is None:
                return stored_centre(cur, level, model_version)
            cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"centre/{level}/{model_version}",))
            return claim_centre(cur, level, model_version, vectors, refit=refit)

    def _before_commit(self) -> None:
        """Called inside the publish transaction just before COMMIT (a seam for failure-injection tests)."""

    def publish(
        self,
        level: str,
        table: pd.DataFrame,
        *,
        model_version: str,
        feature_columns: list[str] | None = None,
        replace: bool = False,
        intensity_levels: Sequence[Sequence[float]] = (),
    ) -> PublishResult:
        """Upsert (or with replace, swap in) an embeddings table as level's rows of model_version, all or nothing.

        ``intensity_levels`` are the dataset intensity levels the table was embedded with (empty: the
        per-crop scale); a model version holds vectors of one scale only, and uploads are scaled with it.
        """
        _check_model_version(model_version)
        levels = [float(v) for pair in intensity_levels for v in pair]
        prep = schema.prepare(level, table, feature_columns)
        n, dim = prep.vectors.shape
        types = ["text", *(t for t, _ in SCALARS.values()), "jsonb", "integer"]
        columns: list[Sequence[object]] = [prep.entity_ids, *prep.scalars.values(), prep.extra, [dim] * n]
        payload = encode_copy(types, columns, prep.vectors)
        with self._transaction(vectors=False) as cur:  # brief DDL on the parent, outside the long transaction
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            ensure_partition(cur, level, model_version)
        start = time.perf_counter()
        with self._transaction() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"publish/{level}/{model_version}",))
            self._claim_version(cur, level, model_version, dim, levels, replace=replace)
            held = self._held(cur, level, model_version, exact=replace)
            bulk = self.index.use_bulk(n, held, replace=replace, index=index_info(cur, level, model_version))
            part = sql.Identifier(schema.partition_name(level, model_version))
            if bulk:
                drop_index(cur, level, model_version)
            if replace:
                cur.execute(sql.SQL("TRUNCATE {}").format(part))
            inserted, total = self._load(cur, part, types, payload, model_version)
            loaded = time.perf_counter()
            build_index(cur, level, model_version, dim, total if replace else held + inserted, self.index)
            built = time.perf_counter()
            cur.execute(sql.SQL("ANALYZE {}").format(part))  # plans and the next bulk decision use the new rows
            self._before_commit()
        method = "bulk" if bulk else "insert"
        _log.info("published %d %s rows of %s (%d new, %s)", total, level, model_version, inserted, method)
        return PublishResult(
            inserted=int(inserted),
            updated=int(total - inserted),
            total=int(total),
            method=method,
            deleted=held if replace else 0,
            load_seconds=round(loaded - start, 3),
            index_seconds=round(built - loaded, 3) if bulk else 0.0,
        )

    @staticmethod
    def _claim_version(
        cur: psycopg2.extensions.cursor,
        level: str,
        model_version: str,
        dim: int,
        levels: list[float],
        *,
        replace: bool = False,
    ) -> None:
        """Record the model version in the catalog, refusing a dimension other than its first's and, unless every
        row is replaced, an intensity scale other than the one its rows were embedded on."""
        cur.execute(
            f"SELECT dim, intensity_levels FROM {schema.CATALOG} WHERE level = %s AND model_version = %s",
            (level, model_version),
        )
        row = cur.fetchone()
        if row is not None and row[0] != dim:
            raise StoreError(
                f"{level} model {model_version!r} holds {row[0]}-d vectors, this table has {dim} features; "
                "publish it under a new model_version or pass the right feature_columns"
            )
        if row is not None and not replace and [float(v) for v in row[1] or []] != levels:
            held, new = _scale_name(row[1] or []), _scale_name(levels)
            raise StoreError(
                f"{level} model {model_version!r} holds vectors on {held}, this table was embedded on {new}; "
                "publish it under a new model_version (one version, one intensity scale)"
            )
        cur.execute(
            f"INSERT INTO {schema.CATALOG} (level, model_version, dim, intensity_levels) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (level, model_version) DO UPDATE SET updated_at = clock_timestamp(), "
            "intensity_levels = EXCLUDED.intensity_levels",
            (level, model_version, dim, levels or None),
        )

    def intensity_levels(self, level: str, model_version: str) -> tuple[tuple[float, float], ...]:
        """The dataset intensity levels a model version was embedded with; () for the per-crop scale."""
        check_level(level)
        try:
            with self._transaction(vectors=False) as cur:
                cur.execute(
                    f"SELECT intensity_levels FROM {schema.CATALOG} WHERE level = %s AND model_version = %s",
                    (level, model_version),
                )
                row = cur.fetchone()
        except psycopg2.errors.UndefinedColumn:  # a store no writer has opened since the column was added
            return ()
        flat = [float(v) for v in (row[0] or [])] if row is not None else []
        return tuple(zip(flat[::2], flat[1::2], strict=True))

    @staticmethod
    def _held(cur: psycopg2.extensions.cursor, level: str, model_version: str, *, exact: bool) -> int:
        """Rows the model version's partition holds: counted, or the planner's estimate (kept by ANALYZE)."""
        part = schema.partition_name(level, model_version)
        if exact:
            cur.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(part)))
        else:
            cur.execute("SELECT greatest(reltuples, 0)::bigint FROM pg_class WHERE oid = to_regclass(%s)", (part,))
        row = cur.fetchone()
        return int(row[0]) if row is not None else 0

    @staticmethod
    def _load(
        cur: psycopg2.extensions.cursor, part: sql.Identifier, types: list[str], payload: bytes, model_version: str
    ) -> tuple[int, int]:
        """COPY the payload into a temporary table and upsert it into the partition; returns (inserted, total)."""
        stage_cols = sql.SQL(", ").join(map(sql.Identifier, schema.STAGE_COLUMNS))
        updates = sql.SQL(", ").join(
            sql.SQL("{c} = EXCLUDED.{c}").format(c=sql.Identifier(c))
            for c in (*SCALARS, "extra", "dim", "embedding", "published_at")
        )
        stage_ddl = ", ".join(f"{c} {t}" for c, t in zip(schema.STAGE_COLUMNS, [*types, "vector"], strict=True))
        cur.execute(f"CREATE TEMP TABLE _stage ({stage_ddl}) ON COMMIT DROP")
        cur.copy_expert("COPY _stage FROM STDIN WITH (FORMAT binary)", io.BytesIO(payload))
        cur.execute(
            sql.SQL(
                "WITH up AS (INSERT INTO {t} (model_version, {cols}, published_at) "
                "SELECT %s, {cols}, now() FROM _stage "
                "ON CONFLICT (model_version, entity_id) DO UPDATE SET {updates} RETURNING (xmax = 0) AS ins) "
                "SELECT count(*) FILTER (WHERE ins), count(*) FROM up"
            ).format(t=part, cols=stage_cols, updates=updates),
            (model_version,),
        )
        inserted, total = cur.fetchone()  # type: ignore[misc]
        return int(inserted), int(total)

    def _plan(self, cur: psycopg2.extensions.cursor, level: str, model_version: str) -> tuple[int, IndexInfo]:
        """The model version's dimension and its partition's index, in one query."""
        cur.execute(
            f"SELECT m.dim, a.amname, c.reloptions FROM {schema.CATALOG} m "
            "LEFT JOIN pg_class c ON c.oid = to_regclass(%s) LEFT JOIN pg_am a ON a.oid = c.relam "
            "WHERE m.level = %s AND m.model_version = %s",
            (schema.index_name(level, model_version), level, model_version),
        )
        row = cur.fetchone()
        if row is None:
            return self._dim(cur, level, model_version), IndexInfo("")  # raises NotFoundError
        options = dict(o.split("=", 1) for o in (row[2] or []))
        return int(row[0]), IndexInfo(str(row[1] or ""), int(options.get("lists", 0)))

    def _dim(self, cur: psycopg2.extensions.cursor, level: str, model_version: str) -> int:
        cur.execute(f"SELECT dim FROM {schema.CATALOG} WHERE level = %s AND model_version = %s", (level, model_version))
        row = cur.fetchone()
        if row is None:
            known = self.model_versions(level)
            raise NotFoundError(f"no {level} embeddings for model {model_version!r}; published versions: {known}")
        return int(row[0])

    @staticmethod
    def _where(filters: dict[str, str] | None) -> tuple[list[sql.Composable], list[object]]:
        clauses: list[sql.Composable] = []
        params: list[object] = []
        for key, value in (filters or {}).items():
            if key not in FILTER_KEYS:
                raise StoreError(f"cannot filter on {key!r}; use one of {', '.join(FILTER_KEYS)}")
            if key == "dose":
                try:
                    params.append(float(value))
                except (TypeError, ValueError) as exc:
                    raise StoreError(f"dose filter must be a number, got {value!r}") from exc
            else:
                params.append(str(value))
            clauses.append(_filter_column(key) + sql.SQL(" = %s"))
        return clauses, params

    def search(
        self,
        level: str,
        *,
        model_version: str,
        vector: np.ndarray | None = None,
        entity_id: str | None = None,
        k: int = 10,
        filters: dict[str, str] | None = None,
        exclude_same: Sequence[str] = (),
        exact: bool = False,
        ef_search: int | None = None,
        raw_query: bool = True,
    ) -> list[Hit]:
        """The k nearest entities by cosine distance to a vector or to a stored entity (which is excluded).

        A query ``vector`` is a raw embedding (as ``microsnoop embed`` writes it) and is centred like the
        published vectors of its model version (:mod:`services.featurestore.centering`); pass
        ``raw_query=False`` for a vector already in the published space.

        ``ef_search`` (HNSW candidate list, default ``max(IndexConfig.ef_search, 2k)``; on an IVFFlat
        partition it scales the probes by ``ef_search / IndexConfig.ef_search``) trades speed for recall;
        the candidates come from the halfvec index and are ranked by the exact distance.
        """
        check_level(level)
        if ef_search is not None and not 1 <= int(ef_search) <= 1000:
            raise StoreError(f"ef_search must be between 1 and 1000, got {ef_search}")
        if not 1 <= int(k) <= MAX_K:
            raise StoreError(f"k must be between 1 and {MAX_K}, got {k}")
        if (vector is None) == (entity_id is None):
            raise StoreError("give exactly one of vector or entity_id")
        bad = [key for key in exclude_same if key not in FILTER_KEYS]
        if bad:
            raise StoreError(f"cannot exclude_same on {bad}; use keys from {', '.join(FILTER_KEYS)}")
        if exclude_same and entity_id is None:
            raise StoreError("exclude_same needs a query entity_id (a bare vector has no metadata to compare)")
        clauses, params = self._where(filters)
        with self._transaction() as cur:
            dim, info = self._plan(cur, level, model_version)
            if entity_id is not None:
                query = self._lookup(cur, level, model_version, entity_id)
                vector = query["embedding"].to_numpy()
                clauses.append(sql.SQL("entity_id <> %s"))
                params.append(entity_id)
                for key in exclude_same:
                    value = _metadata_value(query, key)
                    if value is not None:
                        clauses.append(_filter_column(key) + sql.SQL(" IS DISTINCT FROM %s"))
                        params.append(value)
            q = np.asarray(vector, dtype=np.float64).ravel()
            if q.shape != (dim,) or not np.isfinite(q).all() or not q.any():
                raise StoreError(f"the query vector must be {dim} finite numbers, not all zero (got shape {q.shape})")
            centre = stored_centre(cur, level, model_version) if entity_id is None and raw_query else None
            # A raw embedding joins the published (centred) space at its own scale; then every query is a
            # unit vector (cosine is scale-free, and 1e-30 or 3e38 would under/overflow in float32).
            q = apply_centre(q, centre)[0] if centre is not None else unit_vector(q)
            if exact:
                order, settings = sql.SQL("embedding <=> %s::vector"), sql.SQL("SELECT 1")
            else:
                order, settings = query_distance(dim), search_settings(info, k, ef_search, self.index)
            where = sql.SQL(" AND ").join([sql.SQL("model_version = {}").format(sql.Literal(model_version)), *clauses])
            cols = sql.SQL(", ").join(map(sql.Identifier, META_COLUMNS))
            part = sql.Identifier(schema.partition_name(level, model_version))
            cur.execute(  # settings and query in one round trip (the last statement's rows are fetched)
                sql.SQL(
                    "{settings}; WITH r AS MATERIALIZED (SELECT {cols}, embedding <=> %s::vector AS distance FROM {t} "
                    "WHERE {where} ORDER BY {order} LIMIT %s) SELECT * FROM r ORDER BY distance, entity_id"
                ).format(settings=settings, cols=cols, order=order, t=part, where=where),
                [q, *params, q, int(k)],
            )
            names = [d[0] for d in cur.description]
            rows = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
        return [Hit(entity_id=r["entity_id"], distance=float(r["distance"]), metadata=_metadata(r)) for r in rows]

    def _lookup(
        self, cur: psycopg2.extensions.cursor, level: str, model_version: str, entity_id: str
    ) -> dict[str, Any]:
        cols = sql.SQL(", ").join(map(sql.Identifier, (*META_COLUMNS, "embedding")))
        cur.execute(
            sql.SQL("SELECT {cols} FROM {t} WHERE model_version = %s AND entity_id = %s").format(
                cols=cols, t=sql.Identifier(table_name(level))
            ),
            (model_version, entity_id),
        )
        row = cur.fetchone()
        if row is None:
            raise NotFoundError(f"no {level} entity {entity_id!r} under model {model_version!r}; check the id")
        return dict(zip([d[0] for d in cur.description], row, strict=True))

    def _frame(self, query: sql.Composable, params: Sequence[object]) -> pd.DataFrame:
        with self._transaction() as cur:
            cur.execute(query, params)
            names = [d[0] for d in cur.description]
            frame = pd.DataFrame(cur.fetchall(), columns=names)
        if "embedding" in frame:
            frame["embedding"] = [v.to_numpy() for v in frame["embedding"]]
        return frame

    def get(self, level: str, entity_ids: Sequence[str], *, model_version: str) -> pd.DataFrame:
        """Metadata and vector (column ``embedding``) of the given entities in the given order; absent ids left out."""
        ids = [str(i) for i in entity_ids]
        cols = sql.SQL(", ").join(map(sql.Identifier, (*META_COLUMNS, "embedding")))
        frame = self._frame(
            sql.SQL("SELECT {cols} FROM {t} WHERE model_version = %s AND entity_id = ANY(%s)").format(
                cols=cols, t=sql.Identifier(table_name(level))
            ),
            (model_version, ids),
        )
        order = {e: i for i, e in enumerate(ids)}
        return frame.sort_values("entity_id", key=lambda s: s.map(order)).reset_index(drop=True)

    def page(
        self,
        level: str,
        *,
        model_version: str | None = None,
        offset: int = 0,
        limit: int = 100,
        filters: dict[str, str] | None = None,
    ) -> pd.DataFrame:
        """One page of metadata (no vectors), ordered by model_version then entity_id, for browsing."""
        if not 1 <= limit <= MAX_PAGE or offset < 0:
            raise StoreError(f"need 1 <= limit <= {MAX_PAGE} and offset >= 0, got limit={limit} offset={offset}")
        clauses, params = self._where(filters)
        if model_version is not None:
            clauses.insert(0, sql.SQL("model_version = %s"))
            params.insert(0, model_version)
        where = sql.SQL(" AND ").join(clauses) if clauses else sql.SQL("TRUE")
        return self._frame(
            sql.SQL("SELECT {cols} FROM {t} WHERE {where} ORDER BY model_version, entity_id OFFSET %s LIMIT %s").format(
                cols=sql.SQL(", ").join(map(sql.Identifier, META_COLUMNS)),
                t=sql.Identifier(table_name(level)),
                where=where,
            ),
            [*params, int(offset), int(limit)],
        )

    def counts(self) -> dict[str, int]:
        """Rows per level (all model versions)."""
        with self._transaction(vectors=False) as cur:
            out = {}
            for level in schema.LEVELS:
                cur.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table_name(level))))
                out[level] = int(cur.fetchone()[0])  # type: ignore[index]
        return out

    def model_versions(self, level: str) -> list[str]:
        """Model versions published at a level, oldest first (the last is the latest)."""
        check_level(level)
        with self._transaction(vectors=False) as cur:
            cur.execute(
                f"SELECT model_version FROM {schema.CATALOG} WHERE level = %s ORDER BY created_at, model_version",
                (level,),
            )
            return [r[0] for r in cur.fetchall()]

    def vectors(self, level: str, *, model_version: str, limit: int | None = None) -> tuple[pd.DataFrame, np.ndarray]:
        """Metadata and an (n, d) float32 matrix of one model's vectors, ordered by entity_id (for UMAP)."""
        with self._transaction() as cur:
            dim = self._dim(cur, level, model_version)
        frame = self._frame(
            sql.SQL("SELECT {cols}, embedding FROM {t} WHERE model_version = %s ORDER BY entity_id LIMIT %s").format(
                cols=sql.SQL(", ").join(map(sql.Identifier, META_COLUMNS)), t=sql.Identifier(table_name(level))
            ),
            (model_version, limit),
        )
        matrix = np.stack(frame.pop("embedding").to_list()) if len(frame) else np.zeros((0, dim), np.float32)
        return frame, matrix.astype(np.float32)

    def ping(self) -> None:
        """Raise unless the database answers (for health checks)."""
        with self._transaction(vectors=False) as cur:
            cur.execute("SELECT 1")


class ReadOnlyStore(FeatureStore):
    """The feature store opened without DDL, for readers whose database role may only ``SELECT``
    (the search API and the dashboard in a cluster)."""

    def _ensure_schema(self) -> None:
        with self._transaction(vectors=False) as cur:
            cur.execute("SELECT to_regclass(%s) IS NOT NULL", (schema.CATALOG,))
            if not cur.fetchone()[0]:  # type: ignore[index]
                raise NotFoundError("the feature store holds no tables yet; publish embeddings first")
