"""Issue 12, item 4: the reference preprocessing is reachable (``--protocol reference``) and recorded.

Hand-worked with percentiles 0 and 100 (so normalisation is ``(x - min) / (max - min)``): a 4 x 4 crop
holding 1..16 on a 16 x 16 zero canvas. Normalised before padding (default) its pixels become
``(x - 1) / 15``; normalised after zero-padding (reference) the canvas minimum is 0 and they become ``x / 16``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from microsnoop.cli import app
from microsnoop.config import EncoderConfig, PreprocessContract, config_from_dict
from microsnoop.errors import ConfigError
from microsnoop.models.checkpoint import save_checkpoint
from microsnoop.models.unet import MicrosnoopUNet
from microsnoop.preprocess.normalize import prepare_crops
from microsnoop.protocol import contract_for_protocol, protocol_defaults

CROP = np.arange(1, 17, dtype=np.float32).reshape(1, 4, 4)


def _centre(planes: np.ndarray) -> np.ndarray:
    return planes[0, 0, 6:10, 6:10]


def test_default_normalises_before_padding() -> None:
    contract = PreprocessContract(input_size=16, lower_percentile=0.0, upper_percentile=100.0)
    planes = prepare_crops([CROP], contract)
    assert np.allclose(_centre(planes), (CROP[0] - 1) / 15)
    assert planes[0, 0, 0, 0] == 0.0


def test_reference_normalises_after_zero_padding() -> None:
    contract = PreprocessContract(input_size=16, lower_percentile=0.0, upper_percentile=100.0)
    planes = prepare_crops([CROP], contract_for_protocol(contract, "reference"))
    assert np.allclose(_centre(planes), CROP[0] / 16)
    assert planes[0, 0, 0, 0] == 0.0


def test_contract_field_is_backward_compatible_and_consistent() -> None:
    old = {"input_size": 224, "lower_percentile": 1.0, "upper_percentile": 99.0, "normalize_before_pad": True}
    assert config_from_dict(PreprocessContract, old).protocol == "default"  # checkpoints without the key
    ref = contract_for_protocol(PreprocessContract(), "reference")
    assert (ref.protocol, ref.normalize_before_pad) == ("reference", False)
    assert contract_for_protocol(ref, "default") == PreprocessContract()
    with pytest.raises(ConfigError, match="normalises after zero-padding"):
        PreprocessContract(protocol="reference", normalize_before_pad=True)
    with pytest.raises(ConfigError, match="protocol must be one of"):
        contract_for_protocol(PreprocessContract(), "published")


def test_protocol_implies_border_rule_and_empty_images() -> None:
    ref, default = protocol_defaults("reference"), protocol_defaults("default")
    assert (ref.skip_border, ref.border_rule, ref.empty) == (True, "top-left", "zero")
    assert (default.skip_border, default.border_rule, default.empty) == (False, "four-sides", "drop")


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    model = MicrosnoopUNet(EncoderConfig(depths=(8, 16, 32)))
    return save_checkpoint(path, model, preprocess=PreprocessContract(input_size=32), provenance={}, encoder_only=True)


@pytest.mark.parametrize("protocol", [None, "reference"])
def test_embed_records_the_protocol(tiny_checkpoint: Path, tmp_path: Path, protocol: str | None) -> None:
    stack = tmp_path / "cells.npy"
    np.save(stack, np.random.default_rng(0).random((3, 2, 20, 24)).astype(np.float32))
    args = ["embed", "--stack", str(stack), "--checkpoint", str(tiny_checkpoint), "--out", str(tmp_path / "run")]
    args += ["--device", "cpu", "--amp", "off", "--no-progress"] + (["--protocol", protocol] if protocol else [])
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    expected = protocol or "default"
    assert run["contract"]["protocol"] == expected
    assert run["contract"]["normalize_before_pad"] is (expected == "default")
    assert run["profile"]["border_rule"] == protocol_defaults(expected).border_rule


def test_pretrain_stores_the_reference_contract(demo_pool: Path, tmp_path: Path) -> None:
    from microsnoop.models.checkpoint import load_encoder

    args = ["pretrain", "--pool", str(demo_pool), "--out", str(tmp_path / "run"), "--nepoch", "2"]
    args += ["--warmup-epochs", "1", "--images-per-epoch", "4", "--batch-size", "2", "--depths", "8,16,32"]
    args += ["--input-size", "32", "--device", "cpu", "--amp", "off", "--no-progress", "--protocol", "reference"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    contract = load_encoder(tmp_path / "run" / "encoder.pt").preprocess
    assert (contract.protocol, contract.normalize_before_pad) == ("reference", False)


def test_benchmark_protocol_switches_every_encoder() -> None:
    from microsnoop.evaluate.suites.base import SuiteConfig, load_encoders

    tiny = {"untrained": EncoderConfig(depths=(8, 16, 32)), "untrained_preprocess": PreprocessContract(input_size=32)}
    ((encoder, _),) = load_encoders({"u": None}, SuiteConfig(protocol="reference", **tiny)).values()  # type: ignore[arg-type]
    assert (encoder.preprocess.protocol, encoder.preprocess.normalize_before_pad) == ("reference", False)
    ((own, _),) = load_encoders({"u": None}, SuiteConfig(**tiny)).values()  # type: ignore[arg-type]
    assert own.preprocess.protocol == "default"
    with pytest.raises(ConfigError, match="protocol must be one of"):
        SuiteConfig(protocol="published")
