"""Intensity scale of the preprocessing contract: per crop (the paper's) or one dataset scale per channel."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from microsnoop.config import EncoderConfig, PreprocessContract, config_from_dict
from microsnoop.device import init_runtime
from microsnoop.errors import ConfigError
from microsnoop.io.sources import ID, source_from_stack
from microsnoop.models.checkpoint import save_checkpoint
from microsnoop.models.unet import MicrosnoopEncoder, MicrosnoopUNet
from microsnoop.preprocess.normalize import fit_intensity_levels, prepare_groups, with_intensity_levels
from microsnoop.profile import ProfileConfig
from microsnoop.protocol import contract_for_protocol, levels_of_run, with_embedding_options
from microsnoop.stream import StreamConfig, read_embeddings, run_embedding

DATASET = PreprocessContract(input_size=64, canvas="crop", pooling="valid", intensity="dataset")


def _cell(scale: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (scale * rng.uniform(100, 200, size=(2, 24, 24))).astype(np.float32)


def test_dataset_scale_keeps_brightness_differences_that_per_crop_scale_erases() -> None:
    dim, bright = _cell(1.0), _cell(2.0)  # the same cell, twice as bright (e.g. twice the DNA)
    per_crop = prepare_groups([dim, bright], PreprocessContract(input_size=64, canvas="crop"))[0].planes
    np.testing.assert_allclose(per_crop[:2], per_crop[2:], atol=1e-5)  # indistinguishable
    contract = with_intensity_levels(DATASET, [dim, bright])
    assert len(contract.intensity_levels) == 2
    planes = prepare_groups([dim, bright], contract)[0].planes
    lo = np.asarray([lv[0] for lv in contract.intensity_levels], np.float32)[:, None, None, None]
    hi = np.asarray([lv[1] for lv in contract.intensity_levels], np.float32)[:, None, None, None]
    np.testing.assert_allclose(planes[2:] * (hi - lo) + lo, 2 * (planes[:2] * (hi - lo) + lo), rtol=1e-4)
    # one crop's planes never depend on its batch-mates once the levels are fixed
    np.testing.assert_array_equal(prepare_groups([bright], contract)[0].planes, planes[2:])


def test_levels_are_deterministic_and_bad_inputs_get_one_line_errors() -> None:
    images = [_cell(1.0, seed=s) for s in range(5)]
    assert fit_intensity_levels(images, DATASET) == fit_intensity_levels(images, DATASET)
    assert fit_intensity_levels(iter(images), DATASET) == fit_intensity_levels(images, DATASET)  # a generator too
    with pytest.raises(ConfigError, match="needs intensity_levels"):
        prepare_groups(images, DATASET)
    with pytest.raises(ConfigError, match="cover 2 channel"):
        prepare_groups([_cell(1.0)[:1]], with_intensity_levels(DATASET, images))
    with pytest.raises(ConfigError, match="no finite pixel"):
        fit_intensity_levels([np.full((1, 8, 8), np.nan, np.float32)], DATASET)
    with pytest.raises(ConfigError, match="no images"):
        fit_intensity_levels([], DATASET)
    blank = with_intensity_levels(DATASET, [np.ones((1, 8, 8), np.float32)])  # a dead channel embeds as zeros
    assert not prepare_groups([np.ones((1, 8, 8), np.float32)], blank)[0].planes.any()
    with pytest.raises(ConfigError, match="channel layout"):
        fit_intensity_levels([_cell(1.0), _cell(1.0)[:1]], DATASET)
    with pytest.raises(ConfigError, match="high > low"):
        PreprocessContract(intensity="dataset", intensity_levels=((1.0, 1.0),))
    with pytest.raises(ConfigError, match="intensity must be"):
        PreprocessContract(intensity="plate")
    with pytest.raises(ConfigError, match="apply to intensity='dataset' only"):
        PreprocessContract(intensity_levels=((0.0, 1.0),))


def test_contract_round_trips_and_option_switches() -> None:
    fitted = with_intensity_levels(DATASET, [_cell(1.0)])
    assert config_from_dict(PreprocessContract, json.loads(json.dumps(fitted.to_dict()))) == fitted
    assert with_embedding_options(fitted, intensity="crop").intensity_levels == ()
    assert with_embedding_options(fitted, canvas="fixed").intensity_levels == fitted.intensity_levels
    reference = contract_for_protocol(fitted, "reference")
    assert reference.intensity == "crop" and reference.intensity_levels == ()
    assert PreprocessContract().intensity == "crop"  # checkpoints written before the field keep the paper's scale


def _embed(source: pd.DataFrame, out: Path, contract: PreprocessContract) -> pd.DataFrame:
    torch.manual_seed(0)
    encoder = MicrosnoopEncoder(EncoderConfig(depths=(8, 16, 32))).eval()
    run_embedding(
        source,
        out,
        encoder,
        contract,
        init_runtime(device="cpu", amp="off", channels_last=False),
        model_id="tiny",
        profile=ProfileConfig(),
        stream=StreamConfig(chunk_images=16),
        progress=False,
    )
    return read_embeddings(out / "embeddings.parquet")[0]


def test_a_run_fits_records_and_reuses_its_levels(demo_data: Path, tmp_path: Path) -> None:
    cells = demo_data / "cellcycle"
    source = source_from_stack(cells / "cells.npz", cells / "cells.csv").iloc[:40].reset_index(drop=True)
    full = _embed(source, tmp_path / "full", DATASET)
    run = json.loads((tmp_path / "full" / "run.json").read_text())
    assert run["contract"]["intensity"] == "dataset" and len(run["contract"]["intensity_levels"]) == 3
    again = _embed(source, tmp_path / "again", DATASET)  # a re-run fits the same levels: the same vectors
    pd.testing.assert_frame_equal(full, again)
    # new cells embedded with the first run's levels land in its space (rows equal those of the full run)
    reused = levels_of_run(
        PreprocessContract(input_size=64, canvas="crop", pooling="valid"), tmp_path / "full" / "run.json"
    )
    part = _embed(source.iloc[30:].reset_index(drop=True), tmp_path / "part", reused)
    cols = [c for c in full if c.startswith("ch")]
    np.testing.assert_allclose(part[cols].to_numpy(), full.iloc[30:][cols].to_numpy(), atol=1e-5)
    assert part[ID].tolist() == full[ID].iloc[30:].tolist()
    _embed(source.iloc[:4], tmp_path / "crop", PreprocessContract(input_size=64))
    with pytest.raises(ConfigError, match="no levels to reuse"):
        levels_of_run(DATASET, tmp_path / "crop" / "run.json")
    # levels of another channel count: refused before anything is written, so the corrected run goes ahead
    one = levels_of_run(DATASET, tmp_path / "full" / "run.json")
    wrong = dataclasses.replace(one, intensity_levels=one.intensity_levels[:1])
    with pytest.raises(ConfigError, match="cover 1 channel"):
        _embed(source.iloc[:4], tmp_path / "fixed", wrong)
    assert not (tmp_path / "fixed" / "run.json").exists()
    _embed(source.iloc[:4], tmp_path / "fixed", one)
    for bad in ([5], [[0, 100, 3]], "x"):
        (tmp_path / "bad.json").write_text(json.dumps({"contract": {"intensity": "dataset", "intensity_levels": bad}}))
        with pytest.raises(ConfigError, match="not"):
            levels_of_run(DATASET, tmp_path / "bad.json")


def test_embed_command_takes_the_intensity_options(demo_data: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    ckpt = tmp_path / "tiny.pt"
    save_checkpoint(
        ckpt,
        MicrosnoopUNet(EncoderConfig(depths=(8, 16, 32))),
        preprocess=PreprocessContract(input_size=64),
        provenance={},
    )
    cells = demo_data / "cellcycle"
    base = [sys.executable, "-m", "microsnoop", "embed", "--stack", str(cells / "cells.npz"), "--metadata",
            str(cells / "cells.csv"), "--checkpoint", str(ckpt), "--no-progress", "--chunk-images", "200"]  # fmt: skip
    done = subprocess.run(
        [*base, "--out", str(tmp_path / "a"), "--intensity", "dataset"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "a" / "run.json").read_text())["contract"]["intensity"] == "dataset"
    bad = subprocess.run([*base, "--out", str(tmp_path / "b"), "--intensity", "plate"], capture_output=True, text=True)
    assert bad.returncode != 0 and "intensity must be one of" in bad.stderr and "Traceback" not in bad.stderr
    both = [*base, "--out", str(tmp_path / "d"), "--intensity", "crop", "--intensity-levels-from", "run.json"]
    clash = subprocess.run(both, capture_output=True, text=True, env={**os.environ, "COLUMNS": "300"})
    assert clash.returncode != 0 and "drop --intensity-levels-from" in clash.stderr and "Traceback" not in clash.stderr
    reuse = [*base, "--out", str(tmp_path / "c"), "--intensity-levels-from", str(tmp_path / "nothing.json")]
    missing = subprocess.run(reuse, capture_output=True, text=True)
    assert missing.returncode != 0 and "not a run.json" in missing.stderr and "Traceback" not in missing.stderr


def test_export_records_a_new_contract_beside_the_same_weights(tmp_path: Path) -> None:
    from microsnoop.models.checkpoint import file_sha256, load_checkpoint

    torch.manual_seed(0)
    src = save_checkpoint(
        tmp_path / "src.pt",
        MicrosnoopUNet(EncoderConfig(depths=(8, 16, 32))),
        preprocess=PreprocessContract(),
        provenance={},
    )
    out = tmp_path / "out.pt"
    cmd = [sys.executable, "-m", "microsnoop", "export", str(src), "--out", str(out), "--no-half", "--intensity",
           "dataset", "--canvas", "crop", "--pooling", "valid"]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    before, after = load_checkpoint(src), load_checkpoint(out)
    assert (after.preprocess.intensity, after.preprocess.canvas, after.preprocess.pooling) == (
        "dataset",
        "crop",
        "valid",
    )
    assert after.provenance["contract_changed"] == {
        "from_sha256": file_sha256(src),
        "fields": {"canvas": "crop", "pooling": "valid", "intensity": "dataset"},
    }
    assert after.state_dict and all(torch.equal(v, before.state_dict[k]) for k, v in after.state_dict.items())


def test_knn_report_fits_the_dataset_scale_on_its_cells(demo_data: Path, tmp_path: Path) -> None:
    from microsnoop.demo import knn_report

    torch.manual_seed(0)
    ckpt = save_checkpoint(
        tmp_path / "scaled.pt", MicrosnoopUNet(EncoderConfig(depths=(8, 16, 32))), preprocess=DATASET, provenance={}
    )
    cells = demo_data / "cellcycle"
    report = knn_report(cells / "cells.npz", cells / "cells.csv", checkpoint=ckpt, device="cpu", amp="off")
    assert report["n_cells"] > 100 and 0.0 < report["knn_accuracy"] <= 1.0


def test_rescaled_fields_are_padded_with_the_low_level_not_raw_zero() -> None:
    from microsnoop.preprocess.crop import rescale_to_square
    from microsnoop.preprocess.normalize import pad_levels

    field = np.full((1, 20, 40), 100.0, np.float32)  # a camera offset of 100: background is not 0
    contract = dataclasses.replace(DATASET, intensity_levels=((100.0, 400.0),))
    square = rescale_to_square(field, 32, fill=pad_levels(contract, 1))
    planes = prepare_groups([square], contract)[0].planes
    np.testing.assert_allclose(planes, 0.0, atol=1e-6)  # offset and padding both scale to 0
    assert pad_levels(PreprocessContract(), 2) == [0.0, 0.0]
