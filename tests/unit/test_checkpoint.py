"""Checkpoints round-trip bit-exactly and fail clearly on bad files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from microsnoop.config import EncoderConfig, PreprocessContract
from microsnoop.errors import CheckpointError
from microsnoop.models.checkpoint import load_checkpoint, load_encoder, load_unet, save_checkpoint
from microsnoop.models.unet import MicrosnoopUNet


def _model() -> MicrosnoopUNet:
    torch.manual_seed(0)
    model = MicrosnoopUNet(EncoderConfig(depths=(8, 16, 32)))
    model.train()
    with torch.no_grad():  # move BN running stats off their defaults
        model(torch.rand(4, 1, 32, 32))
    return model.eval()


def test_round_trip_is_bit_exact(tmp_path: Path) -> None:
    model = _model()
    contract = PreprocessContract(input_size=64, lower_percentile=2.0)
    path = save_checkpoint(tmp_path / "m.pt", model, preprocess=contract, provenance={"pool_manifest_hash": "abc"})
    loaded, ckpt = load_unet(path)
    for (k, a), (k2, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(a, b), k
    assert ckpt.preprocess == contract
    assert ckpt.encoder == model.config
    assert ckpt.provenance["pool_manifest_hash"] == "abc" and "code_version" in ckpt.provenance
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
        assert torch.equal(model.forward_features(x), load_encoder(path)(x))


def test_encoder_only_half_file_is_smaller_and_close(tmp_path: Path) -> None:
    model = _model()
    full = save_checkpoint(tmp_path / "full.pt", model, preprocess=PreprocessContract(), provenance={})
    half = save_checkpoint(
        tmp_path / "enc.pt", model, preprocess=PreprocessContract(), provenance={}, encoder_only=True, half=True
    )
    assert half.stat().st_size < full.stat().st_size / 2
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        assert torch.allclose(load_encoder(half)(x), model.forward_features(x), atol=2e-2)
    with pytest.raises(CheckpointError, match="only encoder weights"):
        load_unet(half)


def test_bad_checkpoint_files(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a torch file at all")
    with pytest.raises(CheckpointError, match="corrupt.pt: not a readable checkpoint"):
        load_checkpoint(corrupt)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(1)}, foreign)
    with pytest.raises(CheckpointError, match="not a microsnoop checkpoint"):
        load_checkpoint(foreign)
