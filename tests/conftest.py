"""Shared fixtures: the repo's demo data, a tiny same-architecture config, a demo pool."""

from __future__ import annotations

from pathlib import Path

import pytest

from microsnoop.config import EncoderConfig, PreprocessContract, PretrainConfig
from microsnoop.curate import curate_pool

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "demo_data"
SHARED = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def demo_data() -> Path:
    """The demo data shipped in the repo."""
    return DEMO


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data, or a skip with the reason where it is absent (a user's fresh clone)."""
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is absent: shared_data tests run only beside the project's shared/ folder (CI)")
    return SHARED


@pytest.fixture(scope="session")
def demo_pool(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo pool curated once per session."""
    out = tmp_path_factory.mktemp("pool")
    curate_pool([], out, types_table=DEMO / "pool_types.csv", progress=False)
    return out


def tiny_config(**overrides: object) -> PretrainConfig:
    """A small network and crop size that runs the real code path in seconds."""
    base: dict[str, object] = dict(
        nepoch=3,
        warmup_epochs=1,
        images_per_epoch=8,
        batch_size=4,
        seed=0,
        encoder=EncoderConfig(depths=(8, 16, 32)),
        preprocess=PreprocessContract(input_size=64),
    )
    base.update(overrides)
    return PretrainConfig(**base)  # type: ignore[arg-type]
