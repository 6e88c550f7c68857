"""Object storage against a real filesystem and a real S3 server (SeaweedFS ``weed mini``)."""

from __future__ import annotations

import hashlib
import socket
from pathlib import Path

import pytest

from services.settings import PlatformSettings
from services.storage import (
    ChecksumMismatchError,
    ObjectNotFoundError,
    ObjectStore,
    StorageCredentialsError,
    StorageError,
    open_store,
    put_tree,
)
from tests.integration._s3 import S3Server

pytestmark = pytest.mark.integration


def _s3_settings(server: S3Server, **overrides: object) -> PlatformSettings:
    values: dict[str, object] = dict(
        s3_endpoint=server.endpoint, s3_access_key=server.access_key, s3_secret_key=server.secret_key
    )
    values.update(overrides)
    return PlatformSettings(**values)  # type: ignore[arg-type]


@pytest.fixture(params=["file", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    """The same tests on a file:// store and on an s3:// store (a fresh prefix per test)."""
    if request.param == "file":
        return open_store(PlatformSettings(data_dir=tmp_path))
    server: S3Server = request.getfixturevalue("s3_server")
    return open_store(_s3_settings(server), f"s3://microsnoop-test/{tmp_path.name}")


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_put_get_round_trip_verifies_checksum(store: ObjectStore, tmp_path: Path) -> None:
    data = bytes(range(256)) * 5000  # > 1 MiB: several read blocks
    src = _write(tmp_path / "in" / "field 1.ome.tiff", data)
    obj = store.put_file(src, kind="images")
    sha = hashlib.sha256(data).hexdigest()
    assert (obj.sha256, obj.size, obj.kind, obj.name) == (sha, len(data), "images", "field 1.ome.tiff")
    assert obj.uri == f"{store.root}/images/{sha[:2]}/{sha}.ome.tiff"
    assert store.exists(obj.uri)
    out = store.get_file(obj.uri, tmp_path / "out" / "copy.tif")
    assert out.read_bytes() == data
    into_dir = store.get_file(obj.uri, (tmp_path / "out"))
    assert into_dir.name == f"{sha}.ome.tiff"
    assert store.read_bytes(obj.uri) == data
    assert not list((tmp_path / "out").glob("*.part"))


def test_put_is_idempotent(store: ObjectStore, tmp_path: Path) -> None:
    a = store.put_file(_write(tmp_path / "a.png", b"same bytes"), kind="masks")
    b = store.put_file(_write(tmp_path / "other" / "b.png", b"same bytes"), kind="masks")
    c = store.put_bytes(b"same bytes", kind="masks", suffix=".png")
    assert a.uri == b.uri == c.uri
    assert b.name == "b.png"
    assert store.list_uris("masks/") == [a.uri]


def test_manifest_round_trip_and_put_tree(store: ObjectStore, tmp_path: Path) -> None:
    for i in range(3):
        _write(tmp_path / "pool" / f"sub{i % 2}" / f"img{i}.tif", f"image {i}".encode())
    _write(tmp_path / "pool" / "notes.txt", b"not an image")
    objects = put_tree(store, tmp_path / "pool", kind="images", pattern="*.tif")
    assert [o.name for o in objects] == ["img0.tif", "img2.tif", "img1.tif"]  # sorted by path
    uri = store.write_manifest("pool-v1", objects, extra={"source": "test"})
    assert uri == f"{store.root}/manifests/pool-v1.json"
    for ref in ("pool-v1", uri):
        body = store.read_manifest(ref)
        assert body["extra"] == {"source": "test"}
        assert [o["sha256"] for o in body["objects"]] == [o.sha256 for o in objects]
    assert len(store.list_uris("images/")) == 3


def test_missing_object_names_the_uri(store: ObjectStore, tmp_path: Path) -> None:
    uri = f"{store.root}/images/00/{'0' * 64}.tif"
    assert not store.exists(uri)
    with pytest.raises(ObjectNotFoundError, match=uri.replace(".", r"\.")):
        store.get_file(uri, tmp_path / "x.tif")
    with pytest.raises(ObjectNotFoundError, match="no such object"):
        store.read_manifest("never-written")
    assert not (tmp_path / "x.tif").exists()
    assert not list(tmp_path.glob("*.part"))


def test_checksum_mismatch_on_download(store: ObjectStore, tmp_path: Path) -> None:
    good = store.put_bytes(b"original", kind="embeddings", suffix=".parquet")
    # Corrupt it in place: write other bytes under the same content-addressed key.
    store._upload_bytes(store.key_for(good.uri), b"tampered", content_type="application/octet-stream")
    with pytest.raises(ChecksumMismatchError, match="does not match"):
        store.get_file(good.uri, tmp_path / "e.parquet")
    assert not (tmp_path / "e.parquet").exists()
    with pytest.raises(ChecksumMismatchError):
        store.read_bytes(good.uri)


def test_uri_outside_root_is_refused(store: ObjectStore) -> None:
    with pytest.raises(StorageError, match="not under this store's root"):
        store.read_bytes("file:///etc/passwd")


def test_unknown_scheme_and_missing_credentials(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="unknown storage scheme 'gs'"):
        open_store(PlatformSettings(data_dir=tmp_path), "gs://bucket/x")
    with pytest.raises(StorageCredentialsError, match="MICROSNOOP_S3_ACCESS_KEY and MICROSNOOP_S3_SECRET_KEY"):
        open_store(PlatformSettings(data_dir=tmp_path), "s3://bucket")
    with pytest.raises(StorageCredentialsError, match="set MICROSNOOP_S3_SECRET_KEY "):
        open_store(PlatformSettings(s3_access_key="k"), "s3://bucket")


def test_bad_credentials_are_named(s3_server: S3Server, tmp_path: Path) -> None:
    store = open_store(_s3_settings(s3_server, s3_secret_key="wrong-secret"), "s3://microsnoop-test/bad")
    with pytest.raises(StorageCredentialsError, match="rejected the credentials"):
        store.put_bytes(b"x", kind="reports", suffix=".json")
    with pytest.raises(StorageCredentialsError, match="MICROSNOOP_S3_SECRET_KEY"):
        store.exists("s3://microsnoop-test/bad/reports/aa/x.json")


def test_bucket_created_on_first_write(s3_server: S3Server) -> None:
    store = open_store(_s3_settings(s3_server), "s3://fresh-bucket-created")
    assert store.list_uris() == []
    obj = store.put_bytes(b"{}", kind="reports", suffix=".json")
    assert store.list_uris() == [obj.uri]
    assert obj.uri.startswith("s3://fresh-bucket-created/reports/")


def test_unreachable_endpoint_names_the_setting(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = PlatformSettings(s3_endpoint=f"127.0.0.1:{port}", s3_access_key="k", s3_secret_key="s")
    with pytest.raises(StorageError, match="cannot reach S3.*MICROSNOOP_S3_ENDPOINT"):
        open_store(settings, "s3://bucket").exists("s3://bucket/x")
