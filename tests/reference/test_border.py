"""Issue 12, item 5: which cells touching the image edge are skipped.

The reference takes a cell's bounding box as (first row, first column, last row, last column) and drops
the cell when first row == 0, first column == 0, last row == H or last column == W. The last index is at
most H - 1, so only the top and left tests can ever fire. Our default, ``four-sides``, drops all four.
"""

from __future__ import annotations

import numpy as np

from microsnoop.preprocess.crop import cell_boxes


def _labels() -> np.ndarray:
    labels = np.zeros((10, 10), np.int32)
    labels[0:2, 4:6] = 1  # touches the top edge
    labels[4:6, 0:2] = 2  # touches the left edge
    labels[8:10, 4:6] = 3  # touches the bottom edge (last row index 9 = H - 1)
    labels[4:6, 8:10] = 4  # touches the right edge (last column index 9 = W - 1)
    labels[4:6, 4:6] = 5  # inside
    labels[0:2, 0:2] = 6  # top-left corner
    labels[8:10, 8:10] = 7  # bottom-right corner
    return labels


def test_reference_rule_drops_only_top_and_left() -> None:
    kept = [b.label for b in cell_boxes(_labels(), rc=1.0, skip_border=True, border_rule="top-left")]
    assert kept == [3, 4, 5, 7]


def test_default_rule_drops_all_four_sides() -> None:
    assert [b.label for b in cell_boxes(_labels(), rc=1.0, skip_border=True)] == [5]


def test_no_skipping_keeps_every_cell() -> None:
    assert [b.label for b in cell_boxes(_labels(), rc=1.0)] == [1, 2, 3, 4, 5, 6, 7]
