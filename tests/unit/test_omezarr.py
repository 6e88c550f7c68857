"""OME-Zarr input: plates and images written with ome-zarr are read lazily, with their layout and channel names."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import zarr

from microsnoop.config import EncoderConfig, PreprocessContract
from microsnoop.curate import curate_pool, list_images
from microsnoop.device import init_runtime
from microsnoop.errors import InvalidImageError
from microsnoop.io.images import read_image
from microsnoop.io.omezarr import image_stem, omezarr_table, open_omezarr, parse_channels, read_omezarr
from microsnoop.io.sources import StackCache, load_row, source_from_folder, source_from_table
from microsnoop.models.unet import MicrosnoopEncoder
from microsnoop.profile import ProfileConfig
from microsnoop.segment import ClassicalSegmenter, segment_files
from microsnoop.stream import StreamConfig, read_embeddings, run_embedding
from tests._omezarr import blobs, write_plate, write_single


@pytest.fixture(scope="module")
def plate(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_plate(tmp_path_factory.mktemp("zarr") / "screen1.zarr", wells=("A/1", "A/2", "B/12"), fields=2)


def test_a_plate_lists_its_fields_with_plate_well_site_and_channel_names(plate: Path) -> None:
    table = omezarr_table(plate)
    assert len(table) == 6
    assert set(table["Metadata_Plate"]) == {"P1"}
    assert list(table["Metadata_Well"]) == ["A01", "A01", "A02", "A02", "B12", "B12"]
    assert list(table["Metadata_Site"]) == [0, 1] * 3
    assert table["Metadata_ImageID"].iloc[-1] == "screen1.zarr/B/12/1" and table["Metadata_ImageID"].is_unique
    assert set(table["Metadata_Channels"]) == {"DAPI|Actin"}
    image = open_omezarr(table["path"].iloc[0], level=1)
    assert image.channel_names == ("DAPI", "Actin") and image.n_levels == 2 and image.shape == (2, 48, 48)


def test_pixels_are_those_written_at_the_chosen_level_and_channels(plate: Path) -> None:
    field = plate / "A" / "2" / "1"
    full = read_omezarr(field)
    direct = np.asarray(zarr.open_group(str(field), mode="r")["s0"])
    np.testing.assert_array_equal(full, direct)
    assert full.shape == (2, 96, 96) and full.dtype == np.uint16
    actin = read_omezarr(field, level=1, channels=["Actin"])
    assert actin.shape == (1, 48, 48)
    np.testing.assert_array_equal(actin[0], read_omezarr(field, level=1, channels=[1])[0])
    swapped = read_omezarr(field, channels=parse_channels("Actin,0"))
    np.testing.assert_array_equal(swapped, full[::-1])


def test_ngff_04_on_zarr_v2_reads_like_05(tmp_path: Path) -> None:
    pixels = blobs(np.random.default_rng(1), channels=3)
    old = write_single(tmp_path / "old.zarr", pixels, ["a", "b", "c"], v04=True)
    new = write_single(tmp_path / "new.zarr", pixels, ["a", "b", "c"])
    assert (old / ".zattrs").is_file() and (new / "zarr.json").is_file()
    np.testing.assert_array_equal(read_image(old), read_image(new))
    np.testing.assert_array_equal(read_image(old), pixels)
    plate04 = write_plate(tmp_path / "p04.zarr", v04=True)
    assert list(omezarr_table(plate04)["Metadata_Well"]) == ["A01", "A01", "B02", "B02"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"level": 2}, "resolution level 2 does not exist; it has 2 level(s), pick 0..1"),
        ({"channels": [2]}, "channel 2 is out of range; it has 2 channel(s) (0=DAPI, 1=Actin), pick 0..1"),
        ({"channels": ["GFP"]}, "no channel named 'GFP'"),
    ],
)
def test_a_wrong_level_or_channel_is_one_line_naming_the_fix(plate: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(InvalidImageError, match="^" + str(plate).replace(".", r"\.")) as info:
        omezarr_table(plate, **kwargs)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_missing_multiscales_is_one_line(tmp_path: Path, plate: Path) -> None:
    bare = zarr.open_group(str(tmp_path / "bare.zarr"), mode="w")
    bare.attrs["something"] = 1
    with pytest.raises(InvalidImageError, match="no 'multiscales', 'plate' or 'well' metadata"):
        omezarr_table(tmp_path / "bare.zarr")
    with pytest.raises(InvalidImageError, match=r"no 'multiscales' metadata \(a plate\)"):
        read_omezarr(plate)
    with pytest.raises(InvalidImageError, match="not a Zarr group"):
        open_omezarr(tmp_path)


def test_z_stacks_are_refused_with_the_fix(tmp_path: Path) -> None:
    root = zarr.open_group(str(tmp_path / "z.zarr"), mode="w")
    from ome_zarr.writer import write_image

    write_image(np.ones((2, 3, 32, 32), np.uint16), root, axes="czyx", scale_factors=[])
    with pytest.raises(InvalidImageError, match="3 z planes; a 2-D image is expected"):
        read_omezarr(tmp_path / "z.zarr")


def test_folders_tables_curate_and_segment_accept_omezarr(plate: Path, tmp_path: Path) -> None:
    (tmp_path / "mixed").mkdir()
    single = write_single(tmp_path / "mixed" / "one.zarr", blobs(np.random.default_rng(2)), ["DAPI", "Actin"])
    np.save(tmp_path / "mixed" / "extra.npy", blobs(np.random.default_rng(3)))
    source = source_from_folder(tmp_path / "mixed", level=1)
    assert sorted(source["Metadata_ImageID"]) == ["extra.npy", "one.zarr"]
    shapes = {row["Metadata_ImageID"]: load_row(row, StackCache()).shape for row in source.to_dict("records")}
    assert shapes == {"extra.npy": (2, 96, 96), "one.zarr": (2, 48, 48)}
    # A table can list OME-Zarr images with a level and channels of their own.
    pd.DataFrame({"path": [str(single)], "level": [0], "channels": ["Actin"]}).to_csv(tmp_path / "t.csv", index=False)
    row = source_from_table(tmp_path / "t.csv").iloc[0].to_dict()
    assert load_row(row, StackCache()).shape == (1, 96, 96)
    files = list_images([plate])
    assert len(files) == 6 and image_stem(files[-1]) == "screen1_B_12_1"
    masks = segment_files(files, tmp_path / "masks", ClassicalSegmenter(), level=1, progress=False)
    assert (masks["error"] == "").all() and masks["mask_path"].is_unique and (masks["n_cells"] > 0).all()
    manifest, report = curate_pool([plate], tmp_path / "pool", progress=False)
    assert report.n_planes == 12 and set(manifest["source"]) == {"screen1"}


def test_embedding_a_plate_carries_plate_well_site(plate: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    encoder = MicrosnoopEncoder(EncoderConfig(depths=(8, 16, 32))).eval()
    result = run_embedding(
        source_from_folder(plate, level=1, channels=["DAPI"]),
        tmp_path / "emb",
        encoder,
        PreprocessContract(input_size=64),
        init_runtime(device="cpu", amp="off", channels_last=False),
        model_id="tiny",
        profile=ProfileConfig(mode="cell-region"),
        stream=StreamConfig(chunk_images=4),
        segment=ClassicalSegmenter().segment,
        progress=False,
    )
    df, _ = read_embeddings(result.embeddings)
    assert result.n_images == 6 and result.chunks_done == 2
    assert list(df["Metadata_Well"]) == ["A01", "A01", "A02", "A02", "B12", "B12"]
    assert df.filter(like="ch0_").shape[1] == 32 and df.filter(like="ch1_").shape[1] == 0  # DAPI only
    cells = pd.read_parquet(tmp_path / "emb" / "cells.parquet")
    assert {"Metadata_Plate", "Metadata_Well", "Metadata_Site"} <= set(cells.columns) and len(cells) >= 6


def test_cli_reports_a_missing_level_in_one_line(plate: Path, tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "microsnoop", "embed", "--out", str(tmp_path / "o"), "--folder", str(plate)]
    bad = subprocess.run([*cmd, "--untrained", "--level", "3"], capture_output=True, text=True)
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0 and "resolution level 3 does not exist" in bad.stderr
    assert "Traceback" not in bad.stderr


@pytest.mark.parametrize("mode", ["single-cell", "rescale", "tile"])
def test_every_embed_mode_reads_plate_fields(plate: Path, tmp_path: Path, mode: str) -> None:
    torch.manual_seed(0)
    result = run_embedding(
        source_from_folder(plate, level=0),
        tmp_path / mode,
        MicrosnoopEncoder(EncoderConfig(depths=(8, 16, 32))).eval(),
        PreprocessContract(input_size=64),
        init_runtime(device="cpu", amp="off", channels_last=False),
        model_id="tiny",
        profile=ProfileConfig(mode=mode),
        stream=StreamConfig(chunk_images=6),
        progress=False,
    )
    df, _ = read_embeddings(result.embeddings)
    assert result.n_images == 6 and df.filter(regex=r"^ch1_").shape[1] == 32
    assert list(df["Metadata_Site"]) == [0, 1] * 3 and set(df["Metadata_Plate"]) == {"P1"}


def test_a_typed_channel_axis_with_another_name_is_the_channel_axis(tmp_path: Path) -> None:
    root = zarr.open_group(str(tmp_path / "w.zarr"), mode="w", zarr_format=2)
    root.create_array("0", data=np.arange(2 * 16 * 16, dtype=np.uint16).reshape(2, 16, 16))
    axes = [{"name": "wavelength", "type": "channel"}, {"name": "y", "type": "space"}, {"name": "x", "type": "space"}]
    root.attrs["multiscales"] = [{"version": "0.4", "axes": axes, "datasets": [{"path": "0"}]}]
    image = open_omezarr(tmp_path / "w.zarr")
    assert image.axes == "cyx" and image.n_channels == 2 and image.channel_names == ("0", "1")
    assert read_omezarr(tmp_path / "w.zarr", channels=[1])[0, 0, 0] == 256
