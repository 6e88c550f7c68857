"""Training augmentation: a random rotated and scaled 224 crop, zero outside the image."""

from __future__ import annotations

import numpy as np
from skimage.transform import AffineTransform, warp

from microsnoop.config import AugmentConfig


def random_crop(plane: np.ndarray, size: int, config: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """Sample a ``size x size`` view of ``plane`` at a random centre, angle and scale (bilinear).

    Pixels falling outside the source are zero, so images smaller than ``size`` are zero-padded.
    """
    h, w = plane.shape
    scale = float(rng.uniform(*config.scale_range))
    angle = float(np.deg2rad(rng.uniform(-config.max_rotation_deg, config.max_rotation_deg)))
    half = size / 2.0
    # Centre in the source: anywhere that keeps the (unrotated) window overlapping the image.
    cy = float(rng.uniform(min(half / scale, h / 2), max(h - half / scale, h / 2)))
    cx = float(rng.uniform(min(half / scale, w / 2), max(w - half / scale, w / 2)))
    # Map output coords -> source coords: shift to centre, rotate, scale, shift to (cx, cy).
    to_origin = AffineTransform(translation=(-half, -half))
    rot_scale = AffineTransform(rotation=angle, scale=1.0 / scale)
    to_src = AffineTransform(translation=(cx, cy))
    tform = AffineTransform(matrix=to_src.params @ rot_scale.params @ to_origin.params)
    out = warp(plane, tform, output_shape=(size, size), order=1, mode="constant", cval=0.0, preserve_range=True)
    return out.astype(np.float32, copy=False)
