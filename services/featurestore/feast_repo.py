"""Apply the Feast feature repo against the feature store's PostgreSQL and read online features from it.

The repo is written to a run folder (``settings.data_dir / "feast"`` unless given): a copy of
``feature_repo/definitions.py`` plus a generated ``feature_store.yaml`` with a file registry and
postgres offline and online stores on the same server as :class:`FeatureStore`. For the embedded
server ``host`` is its Unix-socket directory (psycopg accepts a directory there), so no TCP port is
opened; for a cluster the DSN's host/port/user/password/dbname are used.
"""

from __future__ import annotations

import logging
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from psycopg2.extensions import parse_dsn

from services.featurestore.schema import check_level
from services.featurestore.server import ensure_postgres
from services.settings import PlatformSettings

_log = logging.getLogger(__name__)

PROJECT = "microsnoop"
DEFINITIONS = Path(__file__).resolve().parent / "feature_repo" / "definitions.py"


def _postgres_block(dsn: str) -> dict[str, Any]:
    parts = parse_dsn(dsn)
    host = parts.get("host", "localhost")
    return {
        "type": "postgres",
        "host": host,
        "port": int(parts.get("port", 5432)),
        "database": parts.get("dbname", "postgres"),
        "db_schema": "public",
        "user": parts.get("user", "postgres"),
        "password": parts.get("password", ""),
        "sslmode": parts.get("sslmode", "disable" if host.startswith("/") else "prefer"),
    }


def default_repo_dir(settings: PlatformSettings) -> Path:
    """Where apply_feature_repo writes the repo unless told otherwise."""
    return settings.data_dir.resolve() / "feast"


def write_feature_repo(settings: PlatformSettings, repo_dir: Path) -> Path:
    """Write feature_store.yaml and the definitions into repo_dir; return repo_dir."""
    dsn = ensure_postgres(settings)
    repo_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(DEFINITIONS, repo_dir / "definitions.py")
    config = {
        "project": PROJECT,
        "provider": "local",
        "registry": {"registry_type": "file", "path": str(repo_dir / "registry.db")},
        "offline_store": _postgres_block(dsn),
        "online_store": _postgres_block(dsn),
        "entity_key_serialization_version": 3,
    }
    (repo_dir / "feature_store.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return repo_dir


def apply_feature_repo(settings: PlatformSettings, *, repo_dir: Path | None = None) -> Path:
    """Write and apply the Feast repo, then materialise incrementally (rows published since the last run); its folder.

    ``materialize_incremental`` starts each feature view where its previous materialisation ended (kept
    in the repo's registry), so a publish costs the rows it wrote, not the whole store; the first run
    of a view (ttl 0) starts a year back, and rows published longer ago than that reach the online
    store with :func:`materialize_all`.
    """
    from feast import FeatureStore as FeastStore

    from services.featurestore.feature_repo import definitions

    repo = write_feature_repo(settings, repo_dir or default_repo_dir(settings))
    store = FeastStore(repo_path=str(repo))
    store.apply(list(definitions.OBJECTS))  # type: ignore[arg-type]
    store.materialize_incremental(end_date=datetime.now(UTC))
    _log.info("applied the Feast repo in %s and materialised new rows", repo)
    return repo


def materialize_all(settings: PlatformSettings, *, repo_dir: Path | None = None) -> None:
    """Materialise every published row since 2000 into the online store (a full rebuild, e.g. after a restore)."""
    from feast import FeatureStore as FeastStore

    repo = repo_dir or default_repo_dir(settings)
    if not (repo / "feature_store.yaml").exists():
        raise FileNotFoundError(f"no Feast repo in {repo}; run apply_feature_repo(settings) first")
    FeastStore(repo_path=str(repo)).materialize(start_date=datetime(2000, 1, 1, tzinfo=UTC), end_date=datetime.now(UTC))


def online_features(
    settings: PlatformSettings,
    level: str,
    ids: list[str],
    *,
    model_version: str | None = None,
    repo_dir: Path | None = None,
) -> pd.DataFrame:
    """Metadata features of ids from Feast's online store (model_version None: the latest published)."""
    from feast import FeatureStore as FeastStore

    from services.featurestore.feature_repo import definitions

    check_level(level)
    repo = repo_dir or default_repo_dir(settings)
    if not (repo / "feature_store.yaml").exists():
        raise FileNotFoundError(f"no Feast repo in {repo}; run apply_feature_repo(settings) first")
    if model_version is None:
        from services.featurestore.store import FeatureStore

        with FeatureStore(ensure_postgres(settings)) as fs:
            versions = fs.model_versions(level)
        if not versions:
            raise LookupError(f"no {level} embeddings published yet; publish some first")
        model_version = versions[-1]
    store = FeastStore(repo_path=str(repo))
    key = definitions.JOIN_KEYS[level]
    rows = [{"model_version": model_version, key: str(i)} for i in ids]
    response = store.get_online_features(features=store.get_feature_service(f"{level}_service"), entity_rows=rows)
    return response.to_df()
