"""What every page shares: settings, the cached store connection, cached queries, errors shown as messages.

UI glue only: the queries and computation live in :mod:`services.browse`. Cached values are keyed on
the settings (so two data dirs never share a cache) and on the model version.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import numpy as np
import pandas as pd
import streamlit as st

from services.browse import benchmarks as bench
from services.browse import expected_errors, explain, overview, projection, similarity, thumbnails
from services.featurestore import FeatureStore
from services.featurestore.store import ReadOnlyStore
from services.settings import PlatformSettings, load_settings

T = TypeVar("T")
LEVEL_NAMES = {"cell": "cells", "image": "images", "treatment": "treatments"}


def settings() -> PlatformSettings:
    """Platform settings from MICROSNOOP_* (read on every run, so tests can point the app elsewhere)."""
    return load_settings()


def settings_key(s: PlatformSettings) -> str:
    """A cache key naming every setting."""
    return repr(s)


@contextmanager
def explained() -> Iterator[None]:
    """Turn an expected failure (database down, empty store, no champion) into a message and stop the page."""
    try:
        yield
    except expected_errors() as exc:
        st.error(explain(exc), icon=":material/error:")
        st.stop()


def attempt(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call ``fn``; on an expected failure show its explanation and stop the page."""
    with explained():
        return fn(*args, **kwargs)
    raise AssertionError("unreachable")  # st.stop() raised  # pragma: no cover


def open_store(settings: PlatformSettings) -> FeatureStore:
    """The dashboard's store: read-only (no DDL) on a cluster's database, else the embedded server's."""
    # In a cluster the dashboard's database role only reads. Locally the embedded server is started
    # (and its schema created) as before.
    return ReadOnlyStore(settings.pg_dsn) if settings.pg_dsn else FeatureStore.from_settings(settings)


@st.cache_resource(show_spinner="Connecting to the feature store...")
def _store(key: str, _settings: PlatformSettings) -> FeatureStore:
    return open_store(_settings)


def store(s: PlatformSettings) -> FeatureStore:
    """The feature store of ``s`` (one pooled connection per settings), or a message and stop."""
    return attempt(_store, settings_key(s), s)


@st.cache_data(ttl=30, show_spinner=False)
def summary(key: str, _store: FeatureStore) -> overview.StoreSummary:
    """Counts and published versions (refreshed every 30 s)."""
    return overview.summarize_store(_store)


def store_summary(s: PlatformSettings, fs: FeatureStore) -> overview.StoreSummary:
    """Cached summary; an empty store shows a message and stops the page."""
    result = attempt(summary, settings_key(s), fs)
    if result.empty:
        st.info(
            "The feature store is empty: no cell, image or treatment embeddings are published yet. "
            "Run 'make demo' or the profiling pipeline ('microsnoop pipeline run profiling ...') to fill it.",
            icon=":material/inventory_2:",
        )
        st.stop()
    return result


def pick_level_and_version(
    summ: overview.StoreSummary, *, key: str, levels: Sequence[str] = ("cell", "image", "treatment")
) -> tuple[str, str]:
    """Sidebar-free pickers for a level that holds rows and one of its model versions (latest first)."""
    available = [lv for lv in levels if summ.counts.get(lv, 0) > 0]
    if not available:
        st.info(f"No {' or '.join(LEVEL_NAMES[lv] for lv in levels)} are published yet.")
        st.stop()
    left, right = st.columns(2)
    level = left.radio(
        "Level", available, horizontal=True, key=f"{key}-level", format_func=lambda lv: LEVEL_NAMES[lv].title()
    )
    versions = list(reversed(summ.versions.get(level, [])))
    version = right.selectbox("Model version", versions, key=f"{key}-version")
    return str(level), str(version)


@st.cache_data(show_spinner=False, max_entries=64)
def page_of(key: str, _store: FeatureStore, level: str, version: str, page: int, page_size: int) -> pd.DataFrame:
    """One page of entities (metadata only)."""
    return similarity.browse_page(_store, level, version, page=page, page_size=page_size)


