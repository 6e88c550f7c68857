"""The failures a dashboard page expects (empty store, database down, no champion) and their explanations."""

from __future__ import annotations

from functools import cache

from microsnoop.errors import MicrosnoopError


class BrowseError(RuntimeError):
    """Nothing to show for a request (empty store, missing metadata); the message says what to do."""


@cache
def expected_errors() -> tuple[type[BaseException], ...]:
    """The exception types a page turns into :func:`explain`'s message (imported on first use, not at import)."""
    import psycopg2
    from mlflow.exceptions import MlflowException

    from services.featurestore import StoreError
    from services.featurestore.server import PostgresError
    from services.registry import RegistryError
    from services.storage import StorageError

    return (
        BrowseError,
        ConnectionError,
        PostgresError,
        psycopg2.Error,
        StoreError,
        RegistryError,
        MlflowException,
        StorageError,
        MicrosnoopError,
        OSError,
    )


def explain(exc: BaseException) -> str:
    """A one-paragraph message for a page: what failed and how to fix it (never a traceback)."""
    from services.featurestore import StoreError
    from services.featurestore.server import PostgresError
    from services.registry import RegistryError

    text = str(exc).strip() or exc.__class__.__name__
    if isinstance(exc, ConnectionError | PostgresError) or exc.__class__.__module__.startswith("psycopg2"):
        return (
            f"The feature store database is not reachable: {text}. Start it with 'microsnoop platform up' "
            "(or 'make demo'), or fix MICROSNOOP_PG_DSN."
        )
    if isinstance(exc, RegistryError):
        return f"Model registry: {text}"
    if isinstance(exc, StoreError):
        return f"Feature store: {text}"
    if isinstance(exc, BrowseError):
        return text
    return f"{exc.__class__.__name__}: {text}"
