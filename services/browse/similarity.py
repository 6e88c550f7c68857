"""Nearest neighbours from pgvector with plate/compound/MoA filters, paginated browsing, and uploaded queries."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from services.browse.errors import BrowseError
from services.browse.projection import flatten_metadata
from services.featurestore import FeatureStore, Hit
from services.settings import PlatformSettings

# Filter choices a page offers per key: keep any, only the query's value, or only other values.
FILTER_KEYS = ("plate", "compound", "moa")
FILTER_MODES = ("any", "same", "other")
PAGE_SIZE = 50
# Uploads are refused beyond these (a small, crowded field once took a minute and 2.6 GB to embed).
MAX_UPLOAD_BYTES = 16 * 2**20
MAX_UPLOAD_PIXELS = 2048 * 2048
MAX_UPLOAD_CELLS = 200
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:])")


def escape_markdown(value: object) -> str:
    """``value`` as literal text inside ``st.markdown`` (no links, images, HTML or formatting from metadata)."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", " ".join(str(value).split()))


def upload_pixels(data: bytes, name: str) -> int:
    """Pixels per plane of an uploaded image, read from its header without decoding it (0 when unknown)."""
    import io

    suffix = Path(name).suffix.lower()
    try:
        if suffix in (".tif", ".tiff"):
            import tifffile

            with tifffile.TiffFile(io.BytesIO(data)) as tif:
                shape = tif.series[0].shape
                return int(np.prod(shape[-2:])) if len(shape) >= 2 else 0
        from PIL import Image

        with Image.open(io.BytesIO(data)) as img:
            return int(img.size[0]) * int(img.size[1])
    except Exception as exc:  # any decoder failure means "not an image we can read" (re-raised)
        raise BrowseError(f"{name}: not a readable PNG, JPEG or TIFF image ({exc.__class__.__name__})") from exc


def check_upload(data: bytes, name: str) -> None:
    """Refuse uploads over the byte or pixel caps, before any decoding."""
    if len(data) > MAX_UPLOAD_BYTES:
        raise BrowseError(
            f"{name}: {len(data) / 2**20:.1f} MiB is over the {MAX_UPLOAD_BYTES / 2**20:.0f} MiB upload limit; "
            "crop or compress the image"
        )
    pixels = upload_pixels(data, name)
    if pixels > MAX_UPLOAD_PIXELS:
        raise BrowseError(
            f"{name}: {pixels:,} pixels per plane is over the {MAX_UPLOAD_PIXELS:,} limit; "
            "crop or downscale the image (e.g. to 2048 x 2048)"
        )


def browse_page(
    store: FeatureStore, level: str, model_version: str, *, page: int = 0, page_size: int = PAGE_SIZE
) -> pd.DataFrame:
    """One page (0-based) of a level's entities, metadata only, ordered by entity id."""
    if page < 0:
        raise BrowseError(f"page must be >= 0, got {page}")
    frame = store.page(level, model_version=model_version, offset=page * page_size, limit=page_size)
    return flatten_metadata(frame)


@dataclass(frozen=True)
class Query:
    """A search: a stored entity (by id) or an uploaded image's vector, with per-key filter modes."""

    level: str
    model_version: str
    entity_id: str | None = None
    vector: np.ndarray | None = None
    k: int = 8
    modes: tuple[tuple[str, str], ...] = ()  # (key, "any" | "same" | "other")


def _plan(store: FeatureStore, query: Query) -> tuple[dict[str, str], list[str]]:
    """FeatureStore.search filters (same value) and exclude_same keys (other value) for a query."""
    filters: dict[str, str] = {}
    exclude: list[str] = []
    wanted = {key: mode for key, mode in query.modes if mode != "any"}
    for key, mode in wanted.items():
        if key not in FILTER_KEYS or mode not in FILTER_MODES:
            raise BrowseError(f"filter {key}={mode!r}: use keys {FILTER_KEYS} and modes {FILTER_MODES}")
    if not wanted:
        return filters, exclude
    if query.entity_id is None:
        raise BrowseError("same/other filters compare with the query's metadata; an uploaded image has none")
    row = store.get(query.level, [query.entity_id], model_version=query.model_version)
    if not len(row):
        raise BrowseError(f"no {query.level} {query.entity_id!r} under {query.model_version}")
    for key, mode in wanted.items():
        value = row[key].iloc[0]
        if value is None or (isinstance(value, float) and np.isnan(value)):
            raise BrowseError(f"{query.entity_id} has no {key}; the '{mode} {key}' filter cannot apply")
        if mode == "same":
            filters[key] = str(value)
        else:
            exclude.append(key)
    return filters, exclude


