"""CellProfiler-style hand-crafted features (cp-measure) on the same crops: the classical baseline."""

from __future__ import annotations

import logging
import warnings

import numpy as np
from scipy import ndimage as ndi
from skimage.filters import threshold_otsu
from tqdm.auto import tqdm

log = logging.getLogger(__name__)


def object_mask(plane: np.ndarray) -> np.ndarray:
    """Largest Otsu-foreground component of a single-cell plane (the whole crop if that fails)."""
    plane = plane.astype(np.float32)
    if plane.max() == plane.min():
        return np.ones(plane.shape, np.int32)
    labels, n = ndi.label(plane > threshold_otsu(plane))
    if n == 0:
        return np.ones(plane.shape, np.int32)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return (labels == sizes.argmax()).astype(np.int32)


def handcrafted_features(
    images: np.ndarray,
    *,
    masks: np.ndarray | None = None,
    mask_channel: int = 0,
    channel_names: list[str] | None = None,
    chunk: int = 64,
    progress: bool = False,
) -> tuple[np.ndarray, list[str]]:
    """Intensity, texture, granularity, radial distribution and shape per channel of ``N x C x H x W`` cells.

    One object per image: ``masks`` (``N x H x W``) or the Otsu object of ``mask_channel``. Non-finite
    values (e.g. undefined texture on tiny objects) become 0 so every baseline row stays usable.
    """
    from cp_measure.featurizer import featurize, make_featurizer_config

    n, c = images.shape[:2]
    names = channel_names or [f"ch{i}" for i in range(c)]
    config = make_featurizer_config(
        names, objects=["cell"], radial_zernikes=False, zernike=False, correlation_costes=False
    )
    if masks is None:
        masks = np.stack([object_mask(img[mask_channel]) for img in images])
    scale = float(np.percentile(images, 99.9)) or 1.0
    rows, columns = [], None
    for start in tqdm(range(0, n, chunk), desc="cp-measure", unit="chunk", disable=not progress):
        sl = slice(start, start + chunk)
        pixels = np.clip(images[sl].astype(np.float32) / scale, 0, 1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            data, cols, meta = featurize(pixels, masks[sl, None].astype(np.int32), config)
        if len(meta) != pixels.shape[0]:
            raise ValueError(f"cp-measure returned {len(meta)} rows for {pixels.shape[0]} cells in chunk {start}")
        rows.append(np.nan_to_num(np.asarray(data, np.float64), nan=0.0, posinf=0.0, neginf=0.0))
        columns = cols
    return np.concatenate(rows), list(columns or [])


def field_features(
    fields: list[np.ndarray], masks: list[np.ndarray], *, progress: bool = False
) -> tuple[np.ndarray, list[str]]:
    """Per-field mean of cp-measure features over the labelled cells of each full field.

    Fields of any channel count are reduced to their channel mean first so every field has the same
    feature columns (DSB2018 mixes grey fluorescence with RGB histology). Fields without cells give 0.
    """
    from cp_measure.featurizer import featurize, make_featurizer_config

    config = make_featurizer_config(
        ["gray"], objects=["cell"], radial_zernikes=False, zernike=False, correlation_costes=False
    )
    rows: list[np.ndarray | None] = []
    columns: list[str] = []
    for field, mask in tqdm(
        zip(fields, masks, strict=True), total=len(fields), desc="cp-measure", disable=not progress
    ):
        plane = field.astype(np.float32) if field.ndim == 2 else field.astype(np.float32).mean(axis=0)
        hi = float(np.percentile(plane, 99.9)) or 1.0
        pixels = np.clip(plane / hi, 0, 1)[None, None]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            data, cols, _ = featurize(pixels, mask.astype(np.int32)[None, None], config)
        columns = list(cols)
        values = np.nan_to_num(np.asarray(data, np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        rows.append(values.mean(axis=0) if len(values) else None)
    width = len(columns)
    return np.stack([r if r is not None else np.zeros(width) for r in rows]), columns
