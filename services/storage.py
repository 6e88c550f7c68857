"""Content-addressed object storage on ``file://`` or ``s3://`` URIs, with JSON manifests.

Objects are stored under ``{kind}/{sha[:2]}/{sha}{suffix}`` below the store root, so a put is
idempotent and every download of such a key is checked against the hash in its name. A manifest
(``manifests/{name}.json``) lists the objects of one data set (a pool of images, a batch of
embeddings) with their original names.

>>> store = open_store(settings)                      # doctest: +SKIP
>>> obj = store.put_file(Path("a.tif"), kind="images")  # doctest: +SKIP
>>> store.get_file(obj.uri, Path("copy.tif"))           # doctest: +SKIP
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import re
import stat
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from services.settings import PlatformSettings

__all__ = [
    "ChecksumMismatchError",
    "FileStore",
    "ObjectNotFoundError",
    "ObjectStore",
    "StorageCredentialsError",
    "StorageError",
    "StoredObject",
    "contained",
    "content_key",
    "open_store",
    "put_tree",
    "sha256_file",
]

log = logging.getLogger(__name__)

BLOCK = 1 << 20
MANIFEST_FORMAT = "microsnoop-manifest/1"
_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_HEX64 = re.compile(r"^[0-9a-f]{64}")


class StorageError(RuntimeError):
    """An object store operation failed; the message names the URI and the fix."""


class ObjectNotFoundError(StorageError, FileNotFoundError):
    """No object exists at the given URI."""


class ChecksumMismatchError(StorageError):
    """A downloaded object's SHA-256 differs from the one in its content-addressed key."""


class StorageCredentialsError(StorageError):
    """S3 credentials are missing or were rejected."""


@dataclass(frozen=True)
class StoredObject:
    """One object in a store: where it is, its SHA-256 and size, its kind and original file name."""

    uri: str
    sha256: str
    size: int
    kind: str
    name: str


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def content_key(kind: str, sha256: str, suffix: str = "") -> str:
    """The key of a content-addressed object: ``{kind}/{sha[:2]}/{sha}{suffix}``."""
    _check_segment(kind, "kind")
    if suffix and not re.fullmatch(r"(\.[A-Za-z0-9_-]+)+", suffix):
        raise ValueError(f"suffix {suffix!r} must look like '.tif' or '.ome.tiff' (dots and letters only)")
    return f"{kind}/{sha256[:2]}/{sha256}{suffix}"


def expected_sha(key: str) -> str | None:
    """The SHA-256 a content-addressed key (``{kind}/{sha[:2]}/{sha}{suffix}``) names, else None.

    Only that exact layout counts: other objects may have 64-hex names that are not their hash
    (DSB2018 image ids, for one).
    """
    parts = key.split("/")
    base = parts[-1]
    match = _HEX64.match(base)
    if match is None or (len(base) > 64 and base[64] != "."):
        return None
    if len(parts) < 3 or parts[-2] != base[:2]:
        return None
    return match.group(0)


def _expected(uri: str, key: str, sha256: object, *, required: bool = False) -> str | None:
    """The SHA-256 to check a download against: the given one (a manifest's), the key's, or both when they agree."""
    named = expected_sha(key)
    if sha256 is None:
        if required:
            raise ChecksumMismatchError(f"{uri}: the manifest entry has no sha256; rewrite the manifest")
        return named
    if not isinstance(sha256, str) or not re.fullmatch(r"[0-9a-f]{64}", sha256):
        raise ChecksumMismatchError(f"{uri}: sha256 {sha256!r} is not 64 lowercase hex digits; rewrite the manifest")
    if named is not None and named != sha256:
        raise ChecksumMismatchError(f"{uri}: the manifest's sha256 {sha256} differs from the key's; rewrite it")
    return sha256


def contained(root: Path, relative: str) -> Path:
    """``root / relative``, refusing absolute paths, ``..`` segments and symlinks that would leave ``root``."""
    parts = relative.replace("\\", "/").split("/")
    if relative.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise StorageError(f"{relative!r}: not a safe relative path (absolute, empty or '..' segments); fix the entry")
    target = root.joinpath(*parts)
    base = root.resolve()
    if not target.resolve().is_relative_to(base):
        raise StorageError(f"{relative!r} leads outside {root} (through a symlink); fix the entry or the folder")
    return target


