"""The S3 object store (``s3://bucket/prefix``) through the MinIO SDK; any S3-compatible server works."""

from __future__ import annotations

import contextlib
import io
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import certifi
import urllib3
from minio import Minio
from minio.error import MinioException, S3Error
from urllib3.util import Retry, Timeout

from services.settings import PlatformSettings
from services.storage import BLOCK, ObjectStore, StorageCredentialsError, StorageError

log = logging.getLogger(__name__)

_MISSING = {"NoSuchKey", "NoSuchBucket", "NoSuchObject", "ResourceNotFound", "NotFound"}
_AUTH = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken"}


def _http_client(*, connect_s: float = 10.0, read_s: float = 300.0) -> urllib3.PoolManager:
    """A pool that fails fast on an unreachable endpoint (minio's default waits 5 minutes to connect)."""
    return urllib3.PoolManager(
        timeout=Timeout(connect=connect_s, read=read_s),
        maxsize=10,
        cert_reqs="CERT_REQUIRED",
        ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
        retries=Retry(total=3, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]),
    )


class S3Store(ObjectStore):
    """An object store in an S3 bucket under an optional key prefix; creates the bucket on first write."""

    def __init__(self, client: Minio, bucket: str, prefix: str = "", *, endpoint: str = "", region: str = "") -> None:
        self.client, self.bucket, self.prefix = client, bucket, prefix.strip("/")
        self.endpoint, self.region = endpoint, region
        self.root = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        self._bucket_ready = False

    @classmethod
    def from_settings(cls, settings: PlatformSettings, uri: str) -> S3Store:
        """Connect to the bucket of ``uri`` with the endpoint, keys, TLS and region in ``settings``."""
        parsed = urlparse(uri)
        if not parsed.netloc:
            raise StorageError(f"{uri}: no bucket in the URI; use s3://bucket or s3://bucket/prefix")
        missing = [
            var
            for var, value in (
                ("MICROSNOOP_S3_ACCESS_KEY", settings.s3_access_key),
                ("MICROSNOOP_S3_SECRET_KEY", settings.s3_secret_key),
            )
            if not value
        ]
        if missing:
            raise StorageCredentialsError(
                f"{uri}: no S3 credentials; set {' and '.join(missing)} "
                "(or AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY) before opening an s3:// store"
            )
        try:
            client = Minio(
                settings.s3_endpoint,
                access_key=settings.s3_access_key,
                secret_key=settings.s3_secret_key,
                secure=settings.s3_secure,
                region=settings.s3_region or None,
                http_client=_http_client(),
            )
        except ValueError as exc:
            raise StorageError(
                f"MICROSNOOP_S3_ENDPOINT={settings.s3_endpoint!r} is not usable ({exc}); give host:port without scheme"
            ) from exc
        return cls(client, parsed.netloc, parsed.path, endpoint=settings.s3_endpoint, region=settings.s3_region)

    def _object(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    @contextlib.contextmanager
    def _errors(self, key: str) -> Iterator[None]:
        """Turn SDK and connection errors into StorageErrors that name the URI and the fix."""
        uri = self.uri_for(key)
        try:
            yield
        except S3Error as exc:
            if exc.code in _MISSING:
                raise self._not_found(key) from exc
            if exc.code in _AUTH:
                raise StorageCredentialsError(
                    f"{uri}: S3 at {self.endpoint} rejected the credentials ({exc.code}); check "
                    "MICROSNOOP_S3_ACCESS_KEY and MICROSNOOP_S3_SECRET_KEY and the key's rights on the bucket"
                ) from exc
            raise StorageError(f"{uri}: S3 error {exc.code}: {exc.message}") from exc
        except MinioException as exc:
            raise StorageError(f"{uri}: S3 at {self.endpoint} answered unexpectedly ({exc})") from exc
        except urllib3.exceptions.HTTPError as exc:
            raise StorageError(
                f"{uri}: cannot reach S3 at {self.endpoint} ({exc.__class__.__name__}); "
                "check MICROSNOOP_S3_ENDPOINT and MICROSNOOP_S3_SECURE"
            ) from exc

    def _ensure_bucket(self) -> None:
        if self._bucket_ready:
            return
        with self._errors(""):
            if not self.client.bucket_exists(self.bucket):
                log.info("creating bucket %s at %s", self.bucket, self.endpoint)
                try:
                    self.client.make_bucket(self.bucket, location=self.region or None)
                except S3Error as exc:  # created meanwhile by another writer
                    if exc.code not in {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}:
                        raise
        self._bucket_ready = True

    def _exists(self, key: str) -> bool:
        try:
            with self._errors(key):
                self.client.stat_object(self.bucket, self._object(key))
        except FileNotFoundError:
            return False
        return True

    def _upload_file(self, key: str, path: Path) -> None:
        self._ensure_bucket()
        with self._errors(key):
            self.client.fput_object(self.bucket, self._object(key), str(path))

    def _upload_bytes(self, key: str, data: bytes, *, content_type: str) -> None:
        self._ensure_bucket()
        with self._errors(key):
            self.client.put_object(
                self.bucket, self._object(key), io.BytesIO(data), len(data), content_type=content_type
            )

    def _iter_chunks(self, key: str) -> Iterator[bytes]:
        with self._errors(key):
            response = self.client.get_object(self.bucket, self._object(key))
            try:
                yield from response.stream(BLOCK)
            finally:
                response.close()
                response.release_conn()

    def _list_keys(self, prefix: str) -> list[str]:
        base = f"{self.prefix}/" if self.prefix else ""
        keys: list[str] = []
        try:
            with self._errors(prefix):
                for obj in self.client.list_objects(self.bucket, prefix=base + prefix, recursive=True):
                    name = obj.object_name or ""
                    if not obj.is_dir and name.startswith(base):
                        keys.append(name[len(base) :])
        except FileNotFoundError:  # no bucket yet: nothing stored
            return []
        return keys
