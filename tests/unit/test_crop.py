"""Cell-region boxes by the paper's formula, rescale and tiles (positions equal cellpose's make_tiles)."""

from __future__ import annotations

import numpy as np
import pytest

from microsnoop.errors import InvalidImageError
from microsnoop.preprocess.crop import (
    box_from_extent,
    cell_boxes,
    check_mask,
    crop_boxes,
    make_tiles,
    rescale_to_square,
    tile_starts,
)


def test_boxes_on_hand_worked_cases() -> None:
    # Cell spanning x 10..30, y 20..30 in a 100x100 image; Rc=1: w=20, h=10, centre (20, 25), Rs=20.
    assert box_from_extent(10, 20, 30, 30, width=100, height=100, rc=1.0) == (0, 5, 40, 45)
    # Rc=2 doubles Rs to 40: clipped at 0 on the left/top.
    assert box_from_extent(10, 20, 30, 30, width=100, height=100, rc=2.0) == (0, 0, 60, 65)
    # A big cell: Rs capped at Sta/2 = 112.
    assert box_from_extent(100, 100, 300, 200, width=1000, height=1000, rc=2.0) == (88, 38, 312, 262)
    # Near the far border: clipped at W and H.
    assert box_from_extent(90, 90, 98, 96, width=100, height=100, rc=1.0) == (86, 85, 100, 100)


def test_cell_boxes_from_labels_and_border_skipping() -> None:
    labels = np.zeros((100, 100), np.int32)
    labels[20:31, 10:31] = 1  # pixels x 10..30, y 20..30 -> the first hand-worked case
    labels[0:5, 50:60] = 2  # touches the top border
    labels[70:80, 70:80] = 4  # label 3 absent
    boxes = cell_boxes(labels, rc=1.0)
    assert [b.label for b in boxes] == [1, 2, 4]
    assert (boxes[0].x0, boxes[0].y0, boxes[0].x1, boxes[0].y1) == (0, 5, 40, 45)
    assert boxes[0].centroid_y == pytest.approx(25.0) and boxes[0].centroid_x == pytest.approx(20.0)
    assert [b.label for b in cell_boxes(labels, rc=1.0, skip_border=True)] == [1, 4]
    image = np.random.default_rng(0).random((3, 100, 100))
    crops = crop_boxes(image, boxes)
    assert crops[0].shape == (3, 40, 40)
    assert np.array_equal(crops[0], image[:, 5:45, 0:40])


def test_mask_shape_must_match() -> None:
    with pytest.raises(InvalidImageError, match="mask shape .* differs"):
        check_mask(np.zeros((2, 64, 64)), np.zeros((64, 60), np.int32))


def test_empty_mask_gives_no_boxes() -> None:
    assert cell_boxes(np.zeros((32, 32), np.int32), rc=2.0) == []


def test_rescale_pads_to_square_then_resizes() -> None:
    image = np.ones((2, 100, 50), np.float32)
    out = rescale_to_square(image, 224)
    assert out.shape == (2, 224, 224)
    assert out[:, 112, 112].min() == pytest.approx(1.0) and out[:, 112, 2].max() == pytest.approx(0.0)


@pytest.mark.parametrize("shape", [(100, 150), (224, 224), (300, 520), (1024, 700)])
def test_tiles_match_cellpose(shape: tuple[int, int]) -> None:
    from cellpose.transforms import make_tiles as cp_make_tiles

    image = np.random.default_rng(0).random((2, *shape)).astype(np.float32)
    tiles = make_tiles(image, 224, 0.1)
    ref, ysub, xsub, _, _ = cp_make_tiles(image, bsize=224, tile_overlap=0.1)
    assert [int(y[0]) for y in ysub][:: len(tile_starts(shape[1]))] == list(tile_starts(shape[0]))
    assert np.allclose(tiles, ref.reshape(-1, *ref.shape[-3:]))
