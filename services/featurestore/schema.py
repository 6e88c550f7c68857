"""The feature store's tables and how an embeddings table maps onto them.

Layout (one design for all three levels, documented here once):

* One table per level: ``cell_embeddings``, ``image_embeddings``, ``treatment_embeddings``, keyed by
  ``(model_version, entity_id)``. Columns: the scalar metadata below, ``extra jsonb`` for every other
  ``Metadata_*`` column, ``published_at timestamptz`` (Feast's event timestamp), ``dim`` and
  ``embedding vector``.
* A model version's dimension d is fixed at its first publish and recorded in ``embedding_models``
  (level, model_version, dim); a later publish of that version with another d fails with a clear
  error. Different versions may have different d in the same table.
* Each level's table is partitioned by ``model_version`` (``PARTITION BY LIST``): every model version
  has its own partition (``<table>_p_<sha1 of the version>``) with its own HNSW index on the typed
  expression ``(embedding::halfvec(d)) halfvec_cosine_ops`` (pgvector's documented way to index a
  column holding several dimensions). A search runs on the partition with the same expression, so a
  model's graph holds only its own vectors, and a publish of one model (even a bulk one that drops and
  rebuilds its index, or a ``replace`` that truncates it) never touches another model's rows or index.
  Other filters use pgvector 0.8 iterative scans; index parameters are in :mod:`.index`.
* Stores created before partitioning (one plain table per level) are migrated on open, in one
  transaction.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

LEVELS: tuple[str, ...] = ("cell", "image", "treatment")
CATALOG = "embedding_models"
ID_COLUMN = "Metadata_EntityID"
MAX_HNSW_DIM = 2000  # pgvector's HNSW limit for the vector type

# store column -> (SQL type, source Metadata_* column)
SCALARS: dict[str, tuple[str, str]] = {
    "plate": ("text", "Metadata_Plate"),
    "well": ("text", "Metadata_Well"),
    "compound": ("text", "Metadata_Compound"),
    "dose": ("double precision", "Metadata_Concentration"),
    "moa": ("text", "Metadata_MoA"),
    "label": ("text", "Metadata_Label"),
    "image_id": ("text", "Metadata_ImageID"),
    "image_uri": ("text", "Metadata_ImageURI"),  # the object-store URI written by the stage step
    "cell_label": ("bigint", "Metadata_CellLabel"),
    "box_x0": ("bigint", "Metadata_BoxX0"),
    "box_y0": ("bigint", "Metadata_BoxY0"),
    "box_x1": ("bigint", "Metadata_BoxX1"),
    "box_y1": ("bigint", "Metadata_BoxY1"),
}
# Metadata columns a level cannot do without (the entity id is built from them).
REQUIRED: dict[str, tuple[str, ...]] = {
    "cell": ("Metadata_ImageID", "Metadata_CellLabel"),
    "image": ("Metadata_ImageID",),
    "treatment": ("Metadata_Compound", "Metadata_Concentration"),
}
# Keys accepted in search/page filters and exclude_same (an allow-list: they become SQL identifiers).
FILTER_KEYS: tuple[str, ...] = (
    "plate", "well", "compound", "dose", "moa", "label", "image_id", "image_uri", "site",
)  # fmt: skip
# Filter keys read from the ``extra`` jsonb (metadata without a column of its own), compared as text.
EXTRA_FILTERS: dict[str, str] = {"site": "Metadata_Site"}
# Columns the staging table receives, in COPY order.
STAGE_COLUMNS: tuple[str, ...] = ("entity_id", *SCALARS, "extra", "dim", "embedding")


class StoreError(ValueError):
    """A publish or query that the feature store cannot carry out; the message says how to fix it."""


def table_name(level: str) -> str:
    """The table holding one level's embeddings (the level is validated)."""
    return f"{check_level(level)}_embeddings"


def check_level(level: str) -> str:
    """Return level if it is one of LEVELS, else raise StoreError."""
    if level not in LEVELS:
        raise StoreError(f"unknown level {level!r}; use one of {', '.join(LEVELS)}")
    return level


def partition_name(level: str, model_version: str) -> str:
    """The partition holding one (level, model_version): a stable identifier under PostgreSQL's 63 bytes."""
    digest = hashlib.sha1(model_version.encode()).hexdigest()[:16]
    return f"{table_name(level)}_p_{digest}"


def index_name(level: str, model_version: str) -> str:
    """The HNSW index of one (level, model_version)'s partition."""
    return f"{partition_name(level, model_version)}_hnsw"


def table_ddl(level: str) -> str:
    """CREATE TABLE IF NOT EXISTS for one level."""
    scalars = ",\n    ".join(f"{name} {sqltype}" for name, (sqltype, _) in SCALARS.items())
    return f"""CREATE TABLE IF NOT EXISTS {table_name(level)} (
    model_version text NOT NULL,
    entity_id text NOT NULL,
    {scalars},
    extra jsonb NOT NULL DEFAULT '{{}}'::jsonb,
    published_at timestamptz NOT NULL DEFAULT now(),
    dim integer NOT NULL,
    embedding vector NOT NULL,
    PRIMARY KEY (model_version, entity_id),
    CHECK (vector_dims(embedding) = dim)
) PARTITION BY LIST (model_version)"""


