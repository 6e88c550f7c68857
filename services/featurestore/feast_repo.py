"""Apply the Feast feature repo against the feature store's PostgreSQL and read online features from it.

The repo is written to a run folder (``settings.data_dir / "feast"`` unless given): a copy of
``feature_repo/definitions.py`` plus a generated ``feature_store.yaml`` with a file registry and
postgres offline and online stores on the same server as :class:`FeatureStore`. For the embedded
server ``host`` is its Unix-socket directory (psycopg accepts a directory there), so no TCP port is
opened; for a cluster the DSN's host/port/user/dbname are used. The password is never written: the file
holds ``${MICROSNOOP_FEAST_PG_PASSWORD}`` (Feast substitutes environment variables when it reads the
file, so the ``feast`` CLI works with that variable exported), and :func:`feast_store` fills it in
from the DSN in memory.
"""

from __future__ import annotations

import logging
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import yaml
from psycopg2.extensions import parse_dsn

from services.featurestore.schema import check_level
from services.featurestore.server import ensure_postgres
from services.settings import PlatformSettings

if TYPE_CHECKING:
    from feast import FeatureStore as FeastStore
    from feast.repo_config import RepoConfig

_log = logging.getLogger(__name__)

PROJECT = "microsnoop"
DEFINITIONS = Path(__file__).resolve().parent / "feature_repo" / "definitions.py"
PASSWORD_VARIABLE = "MICROSNOOP_FEAST_PG_PASSWORD"
PASSWORD_PLACEHOLDER = "${" + PASSWORD_VARIABLE + "}"
STORES = ("offline_store", "online_store")


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
        "password": PASSWORD_PLACEHOLDER if parts.get("password") else "",
        "sslmode": parts.get("sslmode", "disable" if host.startswith("/") else "prefer"),
    }


def feature_store_yaml(dsn: str, repo_dir: Path) -> str:
    """The text of feature_store.yaml for a repo in repo_dir on the DSN's server, without the password."""
    config = {
        "project": PROJECT,
        "provider": "local",
        "registry": {"registry_type": "file", "path": str(repo_dir / "registry.db")},
        "offline_store": _postgres_block(dsn),
        "online_store": _postgres_block(dsn),
        "entity_key_serialization_version": 3,
    }
    header = (
        f"# Written by microsnoop. The database password is not stored here: export {PASSWORD_VARIABLE}\n"
        "# before running the feast CLI in this folder (Feast substitutes environment variables).\n"
    )
    return header + yaml.safe_dump(config, sort_keys=False)


def repo_config(repo_dir: Path, dsn: str) -> RepoConfig:
    """Feast's RepoConfig from repo_dir/feature_store.yaml with the DSN's password filled in (in memory only)."""
    from feast.repo_config import RepoConfig

    raw = yaml.safe_load((repo_dir / "feature_store.yaml").read_text())
    password = parse_dsn(dsn).get("password", "")
    for name in STORES:
        if raw.get(name, {}).get("password") == PASSWORD_PLACEHOLDER:
            raw[name]["password"] = password
    config = RepoConfig(**raw)
    config.repo_path = repo_dir
    return config


def feast_store(settings: PlatformSettings, repo_dir: Path) -> FeastStore:
    """A Feast FeatureStore on the repo in repo_dir, connected with the password of the settings' DSN."""
    from feast import FeatureStore as FeastStore

    if not (repo_dir / "feature_store.yaml").exists():
        raise FileNotFoundError(f"no Feast repo in {repo_dir}; run apply_feature_repo(settings) first")
    return FeastStore(repo_path=str(repo_dir), config=repo_config(repo_dir, ensure_postgres(settings)))


def default_repo_dir(settings: PlatformSettings) -> Path:
    """Where apply_feature_repo writes the repo unless told otherwise."""
    return settings.data_dir.resolve() / "feast"


def write_feature_repo(settings: PlatformSettings, repo_dir: Path) -> Path:
    """Write feature_store.yaml and the definitions into repo_dir; return repo_dir."""
    dsn = ensure_postgres(settings)
    repo_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(DEFINITIONS, repo_dir / "definitions.py")
    (repo_dir / "feature_store.yaml").write_text(feature_store_yaml(dsn, repo_dir))
    return repo_dir


def apply_feature_repo(settings: PlatformSettings, *, repo_dir: Path | None = None) -> Path:
    """Write and apply the Feast repo, then materialise incrementally (rows published since the last run); its folder.

    ``materialize_incremental`` starts each feature view where its previous materialisation ended (kept
    in the repo's registry), so a publish costs the rows it wrote, not the whole store; the first run
    of a view (ttl 0) starts a year back, and rows published longer ago than that reach the online
    store with :func:`materialize_all`.
    """
    from services.featurestore.feature_repo import definitions

    repo = write_feature_repo(settings, repo_dir or default_repo_dir(settings))
    store = feast_store(settings, repo)
    store.apply(list(definitions.OBJECTS))  # type: ignore[arg-type]
    store.materialize_incremental(end_date=datetime.now(UTC))
    _log.info("applied the Feast repo in %s and materialised new rows", repo)
    return repo


def materialize_all(settings: PlatformSettings, *, repo_dir: Path | None = None) -> None:
    """Materialise every published row since 2000 into the online store (a full rebuild, e.g. after a restore)."""
    repo = repo_dir or default_repo_dir(settings)
    feast_store(settings, repo).materialize(start_date=datetime(2000, 1, 1, tzinfo=UTC), end_date=datetime.now(UTC))


def online_features(
    settings: PlatformSettings,
    level: str,
    ids: list[str],
    *,
    model_version: str | None = None,
    repo_dir: Path | None = None,
) -> pd.DataFrame:
    """Metadata features of ids from Feast's online store (model_version None: the latest published)."""
    from services.featurestore.feature_repo import definitions

    check_level(level)
    repo = repo_dir or default_repo_dir(settings)
    store = feast_store(settings, repo)
    if model_version is None:
        from services.featurestore.store import FeatureStore

        with FeatureStore(ensure_postgres(settings)) as fs:
            versions = fs.model_versions(level)
        if not versions:
            raise LookupError(f"no {level} embeddings published yet; publish some first")
        model_version = versions[-1]
    key = definitions.JOIN_KEYS[level]
    rows = [{"model_version": model_version, key: str(i)} for i in ids]
    response = store.get_online_features(features=store.get_feature_service(f"{level}_service"), entity_rows=rows)
    return response.to_df()
