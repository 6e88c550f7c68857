"""A real embedded PostgreSQL + pgvector server for the session, in a temporary folder."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from services.featurestore.server import ensure_postgres, stop_postgres
from services.settings import PlatformSettings


@pytest.fixture(scope="session")
def pg_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlatformSettings]:
    """Settings whose data_dir holds a running embedded server (stopped at the end of the session)."""
    settings = PlatformSettings().with_data_dir(tmp_path_factory.mktemp("platform-pg"))
    ensure_postgres(settings)
    yield settings
    stop_postgres(settings)


@pytest.fixture(scope="session")
def pg_dsn(pg_settings: PlatformSettings) -> str:
    """The DSN of the session's embedded server."""
    return ensure_postgres(pg_settings)