def _check_segment(value: str, what: str) -> None:
    if not _SEGMENT.match(value):
        raise ValueError(f"{what} {value!r} must be letters, digits, '.', '_' or '-' (one path segment)")


def _full_suffix(name: str) -> str:
    """``.ome.tiff`` for ``x.ome.tiff``, ``.tif`` for ``x.tif``; only short alphanumeric parts."""
    parts = name.split(".")[1:]
    kept: list[str] = []
    for part in reversed(parts):
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,10}", part) or len(kept) == 2:
            break
        kept.insert(0, part)
    return "".join("." + p.lower() for p in kept)


class _HashingWriter:
    """Writes a stream to a temporary file beside ``dest`` while hashing it; renames on success."""

    def __init__(self, dest: Path) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
        self.dest, self.tmp = dest, Path(tmp)
        self.fh = os.fdopen(fd, "wb")
        self.digest = hashlib.sha256()

    def write_all(self, chunks: Iterator[bytes]) -> None:
        for chunk in chunks:
            self.digest.update(chunk)
            self.fh.write(chunk)

    def commit(self, uri: str, expected: str | None) -> Path:
        self.fh.close()
        actual = self.digest.hexdigest()
        if expected is not None and actual != expected:
            self.tmp.unlink(missing_ok=True)
            raise ChecksumMismatchError(
                f"{uri}: downloaded SHA-256 {actual} does not match the key's {expected}; "
                "the stored object is corrupt, put the original file again"
            )
        self.tmp.replace(self.dest)
        return self.dest

    def abort(self) -> None:
        self.fh.close()
        self.tmp.unlink(missing_ok=True)


