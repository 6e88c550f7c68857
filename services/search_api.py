"""HTTP similarity search over the feature store (FastAPI): /health, POST /search, GET /entities/{level}/{id}.

``create_app(settings)`` builds the app; the store is opened on the first request (and reopened after
a database outage), so the app starts even while PostgreSQL is down and answers 503 until it is back.
The API only *connects* to the embedded database (``running_dsn``): it never restarts one an operator
stopped.

Hardening (docs/security.md): requests need an API key with the ``search:read`` scope when a keys file
is configured (``MICROSNOOP_SEARCH_API_KEYS``; see services/search_auth.py), sent as
``Authorization: Bearer <key>`` or ``X-API-Key: <key>``; ``/health`` stays open for probes. Bodies are
capped (``max_body_bytes``); 422 answers never echo the input; NUL bytes are refused. Database work runs
on a pool of ``pool_size`` connections: a request waits up to ``acquire_timeout_s`` for one, then gets
503, so bursts queue instead of failing. ``/health`` uses its own connection (not the pool) and caches
its answer for a second, so probes stay cheap under load. ``/docs`` is a self-contained page (no CDN).
"""

from __future__ import annotations

import html
import json
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import psycopg2
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from services.featurestore.schema import LEVELS, StoreError, table_name
from services.featurestore.server import PostgresError, running_dsn
from services.featurestore.store import MAX_K, FeatureStore, NotFoundError, ReadOnlyStore
from services.search_auth import READ_SCOPE, ApiKey, KeyRing
from services.settings import PlatformSettings

_log = logging.getLogger(__name__)

Level = Literal["cell", "image", "treatment"]
Space = Literal["raw", "published"]
FilterKey = Literal["plate", "well", "compound", "dose", "moa", "label", "image_id", "image_uri", "site"]
_UNAVAILABLE = "the feature store database is unavailable; retry later (the server log has the cause)"
_Scope = MutableMapping[str, Any]
_Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
_Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


@dataclass(frozen=True)
class ApiConfig:
    """Limits of the search API."""

    pool_size: int = 16  # database connections; requests beyond wait for one
    acquire_timeout_s: float = 20.0  # then 503 with Retry-After
    max_body_bytes: int = 128 * 1024  # a 2000-d vector as JSON is ~50 KB
    health_ttl_s: float = 1.0
    version_ttl_s: float = 2.0  # how long the latest model version per level is cached

    def __post_init__(self) -> None:
        if self.pool_size < 1 or self.acquire_timeout_s <= 0 or self.max_body_bytes < 1024:
            raise ValueError("need pool_size >= 1, acquire_timeout_s > 0 and max_body_bytes >= 1024")


def _no_nul(value: str | None) -> str | None:
    if value is not None and "\x00" in value:
        raise ValueError("must not contain NUL bytes")
    return value


class SearchRequest(BaseModel):
    """A similarity query: by vector or by a stored entity's id."""

    model_config = ConfigDict(extra="forbid")

    level: Level
    model_version: str | None = Field(None, min_length=1, max_length=200, description="None: the latest version")
    vector: list[float] | None = Field(None, min_length=1, max_length=2000)
    entity_id: str | None = Field(None, min_length=1, max_length=500)
    k: int = Field(10, ge=1, le=MAX_K)
    filters: dict[FilterKey, str] = Field(default_factory=dict)
    exclude_same: list[FilterKey] = Field(default_factory=list)
    exact: bool = False
    ef_search: int | None = Field(None, ge=1, le=1000, description="HNSW candidate list; higher = better recall")
    space: Space = Field(
        "raw",
        description="raw: the vector as 'microsnoop embed' wrote it (centred here like the published vectors; "
        "embedded on the version's intensity scale, see docs/intensity.md); "
        "published: a vector as /entities returns it (already centred)",
    )

    @field_validator("model_version", "entity_id")
    @classmethod
    def _text(cls, value: str | None) -> str | None:
        return _no_nul(value)

    @field_validator("filters")
    @classmethod
    def _filter_values(cls, value: dict[str, str]) -> dict[str, str]:
        for item in value.values():
            if len(item) > 500:
                raise ValueError("filter values must be at most 500 characters")
            _no_nul(item)
        return value

    @model_validator(mode="after")
    def _one_query(self) -> SearchRequest:
        if (self.vector is None) == (self.entity_id is None):
            raise ValueError("give exactly one of vector or entity_id")
        if self.exclude_same and self.entity_id is None:
            raise ValueError("exclude_same needs entity_id (a bare vector has no metadata to compare)")
        return self