@st.cache_data(show_spinner=False, max_entries=16)
def embedding_map(
    key: str, _store: FeatureStore, _settings: PlatformSettings, level: str, version: str, method: str
) -> pd.DataFrame:
    """The cached 2-D map of one (level, model version, method)."""
    return projection.embedding_map(_store, _settings, level, version, method=method)


@st.cache_data(show_spinner=False, ttl=300)
def scores(key: str, _settings: PlatformSettings) -> pd.DataFrame:
    """All benchmark scores."""
    return bench.all_scores(_settings)


@st.cache_data(show_spinner=False, max_entries=2048)
def _thumb(
    key: str,
    _settings: PlatformSettings,
    uri: str,
    box: tuple[int, int, int, int] | None,
    colours: tuple[str, ...],
    low: float,
    high: float,
    size: int,
) -> np.ndarray:
    return thumbnails.stored_thumbnail(_settings, uri, box, colours=colours, low=low, high=high, size=size)


def thumbnail(s: PlatformSettings, row: dict[str, Any], view: dict[str, Any], size: int = 128) -> np.ndarray | None:
    """The row's thumbnail with the sidebar's contrast and colours, or None when its image is unavailable."""
    uri = thumbnails.image_uri(row)
    if uri is None:
        return None
    try:
        return _thumb(
            settings_key(s), s, uri, thumbnails.cell_box(row), view["colours"], view["low"], view["high"], size
        )
    except expected_errors():
        return None


def thumbnail_controls(s: PlatformSettings, sample: dict[str, Any] | None) -> dict[str, Any]:
    """Sidebar controls for thumbnails: contrast percentiles and a colour per channel."""
    n_channels = 1
    uri = thumbnails.image_uri(sample) if sample else None
    if uri is not None:
        try:
            n_channels = thumbnails.channel_count(s, uri)
        except expected_errors():
            n_channels = 1
    with st.sidebar:
        st.subheader("Thumbnails")
        low, high = st.slider("Contrast (percentiles per channel)", 0.0, 100.0, (1.0, 99.5), step=0.5)
        if high <= low:
            high = min(100.0, low + 0.5)
        defaults = thumbnails.default_colours(n_channels)
        names = list(thumbnails.COLOURS)
        colours = tuple(
            st.selectbox(f"Channel {c + 1} colour", names, index=names.index(defaults[c]), key=f"colour-{c}")
            for c in range(n_channels)
        )
    return {"low": float(low), "high": float(high), "colours": colours}


def caption(row: dict[str, Any]) -> str:
    """A short metadata line for a thumbnail (escaped: metadata never becomes markdown, links or images)."""
    keys = ("label", "plate", "well", "compound", "moa")
    values = (row[k] for k in keys if row.get(k) is not None and str(row.get(k)) not in ("nan", "None"))
    return " · ".join(similarity.escape_markdown(v) for v in values)


def thumbnail_grid(s: PlatformSettings, rows: list[dict[str, Any]], view: dict[str, Any], *, columns: int = 4) -> None:
    """Thumbnails in a grid, each with its id (and distance, for search hits) and metadata."""
    for start in range(0, len(rows), columns):
        cells = st.columns(columns)
        for cell, row in zip(cells, rows[start : start + columns], strict=False):
            with cell:
                image = thumbnail(s, row, view)
                if image is None:
                    st.caption("(no stored image)")
                else:
                    st.image(image, width="stretch")
                head = f"**#{row['rank']}** " if "rank" in row else ""
                dist = f"  \ndistance {row['distance']:.4g}" if "distance" in row else ""
                # A code span shows the id literally (no links, HTML or formatting); backticks cannot close it.
                entity = " ".join(str(row["entity_id"]).replace("`", "'").split())
                st.markdown(f"{head}`{entity}`{dist}  \n{caption(row)}")
