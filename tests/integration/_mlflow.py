"""MLflow for the tests: a SQLite tracking store and file artifacts in a temporary data_dir."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from microsnoop.config import EncoderConfig, PreprocessContract
from microsnoop.models.checkpoint import save_checkpoint
from microsnoop.models.unet import MicrosnoopUNet
from services.settings import PlatformSettings


def make_tiny_checkpoint(path: Path, *, seed: int) -> Path:
    """An encoder-only checkpoint of a two-level network (depths 8, 16): a few kB, loads in milliseconds."""
    torch.manual_seed(seed)
    model = MicrosnoopUNet(EncoderConfig(depths=(8, 16)))
    return save_checkpoint(
        path,
        model,
        preprocess=PreprocessContract(input_size=32),
        provenance={"seed": seed, "purpose": "registry test"},
        encoder_only=True,
    )


@pytest.fixture()
def mlflow_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> PlatformSettings:
    """Settings whose tracking store (SQLite) and artifacts live in a fresh tmp folder."""
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    return PlatformSettings(data_dir=tmp_path / "platform", model_name="test-encoder")


@pytest.fixture(scope="module")
def mlflow_module_settings(tmp_path_factory: pytest.TempPathFactory) -> PlatformSettings:
    """Like ``mlflow_settings``, shared by the tests of one module (a registry built once)."""
    return PlatformSettings(data_dir=tmp_path_factory.mktemp("mlflow") / "platform", model_name="test-encoder")