def find_neighbours(store: FeatureStore, query: Query) -> list[Hit]:
    """The query's top-k neighbours (cosine distance, HNSW index), filtered as the query says."""
    filters, exclude = _plan(store, query)
    return store.search(
        query.level,
        model_version=query.model_version,
        entity_id=query.entity_id,
        vector=query.vector,
        k=query.k,
        filters=filters or None,
        exclude_same=exclude,
    )


def hits_frame(hits: Sequence[Hit]) -> pd.DataFrame:
    """Hits as a table: rank, entity_id, distance and the metadata (``extra`` spread out)."""
    rows: list[dict[str, Any]] = [
        {"rank": i + 1, "entity_id": h.entity_id, "distance": h.distance, **h.metadata} for i, h in enumerate(hits)
    ]
    return flatten_metadata(pd.DataFrame(rows))


def embed_upload(
    settings: PlatformSettings,
    data: bytes,
    name: str,
    *,
    ref: str = "champion",
    gray_rgb: bool = True,
    store: FeatureStore | None = None,
) -> tuple[np.ndarray, str]:
    """Embed an uploaded image as the profiling pipeline does (cell-region, classical segmentation).

    Returns the image-level vector and the model version it belongs to (``<model name>/<version>``). With
    ``store``, an upload is scaled with the dataset intensity levels that version's images were embedded
    with, if any (docs/intensity.md), so it lands in their space.
    Falls back to the whole image rescaled when no cell is found; with ``gray_rgb`` an RGB upload becomes
    one gray channel (the demo store holds one-channel fields).
    """
    from microsnoop.device import init_runtime
    from microsnoop.models.checkpoint import load_encoder
    from microsnoop.profile import ProfileConfig, profile_images
    from microsnoop.protocol import with_embedding_options
    from microsnoop.segment import make_segmenter
    from services.browse.thumbnails import decode_image
    from services.registry import resolve_encoder
    from services.steps import EMBED_CANVAS, EMBED_INTENSITY, EMBED_POOLING, model_version_of

    check_upload(data, name)
    checkpoint = resolve_encoder(settings, ref)
    version = model_version_of(Path(checkpoint), settings)
    encoder = load_encoder(checkpoint)
    image = decode_image(data, name)
    if image.shape[-2] * image.shape[-1] > MAX_UPLOAD_PIXELS:  # a header that lied
        raise BrowseError(f"{name}: over {MAX_UPLOAD_PIXELS:,} pixels per plane; crop or downscale the image")
    if gray_rgb and image.shape[0] == 3:
        from microsnoop.io.images import rgb_to_gray

        image = rgb_to_gray(image)[None]
    runtime = init_runtime(device="cpu", amp="off", channels_last=False)
    segmenter = make_segmenter("auto")

    def segment_capped(plane: np.ndarray) -> np.ndarray:
        labels = segmenter.segment(plane)
        n_cells = len(np.unique(labels)) - int((labels == 0).any())
        if n_cells > MAX_UPLOAD_CELLS:
            raise BrowseError(
                f"{name}: {n_cells} nuclei found, over the {MAX_UPLOAD_CELLS} an upload may hold; "
                "upload a crop with fewer cells (or embed the image with 'microsnoop embed')"
            )
        return labels

    config = ProfileConfig(mode="cell-region", rc=1.0)
    contract = with_embedding_options(
        encoder.preprocess, canvas=EMBED_CANVAS, pooling=EMBED_POOLING, intensity=EMBED_INTENSITY
    )
    levels = store.intensity_levels("image", version) if store is not None else ()
    if levels:
        contract = replace(contract, intensity="dataset", intensity_levels=levels)
    (profile,) = profile_images(encoder, [image], contract, runtime, config, segment=segment_capped)
    if profile.embedding is None:
        rescale = ProfileConfig(mode="rescale")
        (profile,) = profile_images(encoder, [image], contract, runtime, rescale)
    if profile.embedding is None:
        raise BrowseError(f"{name}: could not embed the image")
    return np.asarray(profile.embedding, dtype=np.float32), version
