"""Full-field image preparation: cell-region boxes (the paper's formula), rescale and tiles."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from skimage.transform import resize

from microsnoop.errors import InvalidImageError


@dataclass(frozen=True)
class CellBox:
    """One cell's crop box ``[x0, y0, x1, y1)`` (pixels) with its label and centroid."""

    label: int
    x0: int
    y0: int
    x1: int
    y1: int
    centroid_y: float
    centroid_x: float


def box_from_extent(
    xmin: float, ymin: float, xmax: float, ymax: float, *, width: int, height: int, rc: float, sta: int = 224
) -> tuple[int, int, int, int]:
    """The paper's box: centre of the cell's extent, half-side ``min(max(w, h) * Rc, Sta / 2)``, clipped.

    >>> box_from_extent(10, 20, 30, 30, width=100, height=100, rc=1.0)
    (0, 5, 40, 45)
    """
    w, h = xmax - xmin, ymax - ymin
    xc, yc = xmin + w / 2, ymin + h / 2
    rs = min(max(w, h) * rc, sta / 2)
    return (int(max(xc - rs, 0)), int(max(yc - rs, 0)), int(min(xc + rs, width)), int(min(yc + rs, height)))


BORDER_RULES = ("four-sides", "top-left")


def touches_border(sy: slice, sx: slice, height: int, width: int, rule: str = "four-sides") -> bool:
    """Whether a cell's bounding slices touch the image edge under ``rule``.

    ``four-sides``: any edge. ``top-left``: the reference's rule, which compares the cell's last pixel
    index (at most H - 1) with H, so only cells touching the top or left edge are ever dropped.
    """
    if rule not in BORDER_RULES:
        raise ValueError(f"border rule must be one of {BORDER_RULES}, got {rule!r}")
    top_left = sy.start == 0 or sx.start == 0
    return top_left if rule == "top-left" else top_left or sy.stop == height or sx.stop == width


def cell_boxes(
    labels: np.ndarray, *, rc: float, sta: int = 224, skip_border: bool = False, border_rule: str = "four-sides"
) -> list[CellBox]:
    """Boxes of every labelled cell (label order); ``skip_border`` drops cells on the edge by ``border_rule``."""
    if labels.ndim != 2:
        raise InvalidImageError(f"label image must be 2-D, got shape {labels.shape}")
    if border_rule not in BORDER_RULES:
        raise InvalidImageError(f"border_rule must be one of {BORDER_RULES}, got {border_rule!r}")
    height, width = labels.shape
    slices = ndi.find_objects(labels.astype(np.int64, copy=False))
    ids = [i + 1 for i, s in enumerate(slices) if s is not None]
    centroids = ndi.center_of_mass(np.ones_like(labels, dtype=np.uint8), labels, ids) if ids else []
    boxes = []
    for lab, (cy, cx) in zip(ids, centroids, strict=True):
        sy, sx = slices[lab - 1]
        if skip_border and touches_border(sy, sx, height, width, border_rule):
            continue
        # Pixel coordinates of the cell: max is the last pixel, as in the reference (xmax - xmin).
        x0, y0, x1, y1 = box_from_extent(
            sx.start, sy.start, sx.stop - 1, sy.stop - 1, width=width, height=height, rc=rc, sta=sta
        )
        boxes.append(CellBox(lab, x0, y0, max(x1, x0 + 1), max(y1, y0 + 1), float(cy), float(cx)))
    return boxes


def crop_boxes(image: np.ndarray, boxes: list[CellBox]) -> list[np.ndarray]:
    """Crop every box from all channels of a ``C x H x W`` image (no padding; the embedder pads)."""
    return [image[:, b.y0 : b.y1, b.x0 : b.x1] for b in boxes]


def check_mask(image: np.ndarray, labels: np.ndarray, *, path: str = "<image>") -> None:
    """Raise when a mask does not fit its image."""
    if labels.shape != image.shape[-2:]:
        raise InvalidImageError(
            f"{path}: mask shape {labels.shape} differs from image shape {image.shape[-2:]}; "
            "segment this image again or fix the pairing of images and masks"
        )


def rescale_to_square(
    image: np.ndarray, size: int = 224, *, anti_aliasing: bool = True, fill: Sequence[float] | None = None
) -> np.ndarray:
    """Pad ``C x H x W`` to a square (with zeros, or ``fill[c]`` per channel), then resize (bilinear) to
    ``C x size x size``. Under a dataset intensity scale the fill is each channel's low level, which scales to 0.

    ``anti_aliasing=False`` is the reference's plain bilinear resize (OpenCV ``INTER_LINEAR``: pixel
    centres, edge pixels repeated), equal to it to float error; the default smooths before shrinking.
    """
    c, h, w = image.shape
    side = max(h, w)
    square = np.zeros((c, side, side), dtype=np.float32)
    if fill is not None:
        square[:] = np.asarray(fill, dtype=np.float32)[:, None, None]
    y0, x0 = (side - h) // 2, (side - w) // 2
    square[:, y0 : y0 + h, x0 : x0 + w] = image
    return resize(
        square,
        (c, size, size),
        order=1,
        preserve_range=True,
        anti_aliasing=anti_aliasing,
        mode="reflect" if anti_aliasing else "edge",  # the default's behaviour is unchanged; edge = OpenCV's
    ).astype(np.float32)


def tile_starts(length: int, bsize: int = 224, overlap: float = 0.1) -> np.ndarray:
    """Tile start positions along one axis, as ``cellpose.transforms.make_tiles`` (non-augmented) places them.

    Re-implemented (and tested equal to cellpose) so the core needs no cellpose install.
    """
    overlap = min(0.5, max(0.05, overlap))
    tile = min(bsize, length)
    n = 1 if length <= bsize else int(np.ceil((1.0 + 2 * overlap) * length / bsize))
    return np.linspace(0, length - tile, n).astype(int)


def make_tiles(image: np.ndarray, bsize: int = 224, overlap: float = 0.1) -> np.ndarray:
    """All ``bsize`` tiles of a ``C x H x W`` image (smaller images give one tile of their size)."""
    _, h, w = image.shape
    ys, xs = tile_starts(h, bsize, overlap), tile_starts(w, bsize, overlap)
    th, tw = min(bsize, h), min(bsize, w)
    return np.stack([image[:, y : y + th, x : x + tw] for y in ys for x in xs])
