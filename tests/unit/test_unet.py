"""Network shapes: 1-5 channels, 40-1024 pixels, ``depths[-1]`` numbers per channel (256 for the paper's).

The unit tests run a tiny same-architecture network (depths 8/16/32) in fp32; the paper's size is checked
by the ``slow`` tests.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from microsnoop.config import EncoderConfig, PreprocessContract
from microsnoop.device import init_runtime
from microsnoop.embed import embed_images
from microsnoop.models.unet import MicrosnoopEncoder, MicrosnoopUNet

TINY = EncoderConfig(depths=(8, 16, 32))


def test_tiny_unet_reconstructs_same_shape_and_encoder_matches_style() -> None:
    torch.manual_seed(0)
    model = MicrosnoopUNet(TINY).eval()
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        out = model(x)
        emb = model.forward_features(x)
        deepest = model.encoder(x)[-1]
    assert out.shape == (2, 1, 64, 64)
    assert deepest.shape == (2, 32, 16, 16)
    assert emb.shape == (2, 32)
    assert torch.allclose(emb.norm(dim=1), torch.ones(2), atol=1e-5)
    assert torch.allclose(emb, torch.nn.functional.normalize(deepest.mean(dim=(-2, -1)), dim=1), atol=1e-6)


@pytest.mark.slow
def test_paper_unet_reconstructs_same_shape_and_encoder_matches_style() -> None:
    torch.manual_seed(0)
    model = MicrosnoopUNet().eval()
    x = torch.rand(2, 1, 224, 224)
    with torch.no_grad():
        out = model(x)
        emb = model.forward_features(x)
        deepest = model.encoder(x)[-1]
    assert out.shape == (2, 1, 224, 224)
    assert deepest.shape == (2, 256, 28, 28)
    assert emb.shape == (2, 256)
    assert torch.allclose(emb.norm(dim=1), torch.ones(2), atol=1e-5)


def test_encoder_alone_equals_unet_encoder() -> None:
    torch.manual_seed(0)
    unet = MicrosnoopUNet(TINY).eval()
    enc = MicrosnoopEncoder(TINY).eval()
    enc.load_state_dict({k: v for k, v in unet.state_dict().items() if k.startswith("encoder.")})
    x = torch.rand(3, 1, 96, 96)
    with torch.no_grad():
        assert torch.equal(enc(x), unet.forward_features(x))


def test_configurable_depths() -> None:
    cfg = EncoderConfig(depths=(4, 8, 12, 16, 20))
    model = MicrosnoopUNet(cfg).eval()
    with torch.no_grad():
        assert model(torch.rand(1, 1, 48, 48)).shape == (1, 1, 48, 48)
        assert model.forward_features(torch.rand(1, 1, 48, 48)).shape == (1, 20)
    with pytest.raises(ValueError, match="divisible by 16"):
        model(torch.rand(1, 1, 40, 40))


def test_decoder_rejects_undivisible_size_with_a_fix() -> None:
    with pytest.raises(ValueError, match="divisible by 8; pad it first"):
        MicrosnoopUNet(EncoderConfig(depths=(4, 8, 12, 16)))(torch.rand(1, 1, 50, 50))


@pytest.mark.parametrize("channels", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("size", [40, 68, 224, 300])
def test_embedding_shapes(channels: int, size: int) -> None:
    torch.manual_seed(0)
    encoder = MicrosnoopEncoder(TINY)
    images = np.random.default_rng(0).integers(0, 4000, size=(2, channels, size, size)).astype(np.uint16)
    runtime = init_runtime(device="cpu", amp="off", channels_last=False)
    emb = embed_images(encoder, images, PreprocessContract(), runtime)
    assert emb.shape == (2, channels * 32)
    blocks = emb.reshape(2, channels, 32)
    assert np.allclose(np.linalg.norm(blocks, axis=2), 1.0, atol=1e-4)
    # channel c of image i is embedded on its own: the same plane alone gives the same block
    alone = embed_images(encoder, images[1:, -1:], PreprocessContract(), runtime)
    assert np.allclose(blocks[1, -1], alone[0], atol=1e-5)


@pytest.mark.slow
def test_embedding_of_a_1024_image_and_channel_order() -> None:
    torch.manual_seed(0)
    encoder = MicrosnoopEncoder()
    rng = np.random.default_rng(1)
    images = rng.random((1, 2, 1024, 1024)).astype(np.float32)
    runtime = init_runtime(device="cpu", amp="bf16", channels_last=True)
    emb = embed_images(encoder, images, PreprocessContract(), runtime)
    assert emb.shape == (1, 512)
    swapped = embed_images(encoder, images[:, ::-1].copy(), PreprocessContract(), runtime)
    assert np.allclose(emb[:, :256], swapped[:, 256:], atol=1e-5)
