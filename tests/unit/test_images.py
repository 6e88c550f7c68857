"""Readers: every supported format, and each bad-input case with a message naming file and fix."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile

from microsnoop.errors import InvalidImageError
from microsnoop.io.images import check_plane, read_image


def test_reads_each_format(tmp_path: Path, demo_data: Path) -> None:
    plane = (np.arange(64 * 48).reshape(64, 48) % 251).astype(np.uint8)
    iio.imwrite(tmp_path / "a.png", plane)
    iio.imwrite(tmp_path / "a.jpg", np.stack([plane] * 3, -1))
    np.save(tmp_path / "a.npy", np.stack([plane, plane + 1]))
    np.savez(tmp_path / "a.npz", image=plane)
    tifffile.imwrite(tmp_path / "a.ome.tif", np.stack([plane, plane]), metadata={"axes": "CYX"}, ome=True)
    assert read_image(tmp_path / "a.png").shape == (1, 64, 48)
    assert read_image(tmp_path / "a.jpg").shape == (3, 64, 48)
    assert read_image(tmp_path / "a.jpg", gray_rgb=True).shape == (1, 64, 48)
    assert read_image(tmp_path / "a.npy").shape == (2, 64, 48)
    assert read_image(tmp_path / "a.npz").shape == (1, 64, 48)
    assert read_image(tmp_path / "a.ome.tif").shape == (2, 64, 48)
    assert read_image(demo_data / "samples" / "instanseg_HE_example.tif").shape[0] == 3  # OME-TIFF RGB
    assert read_image(demo_data / "samples" / "instanseg_Fluorescence_example.tif").shape[0] == 2


def test_empty_file(tmp_path: Path) -> None:
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(InvalidImageError, match=r"empty.png: file is empty .*re-export or remove"):
        read_image(tmp_path / "empty.png")


def test_corrupt_and_truncated_files(tmp_path: Path) -> None:
    (tmp_path / "junk.tif").write_bytes(b"II*\x00garbage" * 10)
    with pytest.raises(InvalidImageError, match=r"junk.tif: cannot be decoded.*re-export"):
        read_image(tmp_path / "junk.tif")
    iio.imwrite(tmp_path / "full.png", np.random.default_rng(0).integers(0, 255, (128, 128), dtype=np.uint8))
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(InvalidImageError, match="cut.png: cannot be decoded"):
        read_image(tmp_path / "cut.png")


def test_unsupported_suffix_and_missing(tmp_path: Path) -> None:
    (tmp_path / "x.bmp").write_bytes(b"BM")
    with pytest.raises(InvalidImageError, match="unsupported file type '.bmp'"):
        read_image(tmp_path / "x.bmp")
    with pytest.raises(InvalidImageError, match="file not found"):
        read_image(tmp_path / "nothere.png")


def test_3d_stack_and_time_series_are_refused(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "z.tif", np.zeros((12, 32, 32), np.uint8), metadata={"axes": "ZYX"})
    with pytest.raises(InvalidImageError, match="z.tif: has axes ZYX.*2-D image is expected"):
        read_image(tmp_path / "z.tif")
    np.save(tmp_path / "t.npy", np.zeros((20, 32, 32), np.uint8))
    with pytest.raises(InvalidImageError, match="t.npy: 20 planes .*Z-stack or time series"):
        read_image(tmp_path / "t.npy")
    np.save(tmp_path / "4d.npy", np.zeros((2, 3, 32, 32), np.uint8))
    with pytest.raises(InvalidImageError, match="not a 2-D image"):
        read_image(tmp_path / "4d.npy")


def test_constant_nan_empty_planes() -> None:
    with pytest.raises(InvalidImageError, match=r"f.png \(channel 1\): constant image"):
        check_plane(np.full((8, 8), 7, np.uint8), path="f.png", channel=1)
    nan = np.ones((8, 8), np.float32)
    nan[0, 0] = np.nan
    with pytest.raises(InvalidImageError, match="1 NaN/Inf pixels"):
        check_plane(nan, path="f.npy")
    inf = np.arange(64, dtype=np.float32).reshape(8, 8)
    inf[1, 1] = np.inf
    with pytest.raises(InvalidImageError, match="NaN/Inf"):
        check_plane(inf, path="f.npy")
    with pytest.raises(InvalidImageError, match="empty image"):
        check_plane(np.zeros((0, 5)), path="f.npy")
