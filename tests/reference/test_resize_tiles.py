"""Issue 12, item 8: rescale mode resizes without anti-aliasing, and narrow tiles are not padded (reference).

Hand-worked bilinear resizing with pixel centres (output pixel i samples input coordinate
``(i + 0.5) * in / out - 0.5``, clamped to the edge), as a plain bilinear resize does.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from microsnoop.config import EncoderConfig, PreprocessContract
from microsnoop.device import init_runtime
from microsnoop.models.unet import MicrosnoopEncoder
from microsnoop.preprocess.crop import make_tiles, rescale_to_square
from microsnoop.preprocess.normalize import normalize_percentile
from microsnoop.profile import ProfileConfig, profile_images
from microsnoop.protocol import contract_for_protocol


def test_shrinking_by_two_averages_two_by_two_blocks() -> None:
    image = np.arange(16, dtype=np.float32).reshape(1, 4, 4)
    # Output pixel 0 samples input coordinate 0.5 in y and x: the mean of pixels (0..1, 0..1).
    expected = np.array([[[2.5, 4.5], [10.5, 12.5]]], np.float32)
    assert np.allclose(rescale_to_square(image, 2, anti_aliasing=False), expected)
    assert not np.allclose(rescale_to_square(image, 2), expected)  # the default smooths first


def test_enlarging_interpolates_between_pixel_centres() -> None:
    image = np.array([[[0.0, 4.0], [8.0, 12.0]]], np.float32)
    # Coordinates -0.25 (clamped to 0), 0.25, 0.75, 1.25 (clamped to 1): weights 0, 1/4, 3/4, 1 on pixel 1.
    row = np.array([0.0, 1.0, 3.0, 4.0])
    expected = row[None, :] + 2 * row[:, None]
    assert np.allclose(rescale_to_square(image, 4, anti_aliasing=False)[0], expected)


def test_rescale_pads_to_a_centred_square_first() -> None:
    image = np.ones((1, 2, 4), np.float32)  # 2 x 4 -> a 4 x 4 square with one zero row above and below
    out = rescale_to_square(image, 4, anti_aliasing=False)[0]
    assert np.allclose(out[0], 0) and np.allclose(out[1:3], 1) and np.allclose(out[3], 0)


@pytest.fixture(scope="module")
def tiny() -> MicrosnoopEncoder:
    torch.manual_seed(0)
    return MicrosnoopEncoder(EncoderConfig(depths=(8, 16, 32))).eval()


def test_reference_tiles_are_embedded_at_their_own_size(tiny: MicrosnoopEncoder) -> None:
    runtime = init_runtime(device="cpu", amp="off", channels_last=False)
    image = np.random.default_rng(0).random((1, 40, 100)).astype(np.float32) * 100
    contract = PreprocessContract(input_size=64)
    # 40 rows < 64: one tile row of height 40; 100 columns: ceil(1.2 * 100 / 64) = 2 tiles at x = 0, 36.
    tiles = make_tiles(image, 64, 0.1)
    assert tiles.shape == (2, 1, 40, 64)
    planes = np.stack([normalize_percentile(t[0])[None] for t in tiles]).astype(np.float32)
    with torch.inference_mode():
        expected = tiny(torch.from_numpy(planes)).numpy().mean(axis=0)
    ref = contract_for_protocol(contract, "reference")
    got = profile_images(tiny, [image], ref, runtime, ProfileConfig(mode="tile"))[0].embedding
    assert got is not None and np.allclose(got, expected, atol=1e-5)
    padded = profile_images(tiny, [image], contract, runtime, ProfileConfig(mode="tile"))[0].embedding
    assert padded is not None and not np.allclose(padded, expected, atol=1e-3)  # default: padded to 64 x 64
