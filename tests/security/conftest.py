"""Fixtures of the hardening tests: the integration suite's real embedded PostgreSQL."""

from tests.integration._postgres import pg_dsn, pg_settings, pg_tmp_dir  # noqa: F401