class ObjectStore(ABC):
    """A content-addressed store under one root URI; subclasses move bytes, this class names them."""

    root: str

    # -- primitives, keys relative to the root -------------------------------------------------
    @abstractmethod
    def _exists(self, key: str) -> bool: ...

    @abstractmethod
    def _upload_file(self, key: str, path: Path) -> None: ...

    @abstractmethod
    def _upload_bytes(self, key: str, data: bytes, *, content_type: str) -> None: ...

    @abstractmethod
    def _iter_chunks(self, key: str) -> Iterator[bytes]: ...

    @abstractmethod
    def _list_keys(self, prefix: str) -> list[str]: ...

    # -- URIs -----------------------------------------------------------------------------------
    def uri_for(self, key: str) -> str:
        """The URI of ``key`` under this store's root."""
        return f"{self.root.rstrip('/')}/{key}"

    def key_for(self, uri: str) -> str:
        """The key of ``uri``, which must lie under this store's root."""
        base = self.root.rstrip("/") + "/"
        if not uri.startswith(base):
            raise StorageError(
                f"{uri} is not under this store's root {self.root}; open a store for it with open_store(settings, uri)"
            )
        key = uri[len(base) :]
        if not key or any(part in ("", ".", "..") for part in key.split("/")):
            raise StorageError(f"{uri}: not a valid object URI (empty or '..' path segments)")
        return key

    # -- public API -----------------------------------------------------------------------------
    def put_file(self, path: Path, *, kind: str) -> StoredObject:
        """Store a file by content (streamed); a no-op upload when the same content is already there."""
        path = Path(path)
        if not path.is_file():
            raise ObjectNotFoundError(f"{path}: no such file to store; check the path")
        sha = sha256_file(path)
        key = content_key(kind, sha, _full_suffix(path.name))
        if self._exists(key):
            log.debug("%s already stored at %s", path, key)
        else:
            self._upload_file(key, path)
        return StoredObject(uri=self.uri_for(key), sha256=sha, size=path.stat().st_size, kind=kind, name=path.name)

    def put_bytes(self, data: bytes, *, kind: str, suffix: str = "") -> StoredObject:
        """Store bytes by content; the name recorded is the key's file name."""
        sha = hashlib.sha256(data).hexdigest()
        key = content_key(kind, sha, suffix)
        if not self._exists(key):
            self._upload_bytes(key, data, content_type="application/octet-stream")
        return StoredObject(uri=self.uri_for(key), sha256=sha, size=len(data), kind=kind, name=key.rsplit("/", 1)[-1])

    def get_file(self, uri: str, dest: Path, *, sha256: str | None = None) -> Path:
        """Download ``uri`` to ``dest`` (a file, or an existing directory) atomically, checking its SHA-256.

        The expected hash is ``sha256`` when given (from a manifest), else the one a content-addressed key names.
        """
        key = self.key_for(uri)
        expected = _expected(uri, key, sha256)
        dest = Path(dest)
        if dest.is_dir():
            dest = dest / key.rsplit("/", 1)[-1]
        writer = _HashingWriter(dest)
        try:
            writer.write_all(self._iter_chunks(key))
        except BaseException:
            writer.abort()
            raise
        return writer.commit(uri, expected)

    def read_bytes(self, uri: str) -> bytes:
        """The content of ``uri`` (checked against its key's SHA-256 when content-addressed)."""
        key = self.key_for(uri)
        data = b"".join(self._iter_chunks(key))
        expected = expected_sha(key)
        if expected is not None and hashlib.sha256(data).hexdigest() != expected:
            raise ChecksumMismatchError(
                f"{uri}: content does not match the SHA-256 in its key; the stored object is corrupt, put it again"
            )
        return data

    def exists(self, uri: str) -> bool:
        """True when an object exists at ``uri``."""
        return self._exists(self.key_for(uri))

    def list_uris(self, prefix: str = "") -> list[str]:
        """URIs of all objects whose key starts with ``prefix`` (e.g. ``"images/"``), sorted."""
        return [self.uri_for(k) for k in sorted(self._list_keys(prefix.lstrip("/")))]

    def manifest_uri(self, name: str) -> str:
        """The URI of manifest ``name``."""
        _check_segment(name, "manifest name")
        return self.uri_for(f"manifests/{name}.json")

    def write_manifest(self, name: str, objects: Sequence[StoredObject], extra: dict[str, Any] | None = None) -> str:
        """Write ``manifests/{name}.json`` listing ``objects`` (plus ``extra``); returns its URI."""
        uri = self.manifest_uri(name)
        body = {
            "format": MANIFEST_FORMAT,
            "name": name,
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "root": self.root,
            "objects": [asdict(o) for o in objects],
            "extra": extra or {},
        }
        data = json.dumps(body, indent=1, sort_keys=True).encode()
        self._upload_bytes(self.key_for(uri), data, content_type="application/json")
        return uri

    def read_manifest(self, name_or_uri: str) -> dict[str, Any]:
        """Read a manifest by name or URI; every object entry must carry a SHA-256 its key agrees with."""
        uri = name_or_uri if "://" in name_or_uri else self.manifest_uri(name_or_uri)
        try:
            body = json.loads(self.read_bytes(uri))
        except json.JSONDecodeError as exc:
            raise StorageError(f"{uri}: not a JSON manifest ({exc}); rewrite it with write_manifest") from exc
        if not isinstance(body, dict) or body.get("format") != MANIFEST_FORMAT:
            raise StorageError(f"{uri}: not a microsnoop manifest (expected format {MANIFEST_FORMAT!r})")
        for entry in body.get("objects", []):
            if not isinstance(entry, dict) or not isinstance(entry.get("uri"), str):
                raise StorageError(f"{uri}: an object entry has no 'uri'; rewrite the manifest with write_manifest")
            try:
                _expected(entry["uri"], "/".join(entry["uri"].split("/")[-3:]), entry.get("sha256"), required=True)
            except ChecksumMismatchError as exc:
                raise StorageError(f"{uri}: {exc}") from exc
        return body

    def fetch_manifest(self, name_or_uri: str, dest: Path) -> list[Path]:
        """Download every object a manifest lists into ``dest``, each checked against the manifest's SHA-256."""
        body = self.read_manifest(name_or_uri)
        dest.mkdir(parents=True, exist_ok=True)
        paths = []
        for entry in body.get("objects", []):
            target = contained(dest, entry["uri"].rsplit("/", 1)[-1])
            paths.append(self.get_file(entry["uri"], target, sha256=entry["sha256"]))
        return paths

    def _not_found(self, key: str) -> ObjectNotFoundError:
        return ObjectNotFoundError(f"{self.uri_for(key)}: no such object; put it first or check the URI")


