"""Pretraining: the epoch plan, exact resume, metrics, and loss falling on real images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from microsnoop.config import EncoderConfig
from microsnoop.errors import CheckpointError
from microsnoop.models.checkpoint import load_checkpoint, load_encoder
from microsnoop.pretrain.data import plan_epoch
from microsnoop.pretrain.train import pretrain
from tests.conftest import tiny_config


def test_plan_epoch_takes_batches_from_types_in_turn() -> None:
    types = np.array(["fluorescence"] * 90 + ["histology"] * 8 + ["brightfield"] * 2)
    plan = plan_epoch(types, images_per_epoch=60, batch_size=4, seed=0, epoch=3)
    assert sum(len(b) for b in plan) == 60
    batch_types = [set(types[b].tolist()) for b in plan]
    assert all(len(t) == 1 for t in batch_types), "each batch holds one image type"
    counts = {t: sum(1 for bt in batch_types if t in bt) for t in set(types)}
    assert max(counts.values()) - min(counts.values()) <= 1, counts
    assert plan == plan_epoch(types, images_per_epoch=60, batch_size=4, seed=0, epoch=3)
    assert plan != plan_epoch(types, images_per_epoch=60, batch_size=4, seed=0, epoch=4)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path).state_dict


@pytest.mark.slow
def test_resume_follows_the_uninterrupted_trajectory(demo_pool: Path, tmp_path: Path) -> None:
    cfg = tiny_config(nepoch=3)
    straight = pretrain(demo_pool, tmp_path / "straight", cfg, device="cpu", progress=False)
    first = pretrain(
        demo_pool, tmp_path / "resumed", tiny_config(nepoch=3, max_epochs_this_run=2), device="cpu", progress=False
    )
    assert first.epochs_done == 2 and not first.finished
    resumed = pretrain(demo_pool, tmp_path / "resumed", cfg, device="cpu", progress=False)
    assert resumed.finished and resumed.epochs_done == 3
    a, b = _weights(straight.last_checkpoint), _weights(resumed.last_checkpoint)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs after resume"
    lines = [json.loads(x) for x in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [0, 1, 2]
    assert {"lr", "train_loss", "val_loss", "img_per_s"} <= set(lines[0])


def test_resume_with_other_settings_is_refused(demo_pool: Path, tmp_path: Path) -> None:
    pretrain(
        demo_pool,
        tmp_path / "run",
        tiny_config(nepoch=2, max_epochs_this_run=1, images_per_epoch=4),
        device="cpu",
        progress=False,
    )
    with pytest.raises(CheckpointError, match="different settings"):
        pretrain(
            demo_pool,
            tmp_path / "run",
            tiny_config(nepoch=2, images_per_epoch=4, lr=5e-4),
            device="cpu",
            progress=False,
        )


@pytest.mark.slow
def test_loss_falls_on_real_images(demo_pool: Path, tmp_path: Path) -> None:
    cfg = tiny_config(nepoch=8, warmup_epochs=0, images_per_epoch=32, batch_size=8, lr=3e-3)
    result = pretrain(demo_pool, tmp_path / "run", cfg, device="cpu", progress=False)
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    first, last = rows[0]["train_loss"], np.mean([r["train_loss"] for r in rows[-2:]])
    assert last < 0.7 * first, (first, last)
    assert rows[-1]["val_loss"] < rows[0]["val_loss"]
    encoder = load_encoder(result.encoder_checkpoint)
    assert encoder.preprocess.input_size == 64
    prov = encoder.provenance
    assert prov["epochs"] == 8 and len(prov["pool_manifest_hash"]) == 64 and prov["seed"] == 0


@pytest.mark.slow
def test_resume_onto_another_pool_is_refused(demo_pool: Path, tmp_path: Path) -> None:
    import shutil

    import pandas as pd

    config = tiny_config(nepoch=2, max_epochs_this_run=1, images_per_epoch=4)
    pretrain(demo_pool, tmp_path / "run", config, device="cpu", progress=False)
    other = shutil.copytree(demo_pool, tmp_path / "other_pool")
    manifest = pd.read_parquet(other / "manifest.parquet")
    manifest.iloc[1:].to_parquet(other / "manifest.parquet")  # one plane fewer: another pool
    with pytest.raises(CheckpointError, match="another pool"):
        pretrain(other, tmp_path / "run", config, device="cpu", progress=False)


def test_init_from_warm_starts_with_the_given_weights_and_refuses_a_mismatch(demo_pool: Path, tmp_path: Path) -> None:
    cfg = tiny_config(nepoch=2, max_epochs_this_run=1, images_per_epoch=4)
    first = pretrain(demo_pool, tmp_path / "first", cfg, device="cpu", progress=False)
    warm = pretrain(
        demo_pool,
        tmp_path / "warm",
        tiny_config(nepoch=2, images_per_epoch=4, lr=0.0, warmup_epochs=0),
        device="cpu",
        progress=False,
        init_from=first.last_checkpoint,
    )
    start, after = _weights(first.last_checkpoint), _weights(warm.last_checkpoint)
    conv = [k for k in start if k.endswith("weight") and start[k].ndim == 4]
    assert conv and all(torch.equal(start[k], after[k]) for k in conv), "lr 0 must keep the initial weights"
    record = load_checkpoint(warm.last_checkpoint).provenance["init_from"]
    assert record["part"] == "unet" and record["epochs"] == 1 and len(record["sha256"]) == 64
    with pytest.raises(CheckpointError, match="other initial weights"):
        pretrain(demo_pool, tmp_path / "warm", tiny_config(nepoch=3, images_per_epoch=4), device="cpu", progress=False)
    with pytest.raises(CheckpointError, match="differs from this run's"):
        pretrain(
            demo_pool,
            tmp_path / "other",
            tiny_config(nepoch=2, images_per_epoch=4, encoder=EncoderConfig(depths=(8, 16, 32, 64))),
            device="cpu",
            progress=False,
            init_from=first.last_checkpoint,
        )


def test_the_probe_logs_knn_on_both_intensity_scales(demo_pool: Path, demo_data: Path, tmp_path: Path) -> None:
    """The probe watches the representation beside the loss: the start (epoch -1) and every ``every`` epochs,
    each crop on its own scale and on one dataset scale (the shipped contract's)."""
    import pandas as pd

    from microsnoop.pretrain.train import ProbeConfig

    with np.load(demo_data / "cellcycle" / "cells.npz") as z:
        images = np.asarray(z[z.files[0]])[:60]
    labels = pd.read_csv(demo_data / "cellcycle" / "cells.csv")["label"].to_numpy()[:60].astype(str)
    np.savez(tmp_path / "probe.npz", images=images, labels=labels)
    probe = ProbeConfig(path=tmp_path / "probe.npz", every=1, k=5)
    pretrain(demo_pool, tmp_path / "run", tiny_config(nepoch=2), device="cpu", progress=False, probe=probe)
    records = [json.loads(x) for x in (tmp_path / "run" / "probe.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [-1, 0, 1]
    for record in records:
        for key in ("knn_raw", "knn_z", "knn_z_dataset", "knn_raw_dataset", "median_cosine_dataset"):
            assert 0.0 <= record[key] <= 1.0, (key, record)
    assert records[0]["knn_z"] != records[0]["knn_z_dataset"] or records[0]["knn_raw"] != records[0]["knn_raw_dataset"]


def test_brightness_jitter_scales_whole_crops_and_is_off_by_default() -> None:
    from microsnoop.config import AugmentConfig
    from microsnoop.errors import ConfigError
    from microsnoop.pretrain.data import CropDataset

    plane = np.random.default_rng(0).uniform(0.1, 1.0, size=(48, 48)).astype(np.float16)
    plain = CropDataset([plane], size=32, augment=AugmentConfig(), seed=0)
    jitter = CropDataset([plane], size=32, augment=AugmentConfig(brightness_range=(0.5, 2.0)), seed=0)
    factors = []
    for slot in range(20):
        a, b = plain[(0, slot, 0)], jitter[(0, slot, 0)]
        mask = a > 0.05
        ratio = (b[mask] / a[mask]).numpy()
        np.testing.assert_allclose(ratio, ratio[0], rtol=1e-5)  # one factor per crop, same geometry
        factors.append(float(ratio[0]))
    assert 0.5 <= min(factors) < 0.9 and 1.1 < max(factors) <= 2.0
    assert torch.equal(jitter[(0, 3, 0)], jitter[(0, 3, 0)])  # deterministic per (epoch, slot, plane)
    with pytest.raises(ConfigError, match="brightness_range"):
        AugmentConfig(brightness_range=(0.0, 2.0))


def test_runs_saved_before_brightness_jitter_still_resume(tmp_path: Path) -> None:
    from microsnoop.config import AugmentConfig
    from microsnoop.pretrain.train import _check_resumable

    cfg = tiny_config()
    saved = cfg.to_dict()
    saved["augment"] = {k: v for k, v in saved["augment"].items() if k != "brightness_range"}  # an older run
    _check_resumable(saved, cfg, tmp_path / "last.pt", saved_pool=None, pool_hash="h")
    with pytest.raises(CheckpointError, match="augment"):
        jittered = tiny_config(augment=AugmentConfig(brightness_range=(0.5, 2)))
        _check_resumable(saved, jittered, tmp_path / "last.pt", saved_pool=None, pool_hash="h")
