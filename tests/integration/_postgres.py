"""A real embedded PostgreSQL + pgvector server for the session, in a temporary folder.

The folders live directly under the system temp dir, not under pytest's ``pytest-of-<user>``: pytest
resets that folder to mode 0700 whenever a session starts, and as root the server runs as its own
system user, which must be able to traverse to its data dir.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.featurestore.server import ensure_postgres, stop_postgres
from services.settings import PlatformSettings


@contextlib.contextmanager
def embedded_platform(prefix: str) -> Iterator[PlatformSettings]:
    """Fresh embedded services (PostgreSQL running, MLflow and store folders) in a reachable temp folder."""
    path = Path(tempfile.mkdtemp(prefix=f"microsnoop-{prefix}-"))
    settings = PlatformSettings().with_data_dir(path)
    try:
        ensure_postgres(settings)
        yield settings
    finally:
        stop_postgres(settings)
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def pg_tmp_dir() -> Iterator[Path]:
    """An empty folder a server's system user can reach (removed afterwards)."""
    path = Path(tempfile.mkdtemp(prefix="microsnoop-pg-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_settings() -> Iterator[PlatformSettings]:
    """Settings whose data_dir holds a running embedded server (stopped and removed at the end of the session)."""
    with embedded_platform("pg") as settings:
        yield settings


@pytest.fixture(scope="session")
def pg_dsn(pg_settings: PlatformSettings) -> str:
    """The DSN of the session's embedded server."""
    return ensure_postgres(pg_settings)
