"""API keys of the search API: hashed at rest, several at once, rotated without a restart.

The keys file (in a cluster: a mounted Secret, see ``infra/helm``) holds one key per line; blank lines
and ``#`` comments are ignored::

    # name      scopes        sha256 of the key
    dashboard   search:read   sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08

Only the SHA-256 of each key is stored (keys are 256-bit random tokens, so a plain hash is enough and
costs microseconds per request). The file is re-read when it changes (its inode, size or mtime, checked
at most once a second), so adding the new key, moving clients over and deleting the old line rotates
keys with no restart. A file that becomes unreadable or malformed keeps the last good keys and logs an
error. Make a key with ``python -m services.search_auth NAME`` (prints the key once and its line).

>>> token, line = new_key("dashboard")
>>> ring = KeyRing.from_text(line)
>>> ring.authenticate(token).name
'dashboard'
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

_log = logging.getLogger(__name__)

READ_SCOPE = "search:read"
SCOPES: tuple[str, ...] = (READ_SCOPE,)
_PREFIX = "sha256:"


class AuthConfigError(ValueError):
    """The keys file cannot be used; the message names the line and the fix."""


@dataclass(frozen=True)
class ApiKey:
    """One accepted key: its name (for logs), its scopes and the SHA-256 of the token."""

    name: str
    scopes: frozenset[str]
    digest: str


def hash_key(token: str) -> str:
    """The stored form of a key: ``sha256:<hex>``."""
    return _PREFIX + hashlib.sha256(token.encode()).hexdigest()


def new_key(name: str, scopes: tuple[str, ...] = (READ_SCOPE,)) -> tuple[str, str]:
    """A fresh random key and its line for the keys file (the key itself is never stored)."""
    token = "msk_" + secrets.token_urlsafe(32)
    return token, f"{name} {','.join(scopes)} {hash_key(token)}"


def parse_keys(text: str, *, source: str = "keys file") -> list[ApiKey]:
    """The keys of a keys file's text; AuthConfigError names the first bad line."""
    keys: list[ApiKey] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 3 or not parts[2].startswith(_PREFIX) or len(parts[2]) != len(_PREFIX) + 64:
            raise AuthConfigError(
                f"{source} line {number}: expected 'NAME SCOPES sha256:<64 hex>'; "
                "make lines with python -m services.search_auth NAME"
            )
        scopes = frozenset(parts[1].split(","))
        unknown = sorted(scopes - set(SCOPES))
        if unknown:
            raise AuthConfigError(f"{source} line {number}: unknown scope(s) {unknown}; use {', '.join(SCOPES)}")
        try:
            bytes.fromhex(parts[2][len(_PREFIX) :])
        except ValueError as exc:
            raise AuthConfigError(f"{source} line {number}: the digest is not hexadecimal") from exc
        keys.append(ApiKey(name=parts[0], scopes=scopes, digest=parts[2].lower()))
    return keys


class KeyRing:
    """The accepted keys, re-read from their file when it changes (no restart to rotate)."""

    def __init__(self, path: Path | None = None, *, check_interval_s: float = 1.0) -> None:
        self.path = path
        self._interval = check_interval_s
        self._keys: list[ApiKey] = []
        self._stamp: tuple[int, int, int] | None = None
        self._checked = 0.0
        self._lock = threading.Lock()
        if path is not None:
            self._keys = parse_keys(Path(path).read_text(), source=str(path))  # fail at start-up, not later
            self._stamp = self._stat()
            self._checked = time.monotonic()

    @classmethod
    def from_text(cls, text: str) -> KeyRing:
        """A ring with fixed keys (tests, examples)."""
        ring = cls()
        ring._keys = parse_keys(text, source="<text>")
        return ring

    def _stat(self) -> tuple[int, int, int] | None:
        assert self.path is not None
        try:
            info = os.stat(self.path)
        except OSError:
            return None
        return (info.st_ino, info.st_size, info.st_mtime_ns)

    def _refresh(self) -> None:
        if self.path is None or time.monotonic() - self._checked < self._interval:
            return
        with self._lock:
            self._checked = time.monotonic()
            stamp = self._stat()
            if stamp == self._stamp:
                return
            try:
                keys = parse_keys(Path(self.path).read_text(), source=str(self.path))
            except (OSError, UnicodeDecodeError, AuthConfigError) as exc:
                _log.error("search API keys not reloaded, keeping the previous %d key(s): %s", len(self._keys), exc)
                return
            self._keys, self._stamp = keys, stamp
            _log.info("search API keys reloaded from %s: %d key(s)", self.path, len(keys))

    def authenticate(self, token: str | None) -> ApiKey | None:
        """The key matching token, or None."""
        if not token:
            return None
        self._refresh()
        digest = hash_key(token)
        found = None
        for key in self._keys:  # every key compared in constant time
            if hmac.compare_digest(key.digest, digest):
                found = key
        return found


def main(argv: list[str] | None = None) -> int:
    """``python -m services.search_auth NAME``: print a new key and the line for the keys file."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or not args[0].replace("-", "").replace("_", "").isalnum():
        print("usage: python -m services.search_auth NAME (letters, digits, - and _)", file=sys.stderr)
        return 2
    token, line = new_key(args[0])
    print(f"key (give it to the client; it is not stored anywhere): {token}")
    print(f"line for the keys file / Secret:                        {line}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
