"""Object store and staging hardening (issue 14): traversal, manifest hashes, symlinks; each failed on the old code."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest

from services.settings import PlatformSettings
from services.staging import fetch_source
from services.storage import ChecksumMismatchError, FileStore, StorageError, contained


def _settings() -> PlatformSettings:
    return PlatformSettings(s3_access_key="k", s3_secret_key="s", s3_endpoint="127.0.0.1:9")


@pytest.mark.parametrize("entry", ["s3://x/../../../../escaped/evil.tif", "../../../../escaped/evil.tif"])
def test_fetch_source_never_writes_outside_its_destination(tmp_path: Path, entry: str) -> None:
    remote = tmp_path / "remote"
    remote.mkdir()
    pd.DataFrame({"path": [entry]}).to_csv(remote / "table.csv", index=False)
    dest = tmp_path / "a" / "b" / "dest"
    with pytest.raises((ValueError, StorageError), match=r"\.\."):
        fetch_source((remote / "table.csv").as_uri(), dest, _settings())
    assert not (tmp_path / "a" / "escaped").exists() and not (tmp_path / "escaped").exists()


def test_contained_refuses_symlinked_escapes(tmp_path: Path) -> None:
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "link").symlink_to(tmp_path)
    with pytest.raises(StorageError, match="outside"):
        contained(tmp_path / "root", "link/x.tif")
    assert contained(tmp_path / "root", "a/b.tif") == tmp_path / "root" / "a" / "b.tif"


def test_manifest_sha256_is_compared_with_keys_and_content(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "store")
    source = tmp_path / "a.tif"
    source.write_bytes(b"original")
    obj = store.put_file(source, kind="images")
    plain_uri = store.uri_for("tables/t.csv")  # not content-addressed: only the manifest knows its hash
    (tmp_path / "store" / "tables").mkdir()
    (tmp_path / "store" / "tables" / "t.csv").write_bytes(b"a,b\n")
    entries = [
        {**obj.__dict__},
        {"uri": plain_uri, "sha256": "0" * 64, "size": 4, "kind": "tables", "name": "t.csv"},
    ]
    manifest = store.manifest_uri("m")
    body = {"format": "microsnoop-manifest/1", "name": "m", "root": store.root, "objects": entries, "extra": {}}
    Path(manifest.removeprefix("file://")).parent.mkdir(parents=True, exist_ok=True)
    Path(manifest.removeprefix("file://")).write_text(json.dumps(body))
    with pytest.raises(ChecksumMismatchError, match="SHA-256"):
        store.fetch_manifest("m", tmp_path / "out")  # the table's content differs from the manifest's hash
    body["objects"][0]["sha256"] = "f" * 64  # an entry whose hash contradicts its content-addressed key
    Path(manifest.removeprefix("file://")).write_text(json.dumps(body))
    with pytest.raises(StorageError, match="differs from the key"):
        store.read_manifest("m")


def test_file_store_never_follows_symlinks(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("root password")
    store = FileStore(tmp_path / "store")
    (tmp_path / "store" / "images").mkdir(parents=True)
    (tmp_path / "store" / "images" / "evil.txt").symlink_to(secret)
    (tmp_path / "store" / "linked").symlink_to(tmp_path)
    with pytest.raises(StorageError, match="symlink"):
        store.read_bytes(store.uri_for("images/evil.txt"))
    with pytest.raises(StorageError, match="symlink"):
        store.read_bytes(store.uri_for("linked/secret.txt"))
    assert not store.exists(store.uri_for("images/evil.txt"))
    assert store.list_uris() == []
    assert os.path.exists(secret)
