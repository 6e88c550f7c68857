"""HTTP similarity search over the feature store (FastAPI): /health, POST /search, GET /entities/{level}/{id}.

``create_app(settings)`` builds the app; the store is opened on the first request (and reopened after
a database outage), so the app starts even while PostgreSQL is down and answers 503 until it is back.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

import numpy as np
import psycopg2
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, ConfigDict, Field, model_validator

from services.featurestore.schema import StoreError
from services.featurestore.store import MAX_K, FeatureStore, NotFoundError
from services.settings import PlatformSettings

_log = logging.getLogger(__name__)

Level = Literal["cell", "image", "treatment"]
FilterKey = Literal["plate", "well", "compound", "dose", "moa", "label", "image_id", "image_uri"]


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
    """Opens the FeatureStore lazily and drops it when the database goes away."""

    def __init__(self, settings: PlatformSettings) -> None:
        self._settings = settings
        self._store: FeatureStore | None = None
        self._lock = threading.Lock()

    @contextmanager
    def store(self) -> Iterator[FeatureStore]:
        try:
            with self._lock:
                if self._store is None:
                    self._store = FeatureStore.from_settings(self._settings)
                store = self._store
            yield store
        except (psycopg2.OperationalError, psycopg2.InterfaceError, ConnectionError) as exc:
            self.reset()
            _log.warning("feature store unavailable: %s", exc)
            raise HTTPException(503, f"the feature store database is unavailable: {exc}".strip()) from exc
        except NotFoundError as exc:
            raise HTTPException(404, str(exc)) from exc
        except StoreError as exc:
            raise HTTPException(422, str(exc)) from exc

    def reset(self) -> None:
        with self._lock:
            if self._store is not None:
                try:
                    self._store.close()
                except psycopg2.Error:
                    pass
                self._store = None


def _latest(store: FeatureStore, level: str) -> str:
    versions = store.model_versions(level)
    if not versions:
        raise NotFoundError(f"no {level} embeddings published yet; publish some first")
    return versions[-1]


def create_app(settings: PlatformSettings) -> FastAPI:
    """The search API over the feature store of settings."""
    app = FastAPI(title="microsnoop similarity search", version="1")
    holder = _StoreHolder(settings)
    app.state.store_holder = holder

    @app.get("/health")
    def health() -> dict[str, Any]:
        with holder.store() as store:
            store.ping()
            return {"status": "ok", "counts": store.counts()}

    @app.post("/search", response_model=SearchResponse)
    def search(request: SearchRequest) -> SearchResponse:
        with holder.store() as store:
            version = request.model_version or _latest(store, request.level)
            hits = store.search(
                request.level,
                model_version=version,
                vector=None if request.vector is None else np.asarray(request.vector, dtype=np.float32),
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

    @app.get("/entities/{level}/{entity_id}")
    def entity(level: Level, entity_id: str, model_version: str | None = None) -> dict[str, Any]:
        with holder.store() as store:
            version = model_version or _latest(store, level)
            frame = store.get(level, [entity_id], model_version=version)
        if frame.empty:
            raise HTTPException(404, f"no {level} entity {entity_id!r} under model {version!r}; check the id")
        row = frame.iloc[0].to_dict()
        vector = row.pop("embedding")
        metadata = {k: v for k, v in row.items() if v is not None and k != "entity_id"}
        metadata["published_at"] = row["published_at"].isoformat()
        return {"entity_id": entity_id, "model_version": version, "metadata": metadata, "vector": vector.tolist()}

    return app


def serve(settings: PlatformSettings, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Run the search API with uvicorn until interrupted."""
    import uvicorn

    uvicorn.run(create_app(settings), host=host, port=port, log_level="info")
