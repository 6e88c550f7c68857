"""PostgreSQL binary COPY encoding for a staging table (text, bigint, double, integer, jsonb, vector)."""

from __future__ import annotations

import struct
from collections.abc import Sequence

import numpy as np

_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
_TRAILER = struct.pack(">h", -1)
_NULL = struct.pack(">i", -1)


def _field(sqltype: str, value: object) -> bytes:
    if value is None:
        return _NULL
    if sqltype == "text":
        data = str(value).encode()
    elif sqltype == "jsonb":
        data = b"\x01" + str(value).encode()
    elif sqltype == "double precision":
        data = struct.pack(">d", value)
    elif sqltype == "bigint":
        data = struct.pack(">q", value)
    elif sqltype == "integer":
        data = struct.pack(">i", value)
    else:
        raise TypeError(f"binary COPY of {sqltype} is not implemented")
    return struct.pack(">i", len(data)) + data


def encode_copy(types: Sequence[str], columns: Sequence[Sequence[object]], vectors: np.ndarray) -> bytes:
    """Encode rows (scalar columns of the given SQL types, then one pgvector column) in COPY BINARY format."""
    n, dim = vectors.shape
    be = np.ascontiguousarray(vectors, dtype=">f4")
    vec_prefix = struct.pack(">ihh", 4 + 4 * dim, dim, 0)
    row_prefix = struct.pack(">h", len(types) + 1)
    parts = [_HEADER]
    for i in range(n):
        parts.append(row_prefix)
        parts.extend(_field(t, col[i]) for t, col in zip(types, columns, strict=True))
        parts.append(vec_prefix)
        parts.append(be[i].tobytes())
    parts.append(_TRAILER)
    return b"".join(parts)