class HitOut(BaseModel):
    """One neighbour."""

    entity_id: str
    distance: float
    metadata: dict[str, Any]


class SearchResponse(BaseModel):
    """Neighbours, nearest first."""

    level: str
    model_version: str
    ids: list[str]
    distances: list[float]
    hits: list[HitOut]


class _StoreHolder:
    """Opens the FeatureStore lazily, bounds concurrent use to its pool and drops it when the database goes away."""

    def __init__(self, settings: PlatformSettings, config: ApiConfig) -> None:
        self._settings, self._config = settings, config
        self._store: FeatureStore | None = None
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(config.pool_size)
        self._latest: dict[str, tuple[float, str]] = {}

    @contextmanager
    def store(self) -> Iterator[FeatureStore]:
        if not self._slots.acquire(timeout=self._config.acquire_timeout_s):
            raise HTTPException(503, "the search API is busy; retry in a moment", headers={"Retry-After": "1"})
        try:
            with self._lock:
                if self._store is None:
                    dsn = running_dsn(self._settings)
                    self._store = ReadOnlyStore(dsn, max_connections=self._config.pool_size)
                store = self._store
            yield store
        except (psycopg2.OperationalError, psycopg2.InterfaceError, ConnectionError, PostgresError) as exc:
            self.reset()
            _log.warning("feature store unavailable: %s", exc)
            raise HTTPException(503, _UNAVAILABLE) from exc
        except NotFoundError as exc:
            raise HTTPException(404, str(exc)) from exc
        except StoreError as exc:
            raise HTTPException(422, str(exc)) from exc
        except psycopg2.DataError as exc:
            raise HTTPException(422, f"the database refused a value of the request: {exc.pgerror or exc}") from exc
        finally:
            self._slots.release()

    def latest(self, store: FeatureStore, level: str) -> str:
        """The latest published model version of level (cached for a moment)."""
        now = time.monotonic()
        cached = self._latest.get(level)
        if cached is not None and now - cached[0] < self._config.version_ttl_s:
            return cached[1]
        versions = store.model_versions(level)
        if not versions:
            raise NotFoundError(f"no {level} embeddings published yet; publish some first")
        self._latest[level] = (now, versions[-1])
        return versions[-1]

    def reset(self) -> None:
        with self._lock:
            if self._store is not None:
                try:
                    self._store.close()
                except psycopg2.Error:
                    pass
                self._store = None
            self._latest.clear()


