"""The feature store: embeddings in PostgreSQL + pgvector (typed HNSW search) with Feast definitions over them."""

from services.featurestore.schema import LEVELS, StoreError
from services.featurestore.server import ensure_postgres, stop_postgres
from services.featurestore.store import FeatureStore, Hit, NotFoundError, PublishResult

__all__ = [
    "LEVELS",
    "FeatureStore",
    "Hit",
    "NotFoundError",
    "PublishResult",
    "StoreError",
    "ensure_postgres",
    "stop_postgres",
]
