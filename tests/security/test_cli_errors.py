"""Bad CLI input ends in one line naming the problem and the fix (issue 14); each case was a traceback before."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import tifffile
import torch

from microsnoop import cli
from microsnoop.errors import InvalidImageError
from microsnoop.io.sources import labels_as_int

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "models" / "microsnoop-cpu-v1.pt"


def run_main(args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """``microsnoop ARGS`` through the real entry point; its exit code and stderr."""
    monkeypatch.setattr(sys, "argv", ["microsnoop", *args])
    code = 0
    try:
        cli.main()
    except SystemExit as exc:
        code = int(exc.code or 0)
    return code, capsys.readouterr().err


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli")
    images = root / "imgs"
    images.mkdir()
    shutil.copy(REPO / "demo_data" / "samples" / "stardist_img2d.tif", images / "a.tif")
    (root / "bin.csv").write_bytes(bytes(range(256)) * 2)
    (root / "quote.csv").write_text('path,type\n"a.tif,fluorescence\n')
    (root / "afile").write_text("x")
    np.save(root / "stack.npy", np.random.default_rng(0).random((3, 1, 48, 48)).astype(np.float32))
    (root / "text.npy").write_text("not numpy")
    np.savez(root / "empty.npz")
    pd.DataFrame(np.random.default_rng(1).random((6, 4)), columns=[f"f{i}" for i in range(4)]).assign(
        Metadata_label=list("aabbcc")
    ).to_parquet(root / "profiles.parquet")
    ckpt = torch.load(SHIPPED, weights_only=True, map_location="cpu")
    torch.save({k: v for k, v in ckpt.items() if k != "kind"}, root / "nokind.pt")
    torch.save({**ckpt, "encoder_config": {**ckpt["encoder_config"], "depths": [16, 32, 64, 128]}}, root / "mism.pt")
    return root


CASES: list[tuple[str, list[str], str]] = [
    ("binary types csv", ["curate", "--out", "{w}/p1", "{w}/imgs", "--types", "{w}/bin.csv"], "UTF-8 CSV"),
    ("badly quoted csv", ["curate", "--out", "{w}/p2", "{w}/imgs", "--types", "{w}/quote.csv"], "quotes"),
    ("--out on a file", ["curate", "--out", "{w}/afile", "{w}/imgs"], "give --out a folder"),
    ("unwritable --out", ["curate", "--out", "/proc/microsnoop-no/out", "{w}/imgs"], "writable folder"),
    ("--val-fraction 1.5", ["curate", "--out", "{w}/p3", "{w}/imgs", "--val-fraction", "1.5"], "val_fraction"),
    ("--max-side 0", ["curate", "--out", "{w}/p4", "{w}/imgs", "--max-side", "0"], "--max-side"),
    ("--max-side -5", ["curate", "--out", "{w}/p5", "{w}/imgs", "--max-side", "-5"], "--max-side"),
    ("checkpoint without kind", ["export", "{w}/nokind.pt", "--out", "{w}/x.pt"], "microsnoop export"),
    ("weights not matching", ["export", "{w}/mism.pt", "--out", "{w}/y.pt"], "do not match"),
    ("non-numpy .npy", ["embed", "--out", "{w}/e1", "--stack", "{w}/text.npy", "--untrained"], "numpy.save"),
    ("empty .npz", ["embed", "--out", "{w}/e2", "--stack", "{w}/empty.npz", "--untrained"], "no arrays"),
    (
        "cuda without gpu",
        ["embed", "--out", "{w}/e3", "--stack", "{w}/stack.npy", "--untrained", "--device", "cuda"],
        "--device cpu",
    ),  # fmt: skip
    (
        "--batch-size 0",
        ["embed", "--out", "{w}/e4", "--stack", "{w}/stack.npy", "--untrained", "--batch-size", "0"],
        "--batch-size 1",
    ),  # fmt: skip
    (
        "--nucleus-channel 5",
        [
            "embed",
            "--out",
            "{w}/e5",
            "--folder",
            "{w}/imgs",
            "--untrained",
            "--mode",
            "cell-region",
            "--nucleus-channel",
            "5",
        ],
        "between 0 and 0",
    ),  # fmt: skip
    ("sphere missing columns", ["sphere", "{w}/profiles.parquet", "--out", "{w}/s.parquet"], "--control-column"),
    ("aggregate missing columns", ["aggregate", "{w}/profiles.parquet", "--out", "{w}/a.parquet"], "--by"),
    ("evaluate --k 0", ["evaluate", "{w}/profiles.parquet", "--label", "Metadata_label", "--k", "0"], "--k 1"),
]


@pytest.mark.parametrize(("name", "args", "fix"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line(
    work: Path,
    name: str,
    args: list[str],
    fix: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    if name == "cuda without gpu" and torch.cuda.is_available():
        pytest.skip("a GPU is present")
    code, err = run_main([a.format(w=work) for a in args] + (["--no-progress"] if args[0] == "embed" else []),
                         monkeypatch, capsys)  # fmt: skip
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(lines) == 1 and fix in lines[0], err
    assert "Traceback" not in err


def test_corrupt_run_json_and_part_files(
    work: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = work / "resume"
    args = ["embed", "--out", str(out), "--stack", str(work / "stack.npy"), "--untrained", "--no-progress",
            "--chunk-images", "1"]  # fmt: skip
    assert run_main(args, monkeypatch, capsys)[0] == 0
    good = pd.read_parquet(out / "embeddings.parquet")
    (out / "parts" / "images-00001.parquet").write_bytes(b"garbage")  # a truncated part is computed again
    assert run_main(args, monkeypatch, capsys)[0] == 0
    pd.testing.assert_frame_equal(pd.read_parquet(out / "embeddings.parquet"), good)
    (out / "run.json").write_text("{corrupt")
    code, err = run_main(args, monkeypatch, capsys)
    assert code == 2 and "run.json: corrupt" in err and "Traceback" not in err


def test_resume_refuses_an_input_changed_in_place(
    work: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    stack = work / "changing.npy"
    np.save(stack, np.random.default_rng(5).random((2, 1, 48, 48)).astype(np.float32))
    args = ["embed", "--out", str(work / "changed"), "--stack", str(stack), "--untrained", "--no-progress"]
    assert run_main(args, monkeypatch, capsys)[0] == 0
    size = stack.stat().st_size
    np.save(stack, np.random.default_rng(6).random((2, 1, 48, 48)).astype(np.float32))  # same path, same size
    assert stack.stat().st_size == size
    code, err = run_main(args, monkeypatch, capsys)
    assert code == 2 and "other inputs" in err


def test_a_corrupt_first_image_is_skipped_not_fatal(
    work: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = work / "firstbad"
    folder.mkdir()
    (folder / "0_broken.tif").write_bytes(b"II*\x00garbage")
    shutil.copy(REPO / "demo_data" / "samples" / "stardist_img2d.tif", folder / "1_good.tif")
    out = work / "firstbad-out"
    code, _ = run_main(["embed", "--out", str(out), "--folder", str(folder), "--untrained", "--mode", "rescale",
                        "--no-progress"], monkeypatch, capsys)  # fmt: skip
    assert code == 0
    assert len(pd.read_parquet(out / "embeddings.parquet")) == 1
    assert "0_broken" in pd.read_parquet(out / "skipped.parquet")["path"].iloc[0]


@pytest.mark.parametrize(
    "labels",
    [np.array([[0, 1.5], [2, 0]]), np.array([[0, np.nan], [1, 1]]), np.array([[0, -1], [1, 1]], dtype=np.int16)],
    ids=["float", "nan", "negative"],
)
def test_label_masks_that_a_cast_would_change_are_refused(labels: np.ndarray) -> None:
    with pytest.raises(InvalidImageError, match="label"):
        labels_as_int(labels, "m.tif")
    assert labels_as_int(np.array([[0.0, 2.0], [1.0, 0.0]]), "ok.tif").tolist() == [[0, 2], [1, 0]]


def test_a_float_mask_in_a_table_is_skipped_with_its_reason(
    work: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    image = tifffile.imread(REPO / "demo_data" / "samples" / "stardist_img2d.tif")
    mask = np.zeros(image.shape[-2:], np.float32)
    mask[10:30, 10:30] = 1.5
    tifffile.imwrite(work / "float_mask.tif", mask)
    table = pd.DataFrame({"path": [str(REPO / "demo_data" / "samples" / "stardist_img2d.tif")],
                          "mask_path": [str(work / "float_mask.tif")]})  # fmt: skip
    table.to_csv(work / "masked.csv", index=False)
    out = work / "masked-out"
    code, _ = run_main(["embed", "--out", str(out), "--table", str(work / "masked.csv"), "--untrained", "--mode",
                        "cell-region", "--no-progress"], monkeypatch, capsys)  # fmt: skip
    assert code == 0
    assert "fractional" in pd.read_parquet(out / "skipped.parquet")["reason"].iloc[0]
    assert os.path.exists(out / "run.json") and json.loads((out / "run.json").read_text())["inputs_sha256"]


@pytest.mark.integration
@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--level", "organelle"], "unknown level"),
        (["--level", "treatment"], "no treatment embeddings"),
        (["--level", "image", "--entity-id", "nope"], "nope"),
        (["--level", "image", "--model-version", "v-none"], "v-none"),
        (["--level", "image", "--exclude-same", "password"], "exclude_same"),
    ],
)
def test_every_search_error_is_one_line(
    pg_settings: Any,
    pg_dsn: str,
    args: list[str],
    fragment: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from services.featurestore import FeatureStore

    table = pd.DataFrame(np.eye(3, dtype=np.float32), columns=["ch0_000", "ch0_001", "ch0_002"])
    table.insert(0, "Metadata_ImageID", ["a", "b", "c"])
    with FeatureStore(pg_dsn) as store:
        store.publish("image", table, model_version="cli-v1")
    code, err = run_main(["search", "--data-dir", str(pg_settings.data_dir), *args], monkeypatch, capsys)
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(lines) == 1 and fragment in lines[0], err


def test_search_with_k_zero_or_a_dead_database_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = run_main(["search", "-k", "0"], monkeypatch, capsys)
    assert code == 2 and "Traceback" not in err and "-k" in err
    monkeypatch.setenv("MICROSNOOP_PG_DSN", f"host={tmp_path} port=5432 dbname=x user=x connect_timeout=2")
    code, err = run_main(["search"], monkeypatch, capsys)
    assert code == 2 and err.startswith("error:") and "Traceback" not in err