class _Health:
    """Row counts from a dedicated connection (not the pool), cached for ttl_s; one check at a time."""

    def __init__(self, settings: PlatformSettings, ttl_s: float) -> None:
        self._settings, self._ttl = settings, ttl_s
        self._conn: Any = None
        self._lock = threading.Lock()
        self._cached: tuple[float, dict[str, Any]] | None = None

    def check(self) -> dict[str, Any]:
        cached = self._cached
        if cached is not None and time.monotonic() - cached[0] < self._ttl:
            return cached[1]
        if not self._lock.acquire(timeout=5):
            if cached is not None:
                return cached[1]
            raise HTTPException(503, _UNAVAILABLE)
        try:
            if self._conn is None or self._conn.closed:
                self._conn = psycopg2.connect(running_dsn(self._settings), connect_timeout=3)
                self._conn.autocommit = True
            counts = {}
            with self._conn.cursor() as cur:
                cur.execute("SET statement_timeout = 3000")
                for level in LEVELS:
                    cur.execute("SELECT to_regclass(%s) IS NOT NULL", (table_name(level),))
                    exists = cur.fetchone()[0]
                    if exists:
                        cur.execute(f"SELECT count(*) FROM {table_name(level)}")
                    counts[level] = int(cur.fetchone()[0]) if exists else 0
            value = {"status": "ok", "counts": counts}
            self._cached = (time.monotonic(), value)
            return value
        except (psycopg2.Error, ConnectionError, PostgresError) as exc:
            _log.warning("health check failed: %s", exc)
            if self._conn is not None:
                self._conn.close()
            self._conn, self._cached = None, None
            raise HTTPException(503, _UNAVAILABLE) from exc
        finally:
            self._lock.release()


class _BodyTooLarge(Exception):
    pass