class FileStore(ObjectStore):
    """An object store in a local directory (``file:///path``)."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory).resolve()
        self.root = self.directory.as_uri()

    def _path(self, key: str) -> Path:
        """The file of ``key``; refuses keys whose existing components are symlinks (no way out of the store)."""
        path = self.directory
        for part in key.split("/"):
            if part in ("", ".", ".."):
                raise StorageError(f"{self.uri_for(key)}: not a valid object key ('..' or empty segments)")
            path = path / part
            if path.is_symlink():
                raise StorageError(f"{self.uri_for(key)}: {path} is a symlink, which a file:// store never follows; "
                                   "replace it with the file itself")  # fmt: skip
        return path

    def _exists(self, key: str) -> bool:
        try:
            path = self._path(key)
        except StorageError:  # a symlink on the way: not an object of this store
            return False
        return path.exists() and stat.S_ISREG(path.lstat().st_mode)

    def _write_atomic(self, key: str, write: Any) -> None:
        dest = self._path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                write(fh)
            Path(tmp).replace(dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _upload_file(self, key: str, path: Path) -> None:
        def copy(fh: Any) -> None:
            with open(path, "rb") as src:
                for block in iter(lambda: src.read(BLOCK), b""):
                    fh.write(block)

        self._write_atomic(key, copy)

    def _upload_bytes(self, key: str, data: bytes, *, content_type: str) -> None:
        del content_type
        self._write_atomic(key, lambda fh: fh.write(data))

    def _iter_chunks(self, key: str) -> Iterator[bytes]:
        path = self._path(key)
        try:
            fh = os.fdopen(os.open(path, os.O_RDONLY | os.O_NOFOLLOW), "rb")
        except FileNotFoundError:
            raise self._not_found(key) from None
        except OSError as exc:  # ELOOP: a symlink swapped in after the check
            raise StorageError(f"{self.uri_for(key)}: cannot open without following links ({exc})") from exc
        with fh:
            yield from iter(lambda: fh.read(BLOCK), b"")

    def _list_keys(self, prefix: str) -> list[str]:
        if not self.directory.is_dir():
            return []
        keys = []
        for folder, _, names in os.walk(self.directory, followlinks=False):
            for name in names:
                path = Path(folder) / name
                if path.is_symlink() or name.endswith(".part"):
                    continue
                key = path.relative_to(self.directory).as_posix()
                if key.startswith(prefix):
                    keys.append(key)
        return keys


def put_tree(store: ObjectStore, directory: Path, *, kind: str, pattern: str = "*") -> list[StoredObject]:
    """Store every file under ``directory`` matching ``pattern`` (recursively), in sorted path order."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ObjectNotFoundError(f"{directory}: no such directory to store; check the path")
    files = sorted(p for p in directory.rglob(pattern) if p.is_file())
    return [store.put_file(p, kind=kind) for p in files]


def open_store(settings: PlatformSettings, uri: str | None = None) -> ObjectStore:
    """The store for ``uri`` (default: ``settings.store_uri``): a FileStore or an S3Store."""
    uri = uri or settings.store_uri
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise StorageError(f"{uri}: file:// URIs must name a local path (file:///abs/path)")
        return FileStore(Path(unquote(parsed.path)))
    if parsed.scheme == "s3":
        from services.storage_s3 import S3Store

        return S3Store.from_settings(settings, uri)
    raise StorageError(f"{uri}: unknown storage scheme {parsed.scheme!r}; use file:///path or s3://bucket/prefix")
