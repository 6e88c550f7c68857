"""Local privilege of the embedded PostgreSQL (issue 14); each test failed on the old code."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest
from psycopg2.extensions import make_dsn, parse_dsn

from services.featurestore import server
from services.featurestore.server import PostgresError, ensure_postgres, stop_postgres
from services.settings import PlatformSettings, load_settings

pytestmark = pytest.mark.integration


@pytest.fixture
def long_settings() -> Iterator[PlatformSettings]:
    """A data dir whose socket path is too long for sun_path (the server needs a short socket folder)."""
    base = Path(tempfile.mkdtemp(prefix="microsnoop-sec-"))
    settings = PlatformSettings().with_data_dir(base / ("d" * 90))
    yield settings
    stop_postgres(settings)
    shutil.rmtree(base, ignore_errors=True)


def test_socket_folder_is_private_and_unpredictable(long_settings: PlatformSettings) -> None:
    """An attacker's pre-made folder at the old predictable name is not used; the real one is 0700."""
    import hashlib

    squatted = (
        Path("/tmp") / f"microsnoop-pg-{hashlib.sha256(str(long_settings.pg_data_dir).encode()).hexdigest()[:12]}"
    )
    squatted.mkdir(mode=0o777, exist_ok=True)
    try:
        dsn = ensure_postgres(long_settings)
        socket_dir = Path(parse_dsn(dsn)["host"])
        assert socket_dir != squatted and not any(squatted.iterdir())
        info = socket_dir.stat()
        assert info.st_mode & 0o077 == 0 and info.st_uid == long_settings.pg_data_dir.stat().st_uid
    finally:
        shutil.rmtree(squatted, ignore_errors=True)


def test_a_socket_folder_others_can_enter_is_refused(tmp_path: Path) -> None:
    open_dir = tmp_path / "sock"
    open_dir.mkdir()
    open_dir.chmod(0o777)
    with pytest.raises(PostgresError, match="0700"):
        server._check_socket_dir(open_dir, tmp_path)


def test_connections_need_the_password(pg_settings: PlatformSettings) -> None:
    dsn = ensure_postgres(pg_settings)
    parts = parse_dsn(dsn)
    assert parts.get("password")
    hba = (pg_settings.pg_data_dir / "pg_hba.conf").read_text()
    assert not [line for line in hba.splitlines() if line.strip() and not line.startswith("#") and "trust" in line]
    without = make_dsn(**{k: v for k, v in parts.items() if k != "password"})
    with pytest.raises(psycopg2.OperationalError, match="password"):
        psycopg2.connect(without, connect_timeout=3)
    mode = server.password_file(pg_settings.pg_data_dir).stat().st_mode
    assert mode & 0o077 == 0


def test_a_trust_data_dir_from_an_older_version_gets_a_password(pg_tmp_dir: Path) -> None:
    settings = PlatformSettings().with_data_dir(pg_tmp_dir)
    user = server._system_user()
    server._prepare_dirs(settings.pg_data_dir, user)
    initdb = [str(server._bin_dir() / "initdb"), "-D", str(settings.pg_data_dir), "--auth=trust", "-U", "postgres"]
    assert server._run(initdb, user=user, timeout=120).returncode == 0
    try:
        dsn = ensure_postgres(settings)
        assert "trust" not in (settings.pg_data_dir / "pg_hba.conf").read_text().split("# TYPE")[-1]
        psycopg2.connect(dsn).close()
        without = make_dsn(**{k: v for k, v in parse_dsn(dsn).items() if k != "password"})
        with pytest.raises(psycopg2.OperationalError):
            psycopg2.connect(without, connect_timeout=3)
    finally:
        stop_postgres(settings)


@pytest.mark.skipif(os.geteuid() != 0, reason="the server switches user only when started as root")
def test_the_server_runs_without_root_group(pg_settings: PlatformSettings) -> None:
    ensure_postgres(pg_settings)
    pid = (pg_settings.pg_data_dir / "postmaster.pid").read_text().split()[0]
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    gids = {int(g) for g in status["Gid"].split()} | {int(g) for g in status["Groups"].split()}
    assert 0 not in gids


def test_the_default_data_dir_is_absolute_and_independent_of_the_working_dir(tmp_path: Path) -> None:
    here = PlatformSettings().data_dir
    other = subprocess.run(
        [sys.executable, "-c", "from services.settings import PlatformSettings; print(PlatformSettings().data_dir)"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
        capture_output=True,
        text=True,
        check=True,
    )
    assert here.is_absolute() and Path(other.stdout.strip()) == here
    relative = load_settings({"MICROSNOOP_DATA_DIR": "runs/x"}).data_dir
    assert relative.is_absolute() and relative == Path.cwd() / "runs" / "x"