class BodyLimit:
    """ASGI middleware: 413 for request bodies over max_bytes (by Content-Length, or while streaming)."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def _refuse(self, send: _Send) -> None:
        body = json.dumps({"detail": f"request body over {self.max_bytes} bytes; send a smaller request"}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: _Scope, receive: _Receive, send: _Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            await self._refuse(send)
            return
        received = 0
        started = False

        async def limited() -> MutableMapping[str, Any]:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _BodyTooLarge
            return message

        async def tracking(message: MutableMapping[str, Any]) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited, tracking)
        except _BodyTooLarge:
            if not started:
                await self._refuse(send)


def _docs_page(schema: dict[str, Any]) -> str:
    """A self-contained HTML page describing the API (no scripts or assets from a CDN)."""
    rows = []
    for path, methods in schema.get("paths", {}).items():
        for method, op in methods.items():
            summary = html.escape(op.get("summary", "") + ": " + (op.get("description") or "").split("\n")[0])
            rows.append(f"<tr><td><code>{method.upper()}</code></td><td><code>{html.escape(path)}</code></td>"
                        f"<td>{summary}</td></tr>")  # fmt: skip
    models = html.escape(json.dumps(schema.get("components", {}).get("schemas", {}), indent=1))
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>microsnoop similarity search</title></head><body>"
        "<h1>microsnoop similarity search</h1><p>Send <code>Authorization: Bearer KEY</code> (or "
        "<code>X-API-Key</code>) when the server has keys. Machine-readable: <a href='openapi.json'>openapi.json</a>."
        f"</p><table border='1' cellpadding='4'>{''.join(rows)}</table><h2>Schemas</h2><pre>{models}</pre>"
        "</body></html>"
    )


def authenticator(keys: KeyRing | None) -> Callable[[Request], ApiKey | None]:
    """The request dependency naming the calling key (None when the API runs open); 401/403 otherwise."""

    def caller(request: Request) -> ApiKey | None:
        if keys is None:
            return None
        header = request.headers.get("authorization", "")
        token = header[7:].strip() if header[:7].lower() == "bearer " else request.headers.get("x-api-key")
        key = keys.authenticate(token)
        if key is None:
            raise HTTPException(
                401, "missing or unknown API key; send Authorization: Bearer <key>", {"WWW-Authenticate": "Bearer"}
            )
        if READ_SCOPE not in key.scopes:
            raise HTTPException(403, f"key {key.name!r} lacks the {READ_SCOPE} scope")
        return key

    return caller


def create_app(settings: PlatformSettings, *, config: ApiConfig | None = None, keys: KeyRing | None = None) -> FastAPI:
    """The search API over the feature store of settings (keys: from settings.search_api_keys when not given)."""
    config = config or ApiConfig()
    if keys is None and settings.search_api_keys:
        keys = KeyRing(Path(settings.search_api_keys))
    app = FastAPI(title="microsnoop similarity search", version="1", docs_url=None, redoc_url=None)
    app.add_middleware(BodyLimit, max_bytes=config.max_body_bytes)
    holder = _StoreHolder(settings, config)
    health_check = _Health(settings, config.health_ttl_s)
    app.state.store_holder = holder
    app.state.keys = keys

    caller = authenticator(keys)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        """422 naming each problem, without echoing the (possibly huge) input."""
        errors = [
            {"loc": list(e.get("loc", ()))[:6], "msg": str(e.get("msg", ""))[:300], "type": e.get("type")}
            for e in exc.errors()[:10]
        ]
        return JSONResponse(status_code=422, content={"detail": errors})

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return HTMLResponse(_docs_page(app.openapi()))

    @app.get("/health")
    def health() -> dict[str, Any]:
        """Readiness: 200 with row counts while the database answers, else 503 (no key needed)."""
        return health_check.check()

    authorised = [Depends(caller)]

    @app.post("/search", response_model=SearchResponse, dependencies=authorised)
    def search(request: SearchRequest) -> SearchResponse:
        """The k nearest entities by cosine distance to a vector or to a stored entity."""
        with holder.store() as store:
            version = request.model_version or holder.latest(store, request.level)
            hits = store.search(
                request.level,
                model_version=version,
                vector=None if request.vector is None else np.asarray(request.vector, dtype=np.float64),
                raw_query=request.space == "raw",
                entity_id=request.entity_id,
                k=request.k,
                filters={str(k): v for k, v in request.filters.items()},
                exclude_same=tuple(request.exclude_same),
                exact=request.exact,
                ef_search=request.ef_search,
            )
        return SearchResponse(
            level=request.level,
            model_version=version,
            ids=[h.entity_id for h in hits],
            distances=[h.distance for h in hits],
            hits=[HitOut(entity_id=h.entity_id, distance=h.distance, metadata=h.metadata) for h in hits],
        )

    @app.get("/entities/{level}/{entity_id:path}", dependencies=authorised)
    def entity(level: Level, entity_id: str, model_version: str | None = None) -> dict[str, Any]:
        """One stored entity's metadata and vector (ids may contain '/')."""
        for name, value in (("entity_id", entity_id), ("model_version", model_version)):
            if value is not None and ("\x00" in value or len(value) > 500):
                raise HTTPException(422, f"{name} must be at most 500 characters without NUL bytes")
        with holder.store() as store:
            version = model_version or holder.latest(store, level)
            frame = store.get(level, [entity_id], model_version=version)
        if frame.empty:
            raise HTTPException(404, f"no {level} entity {entity_id!r} under model {version!r}; check the id")
        row = frame.iloc[0].to_dict()
        vector = row.pop("embedding")
        metadata = {k: v for k, v in row.items() if v is not None and k != "entity_id"}
        metadata["published_at"] = row["published_at"].isoformat()
        return {
            "entity_id": entity_id,
            "model_version": version,
            "metadata": metadata,
            "vector": vector.tolist(),
            "space": "published",
        }

    return app


_LOOPBACK = {"127.0.0.1", "::1", "localhost"}


def serve(settings: PlatformSettings, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Run the search API with uvicorn until interrupted (refuses to run open on a non-loopback address)."""
    import uvicorn

    from services.featurestore.server import ensure_postgres

    if not settings.search_api_keys:
        if host not in _LOOPBACK:
            raise SystemExit(
                f"error: refusing to serve the search API without keys on {host}; set MICROSNOOP_SEARCH_API_KEYS "
                "to a keys file (python -m services.search_auth NAME makes one) or bind 127.0.0.1"
            )
        _log.warning("the search API runs WITHOUT authentication on %s:%d (loopback only; no keys file)", host, port)
    if settings.embedded_postgres:
        ensure_postgres(settings)  # started once here; later outages are reported, not repaired
    uvicorn.run(create_app(settings), host=host, port=port, log_level="info")
