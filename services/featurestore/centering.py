"""Readable distances: published vectors are centred per model version and level.

Raw Microsnoop embeddings share one dominant direction (every channel block is a unit vector of
mostly positive pooled activations), so raw cosine distances between cells crowd near zero and float
noise can reorder them. Publishing ``(v - centre) / |v - centre|`` with the centre fitted on the first
publish of a (level, model version) spreads them over [0, 2] and keeps the ranking's signal. The centre
is stored beside the vectors (table ``microsnoop_centre``) and applied to every raw query vector and
uploaded image, so stored and queried vectors live in one space. The raw vectors stay in the archived
``embeddings.parquet`` of each profiling run; ``publish_step(..., centre=False)`` publishes them as they are.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

DDL = (
    "CREATE TABLE IF NOT EXISTS microsnoop_centre ("
    " level text NOT NULL, model_version text NOT NULL, centre float8[] NOT NULL, n_fit integer NOT NULL,"
    " fitted_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (level, model_version))"
)


def fit_centre(vectors: np.ndarray) -> np.ndarray:
    """The mean vector (float64) of finite rows; refuses an empty or non-finite table with a one-line error."""
    x = np.asarray(vectors, dtype=np.float64)
    if x.ndim != 2 or len(x) == 0 or not np.isfinite(x).all():
        raise ValueError(f"cannot fit a centre on {x.shape} vectors with non-finite values; clean the table first")
    return x.mean(axis=0)


def apply_centre(vectors: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """Subtract the centre and L2-normalise each row (float32); a row equal to the centre keeps its raw direction.

    >>> apply_centre(np.array([[2.0, 1.0], [0.0, 1.0]]), np.array([1.0, 1.0])).tolist()
    [[1.0, 0.0], [-1.0, 0.0]]
    """
    x = np.atleast_2d(np.asarray(vectors, dtype=np.float64))
    if x.shape[1] != len(centre):
        raise ValueError(f"vectors have {x.shape[1]} numbers but the centre has {len(centre)}; same model version?")
    out = x - centre
    norm = np.linalg.norm(out, axis=1, keepdims=True)
    flat = norm[:, 0] < 1e-12
    out[flat] = x[flat]
    norm[flat] = np.linalg.norm(x[flat], axis=1, keepdims=True).clip(1e-12)
    return (out / norm).astype(np.float32)


def stored_centre(cur: Any, level: str, model_version: str) -> np.ndarray | None:
    """The centre stored for (level, model version), or None (raw vectors were published)."""
    cur.execute("SELECT to_regclass('microsnoop_centre') IS NOT NULL")
    if not cur.fetchone()[0]:
        return None
    cur.execute("SELECT centre FROM microsnoop_centre WHERE level = %s AND model_version = %s", (level, model_version))
    row = cur.fetchone()
    return None if row is None else np.asarray(row[0], dtype=np.float64)


def claim_centre(cur: Any, level: str, model_version: str, vectors: np.ndarray, *, refit: bool = False) -> np.ndarray:
    """The centre of (level, model version): the stored one, else (or with ``refit``) fitted on ``vectors`` and stored.

    Idempotent: re-publishing the same rows finds the same centre; concurrent first publishes keep one.
    """
    cur.execute(DDL)
    fitted = fit_centre(vectors)
    if refit:
        cur.execute(
            "INSERT INTO microsnoop_centre (level, model_version, centre, n_fit) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (level, model_version) DO UPDATE SET centre = EXCLUDED.centre, n_fit = EXCLUDED.n_fit, "
            "fitted_at = now()",
            (level, model_version, fitted.tolist(), len(vectors)),
        )
        return fitted
    cur.execute(
        "INSERT INTO microsnoop_centre (level, model_version, centre, n_fit) VALUES (%s, %s, %s, %s) "
        "ON CONFLICT (level, model_version) DO NOTHING",
        (level, model_version, fitted.tolist(), len(vectors)),
    )
    centre = stored_centre(cur, level, model_version)
    return fitted if centre is None else centre


def centre_table(table: pd.DataFrame, feature_columns: list[str], centre: np.ndarray) -> pd.DataFrame:
    """A copy of the embeddings table with its feature columns centred and re-normalised."""
    out = table.copy()
    out[feature_columns] = apply_centre(table[feature_columns].to_numpy(), centre)
    return out


def median_pair_cosine(vectors: np.ndarray, *, pairs: int = 5000, seed: int = 0) -> float:
    """Median cosine similarity of random distinct row pairs: near 1 means distances too crowded to read.

    >>> round(median_pair_cosine(np.eye(3)), 3)
    0.0
    """
    x = np.asarray(vectors, dtype=np.float64)
    if len(x) < 2:
        raise ValueError("need at least two vectors to compare")
    rng = np.random.default_rng(seed)
    i = rng.integers(len(x), size=pairs)
    j = (i + rng.integers(1, len(x), size=pairs)) % len(x)
    unit = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return float(np.median(np.sum(unit[i] * unit[j], axis=1)))