CATALOG_DDL = f"""CREATE TABLE IF NOT EXISTS {CATALOG} (
    level text NOT NULL,
    model_version text NOT NULL,
    dim integer NOT NULL,
    intensity_levels float8[],
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (level, model_version)
)"""
# Columns added after the catalog's first release, with their type: stores made before get them when a writer
# opens them (only then: ALTER TABLE locks the catalog). intensity_levels: the (low, high) pairs, flattened, of
# a version embedded on one dataset intensity scale (docs/intensity.md); NULL for the per-crop scale.
CATALOG_ADDED_COLUMNS = {"intensity_levels": "float8[]"}


@dataclass(frozen=True)
class Prepared:
    """A validated embeddings table, ready to COPY: rows in STAGE_COLUMNS order and the vectors."""

    entity_ids: list[str]
    scalars: dict[str, list[object]]
    extra: list[str]
    vectors: np.ndarray


def _entity_ids(level: str, table: pd.DataFrame) -> list[str]:
    if ID_COLUMN in table.columns:
        return [str(v) for v in table[ID_COLUMN]]
    missing = [c for c in REQUIRED[level] if c not in table.columns]
    if missing:
        raise StoreError(
            f"{level} table lacks {', '.join(missing)}: {level} ids are built from "
            f"{' and '.join(REQUIRED[level])}; add the column(s) or give explicit ids in {ID_COLUMN}"
        )
    for col in REQUIRED[level]:
        if table[col].isna().any():
            raise StoreError(f"{col} has {int(table[col].isna().sum())} empty values; fill them or drop those rows")
    if level == "image":
        return [str(v) for v in table["Metadata_ImageID"]]
    if level == "cell":
        return [f"{i}:{int(c)}" for i, c in zip(table["Metadata_ImageID"], table["Metadata_CellLabel"], strict=True)]
    return [f"{c}@{d}" for c, d in zip(table["Metadata_Compound"], table["Metadata_Concentration"], strict=True)]


def feature_columns_of(table: pd.DataFrame, feature_columns: list[str] | None) -> list[str]:
    """The feature columns: the given ones (checked) or every column not named Metadata_*."""
    if feature_columns is None:
        feature_columns = [c for c in table.columns if not str(c).startswith("Metadata_")]
    if not feature_columns:
        raise StoreError("the table has no feature columns; pass feature_columns=[...] or add ch*_NNN columns")
    missing = [c for c in feature_columns if c not in table.columns]
    if missing:
        raise StoreError(f"feature columns not in the table: {missing[:5]}; check feature_columns")
    bad = [c for c in feature_columns if not pd.api.types.is_numeric_dtype(table[c])]
    if bad:
        raise StoreError(f"feature columns must be numeric, these are not: {bad[:5]}; pass feature_columns=[...]")
    return feature_columns


def _json_value(value: object) -> object:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def prepare(level: str, table: pd.DataFrame, feature_columns: list[str] | None) -> Prepared:
    """Validate an embeddings table for a publish and split it into ids, scalar metadata, extra and vectors."""
    check_level(level)
    if len(table) == 0:
        raise StoreError("the table is empty; nothing to publish")
    features = feature_columns_of(table, feature_columns)
    vectors = table[features].to_numpy(dtype=np.float32)
    if vectors.shape[1] > MAX_HNSW_DIM:
        raise StoreError(f"{vectors.shape[1]} features exceed HNSW's {MAX_HNSW_DIM}; reduce them (e.g. PCA) first")
    bad_rows = ~np.isfinite(vectors).all(axis=1)
    ids = _entity_ids(level, table)
    zero = ~vectors.any(axis=1)
    if zero.any():
        where = [ids[i] for i in np.flatnonzero(zero)[:5]]
        raise StoreError(f"{int(zero.sum())} rows are all-zero vectors (e.g. {where}): cosine distance is undefined")
    if bad_rows.any():
        where = [ids[i] for i in np.flatnonzero(bad_rows)[:5]]
        raise StoreError(f"{int(bad_rows.sum())} rows have NaN/inf features (e.g. {where}); drop or impute them")
    counts = pd.Series(ids).value_counts()
    dups = counts[counts > 1]
    if len(dups):
        raise StoreError(
            f"{len(dups)} entity ids occur more than once (e.g. {list(dups.index[:5])}); "
            f"aggregate or deduplicate the table, or give unique ids in {ID_COLUMN}"
        )
    if "Metadata_ImageURI" not in table.columns and "Metadata_Path" in table.columns:
        table = table.assign(Metadata_ImageURI=table["Metadata_Path"])  # a local path is the best URI we have
    scalars: dict[str, list[object]] = {}
    for name, (sqltype, source) in SCALARS.items():
        if source not in table.columns:
            scalars[name] = [None] * len(table)
            continue
        col = table[source]
        if sqltype == "text":
            scalars[name] = [None if pd.isna(v) else str(v) for v in col]
        else:
            try:
                numeric = pd.to_numeric(col)
            except (TypeError, ValueError) as exc:
                raise StoreError(f"{source} must be numeric ({sqltype}); fix its values: {exc}") from exc
            cast = float if sqltype == "double precision" else int
            scalars[name] = [None if pd.isna(v) else cast(v) for v in numeric]
    known = {src for _, src in SCALARS.values()} | {ID_COLUMN}
    extra_cols = [c for c in table.columns if str(c).startswith("Metadata_") and c not in known]
    records = table[extra_cols].to_dict("records") if extra_cols else [{}] * len(table)
    extra = [json.dumps({str(k): _json_value(v) for k, v in rec.items()}) for rec in records]
    return Prepared(entity_ids=ids, scalars=scalars, extra=extra, vectors=vectors)
