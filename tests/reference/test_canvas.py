"""Issue 12 item 1 and issue 13 item 1: a crop's embedding depends on the crop and the contract alone.

The canvas is chosen per crop (``canvas_side``), never grown to the largest crop of a chunk, and the
content-aware options (crop-sized canvas, pooling over the crop's footprint) are pinned on hand-worked maps.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from microsnoop.config import EncoderConfig, PreprocessContract
from microsnoop.device import init_runtime
from microsnoop.embed import embed_crops, embed_images
from microsnoop.errors import ConfigError
from microsnoop.models.unet import MicrosnoopEncoder, pool_features
from microsnoop.preprocess.normalize import canvas_side, prepare_groups
from microsnoop.protocol import contract_for_protocol

TINY = EncoderConfig(depths=(8, 16, 32, 64))
FIXED = PreprocessContract(input_size=64)
CONTENT = PreprocessContract(input_size=64, canvas="crop", pooling="valid")


def _encoder() -> MicrosnoopEncoder:
    torch.manual_seed(0)
    return MicrosnoopEncoder(TINY).eval()


def _crops(sizes: list[int], seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.random((2, s, s + 3)).astype(np.float32) * 100 for s in sizes]


def test_canvas_side_by_hand() -> None:
    assert canvas_side((2, 10, 13), FIXED) == 64  # padded to the input size
    assert canvas_side((2, 100, 13), FIXED) == 104  # larger crops: their side, to a multiple of 8
    assert canvas_side((2, 10, 13), CONTENT) == 16  # crop canvas: 13 -> 16
    assert canvas_side((2, 40, 40), CONTENT) == 40


@pytest.mark.parametrize("contract", [FIXED, CONTENT], ids=["fixed", "content-aware"])
def test_embedding_does_not_depend_on_batch_mates(contract: PreprocessContract) -> None:
    enc, rt = _encoder(), init_runtime(device="cpu", amp="off", channels_last=False)
    small, big = _crops([12, 20]), _crops([90], seed=1)
    alone = embed_crops(enc, small[:1], contract, rt)
    with_big = embed_crops(enc, small + big, contract, rt)  # the old code grew every canvas to 96 here
    reordered = embed_crops(enc, big + small[::-1], contract, rt)
    one_per_batch = embed_crops(enc, small + big, contract, rt, batch_size=1)
    for other in (with_big[:1], reordered[2:3], one_per_batch[:1]):
        np.testing.assert_allclose(alone, other, atol=1e-5)


def test_chunk_size_does_not_change_single_cell_vectors() -> None:
    enc, rt = _encoder(), init_runtime(device="cpu", amp="off", channels_last=False)
    images = np.random.default_rng(2).random((7, 2, 24, 24)).astype(np.float32)
    a = embed_images(enc, images, CONTENT, rt, chunk_images=7)
    b = embed_images(enc, images, CONTENT, rt, chunk_images=2, batch_size=3)
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_valid_pooling_by_hand() -> None:
    deep = torch.zeros(1, 1, 2, 2)
    deep[0, 0, 0, 0] = 4.0  # the crop's own position
    deep[0, 0, 1, 1] = 8.0  # a padding position
    valid = torch.zeros(1, 1, 8, 8)
    valid[0, 0, 1:3, 0:4] = 1.0  # footprint inside the top-left 4x4 window only
    assert pool_features(deep).item() == pytest.approx(3.0)  # (4 + 8) / 4
    assert pool_features(deep, valid).item() == pytest.approx(4.0)  # only the covered window


def test_valid_pooling_ignores_the_padding_of_a_fixed_canvas() -> None:
    """On a canvas the crop fills exactly, 'valid' and 'all' agree; padding changes only 'all'."""
    enc, rt = _encoder(), init_runtime(device="cpu", amp="off", channels_last=False)
    crop = _crops([32])[0][:, :, :32]
    exact = embed_crops(enc, [crop], PreprocessContract(input_size=32, canvas="crop"), rt)
    valid_on_64 = embed_crops(enc, [crop], PreprocessContract(input_size=64, pooling="valid"), rt)
    all_on_64 = embed_crops(enc, [crop], FIXED, rt)
    assert np.abs(all_on_64 - exact).max() > 1e-3
    # convolutions see zero padding at the crop's border on the larger canvas: close, not identical
    assert np.abs(valid_on_64 - exact).max() < np.abs(all_on_64 - exact).max()


def test_groups_keep_keys() -> None:
    crops = _crops([10, 40, 12])
    groups = prepare_groups(crops, CONTENT)
    assert sorted(int(i) for g in groups for i in g.index) == [0, 1, 2]
    for g in groups:
        assert g.planes.shape[0] == 2 * len(g.index) and g.boxes.shape == (g.planes.shape[0], 4)


def test_reference_protocol_pins_the_published_canvas() -> None:
    ref = contract_for_protocol(CONTENT, "reference")
    assert (ref.canvas, ref.pooling, ref.normalize_before_pad) == ("fixed", "all", False)
    with pytest.raises(ConfigError, match="canvas=fixed, pooling=all"):
        PreprocessContract(protocol="reference", normalize_before_pad=False, canvas="crop")
    with pytest.raises(ConfigError, match="canvas must be one of"):
        PreprocessContract(canvas="tight")
