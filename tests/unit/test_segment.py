"""Segmentation: matching metrics by hand, the classical fallback on real nuclei, the Cellpose adapter."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pandas as pd
import pytest
import tifffile

from microsnoop.errors import ConfigError, InvalidImageError
from microsnoop.evaluate.segmentation import match_labels
from microsnoop.io.masks import count_cells, read_labels, write_label_tiff
from microsnoop.segment import ClassicalSegmenter, make_segmenter, segment_files


def _two_cells() -> np.ndarray:
    lab = np.zeros((40, 40), np.int32)
    lab[5:15, 5:15] = 1
    lab[20:30, 20:30] = 2
    return lab


def test_matching_by_hand() -> None:
    truth = _two_cells()
    assert match_labels(truth, truth) == pytest.approx(
        {"tp": 2, "fp": 0, "fn": 0, "precision": 1.0, "recall": 1.0, "f1": 1.0, "mean_matched_iou": 1.0}
    )
    one = np.where(truth == 2, 0, truth)
    m = match_labels(one, truth)
    assert (m["tp"], m["fp"], m["fn"], m["f1"]) == (1, 0, 1, pytest.approx(2 / 3))
    split = truth.copy()
    split[20:30, 25:30] = 3  # cell 2 split in halves: IoU 0.5 each -> one half matches at >= 0.5
    m = match_labels(split, truth)
    assert (m["tp"], m["fp"], m["fn"]) == (2, 1, 0)
    assert m["mean_matched_iou"] == pytest.approx(0.75)
    empty = match_labels(np.zeros_like(truth), truth)
    assert (empty["f1"], empty["fn"], empty["precision"]) == (0.0, 2, 0.0)
    with pytest.raises(InvalidImageError, match="differs from ground truth"):
        match_labels(truth[:30], truth)


def test_classical_on_stardist_nuclei(demo_data: Path) -> None:
    img = tifffile.imread(demo_data / "samples" / "stardist_img2d.tif")
    truth = tifffile.imread(demo_data / "samples_masks" / "stardist_mask2d.tif")
    m = match_labels(ClassicalSegmenter().segment(img), truth)
    assert m["f1"] > 0.7, m  # measured 0.747 (see benchmarks/results/segmentation_cpu.json)


def test_classical_on_demo_dsb2018_fluorescence(demo_data: Path) -> None:
    man = pd.read_csv(demo_data / "dsb2018" / "manifest.csv")
    f1 = []
    for image_id in man[man.heuristic_modality == "fluorescence_gray"].image_id:
        img = iio.imread(demo_data / "dsb2018" / "images" / f"{image_id}.png")
        img = img[..., 0] if img.ndim == 3 else img
        truth = iio.imread(demo_data / "dsb2018" / "labels" / f"{image_id}.png")
        f1.append(match_labels(ClassicalSegmenter().segment(img), truth)["f1"])
    assert np.mean(f1) >= 0.7, np.mean(f1)


def test_blank_and_nan_planes() -> None:
    seg = ClassicalSegmenter()
    assert not seg.segment(np.zeros((32, 32))).any()
    assert not seg.segment(np.full((32, 32), 5.0)).any()
    bad = np.ones((32, 32), np.float32)
    bad[3, 3] = np.nan
    with pytest.raises(InvalidImageError, match="NaN/Inf"):
        seg.segment(bad)
    with pytest.raises(InvalidImageError, match="one 2-D plane"):
        seg.segment(np.zeros((2, 32, 32)))


def test_cellpose_adapter_with_self_made_weights(tmp_path: Path) -> None:
    """No pretrained Cellpose weights exist offline: an untrained net saved by us goes through the adapter.

    Its masks are meaningless (often empty); the test checks loading, the call and the output contract.
    """
    from cellpose import models

    models.CellposeModel(gpu=False, pretrained_model=None).net.save_model(str(tmp_path / "w.pth"))
    seg = make_segmenter("auto", tmp_path / "w.pth")
    labels = seg.segment(np.random.default_rng(0).random((96, 96)).astype(np.float32))
    assert labels.shape == (96, 96) and labels.dtype == np.int32
    with pytest.raises(FileNotFoundError, match="missing.pth: Cellpose weights not found.*classical"):
        make_segmenter("cellpose", tmp_path / "missing.pth")
    with pytest.raises(ConfigError, match="needs --cellpose-weights"):
        make_segmenter("cellpose")
    assert isinstance(make_segmenter("auto"), ClassicalSegmenter)


def test_label_tiff_round_trip_and_counts(tmp_path: Path) -> None:
    lab = _two_cells()
    lab[0, 0] = 70000
    path = write_label_tiff(tmp_path / "m.tif", lab)
    assert np.array_equal(read_labels(path), lab) and tifffile.imread(path).dtype == np.uint32
    assert count_cells(lab) == 3
    assert tifffile.imread(write_label_tiff(tmp_path / "s.tif", _two_cells())).dtype == np.uint16


def test_segment_files_keeps_going_past_a_bad_file(tmp_path: Path, demo_data: Path) -> None:
    (tmp_path / "bad.png").write_bytes(b"\x89PNG garbage")
    good = sorted((demo_data / "dsb2018" / "images").glob("*.png"))[:2]
    table = segment_files(
        [good[0], tmp_path / "bad.png", good[1]], tmp_path / "masks", ClassicalSegmenter(), progress=False
    )
    assert table["error"].astype(bool).tolist() == [False, True, False]
    assert "bad.png: cannot be decoded" in table.loc[1, "error"]
    for row in table[table.error == ""].itertuples():
        assert count_cells(read_labels(Path(row.mask_path))) == row.n_cells > 0
    assert (tmp_path / "masks" / "masks.csv").is_file()
