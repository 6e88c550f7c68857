"""Issue 12 item 6: the published decoder adds the style before BatchNorm (momentum 0.1).

Old checkpoints keep their variant and give the same embeddings.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from microsnoop.config import EncoderConfig, PreprocessContract, config_from_dict
from microsnoop.device import init_runtime
from microsnoop.embed import embed_images
from microsnoop.models.checkpoint import load_checkpoint, load_encoder, load_unet, save_checkpoint
from microsnoop.models.unet import MicrosnoopUNet, StyleConv

SHIPPED = Path(__file__).resolve().parents[2] / "models" / "microsnoop-cpu-v1.pt"


def test_style_before_or_after_batchnorm_by_hand() -> None:
    layer = StyleConv(1, 1, 1, 1, style_before_bn=True).eval()
    with torch.no_grad():
        layer.full.weight.fill_(1.0)
        layer.full.bias.zero_()
        layer.conv.weight.fill_(1.0)
        layer.conv.bias.zero_()
        layer.bn.running_mean.fill_(2.0)
        layer.bn.running_var.fill_(4.0 - 1e-5)  # sd 2
    x, style = torch.full((1, 1, 1, 1), 6.0), torch.ones(1, 1)
    # before BN: relu(((6 + 1) - 2) / 2) = 2.5 ; after BN: relu((6 - 2) / 2 + 1) = 3.0
    assert layer(style, x).item() == pytest.approx(2.5, abs=1e-4)
    layer.style_before_bn = False
    assert layer(style, x).item() == pytest.approx(3.0, abs=1e-4)


def test_variant_sets_batchnorm_momentum() -> None:
    ref = MicrosnoopUNet(EncoderConfig(depths=(8, 16), decoder_variant="reference"))
    old = MicrosnoopUNet(EncoderConfig(depths=(8, 16)))
    moms = {m.momentum for m in ref.modules() if isinstance(m, torch.nn.BatchNorm2d)}
    assert moms == {0.1}
    assert {m.momentum for m in old.modules() if isinstance(m, torch.nn.BatchNorm2d)} == {0.05}


def test_variant_is_recorded_and_old_configs_load_as_cellpose3(tmp_path: Path) -> None:
    assert config_from_dict(EncoderConfig, {"depths": [8, 16]}).decoder_variant == "cellpose3"
    model = MicrosnoopUNet(EncoderConfig(depths=(8, 16), decoder_variant="reference"))
    path = save_checkpoint(tmp_path / "r.pt", model, preprocess=PreprocessContract(), provenance={})
    assert load_checkpoint(path).encoder.decoder_variant == "reference"
    loaded, _ = load_unet(path)
    assert all(isinstance(b.conv1, StyleConv) and b.conv1.style_before_bn for b in loaded.decoder.blocks)


@pytest.mark.skipif(not SHIPPED.is_file(), reason="the shipped checkpoint is not in this checkout")
def test_shipped_checkpoint_gives_the_same_embeddings_as_before() -> None:
    """Values computed with the code before the canvas / pooling / decoder-variant changes (commit ab35c63)."""
    ckpt = load_checkpoint(SHIPPED)
    assert ckpt.encoder.decoder_variant == "cellpose3"
    assert (ckpt.preprocess.canvas, ckpt.preprocess.pooling) == ("fixed", "all")
    encoder = load_encoder(SHIPPED)
    images = np.random.default_rng(0).integers(0, 4000, size=(6, 2, 40, 40)).astype(np.uint16)
    runtime = init_runtime(device="cpu", amp="off", channels_last=False)
    emb = embed_images(encoder, images, encoder.preprocess, runtime)
    before = np.array(
        [
            [-0.082602, 0.1428, -0.030507, 0.002162, -0.033034],
            [-0.082667, 0.1428, -0.030598, 0.002408, -0.033037],
        ]
    )
    np.testing.assert_allclose(emb[:2, [0, 1, 2, 300, 511]], before, atol=2e-6)
