"""Streaming embedding: resume gives identical output, explicit keys, bad input, cell-region on real fields."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pandas as pd
import pytest
import torch

from microsnoop.config import EncoderConfig, PreprocessContract
from microsnoop.device import init_runtime
from microsnoop.embed import embed_crops
from microsnoop.errors import ChannelMismatchError, ConfigError, ManifestError
from microsnoop.io.images import read_image
from microsnoop.io.sources import ID, source_from_folder, source_from_stack, source_from_table
from microsnoop.models.checkpoint import save_checkpoint
from microsnoop.models.unet import MicrosnoopEncoder, MicrosnoopUNet
from microsnoop.preprocess.crop import make_tiles, rescale_to_square
from microsnoop.profile import ProfileConfig
from microsnoop.stream import StreamConfig, read_embeddings, run_embedding

CONTRACT = PreprocessContract(input_size=64)


def _encoder() -> MicrosnoopEncoder:
    torch.manual_seed(0)
    return MicrosnoopEncoder(EncoderConfig(depths=(8, 16, 32))).eval()


def _run(source: pd.DataFrame, out: Path, **kw: object) -> object:
    profile = kw.pop("profile", ProfileConfig())
    stream = kw.pop("stream", StreamConfig(chunk_images=50))
    rt = init_runtime(device="cpu", amp="off", channels_last=False)
    return run_embedding(
        source, out, _encoder(), CONTRACT, rt, model_id="tiny", profile=profile, stream=stream, progress=False, **kw
    )  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def cells(demo_data: Path) -> pd.DataFrame:
    src = source_from_stack(demo_data / "cellcycle" / "cells.npz", demo_data / "cellcycle" / "cells.csv")
    return src.iloc[:120].reset_index(drop=True)


def test_resume_after_a_kill_gives_identical_output(cells: pd.DataFrame, tmp_path: Path) -> None:
    cells, chunks = cells.iloc[:60], StreamConfig(chunk_images=25)  # three chunks: 25, 25, 10
    full = _run(cells, tmp_path / "a", stream=chunks)
    df_a, info = read_embeddings(tmp_path / "a" / "embeddings.parquet")
    assert len(df_a) == 60 and df_a.shape[1] == 3 * 32 + len([c for c in df_a if c.startswith("Metadata_")])
    assert info["model_id"] == "tiny" and info["contract"]["input_size"] == 64
    assert full.chunks_done == 3  # type: ignore[attr-defined]
    _run(cells, tmp_path / "b", stream=chunks)
    # A run killed after its first chunk: later parts and the merged file never got written.
    for name in ("images-00001.parquet", "images-00002.parquet"):
        (tmp_path / "b" / "parts" / name).unlink()
    (tmp_path / "b" / "embeddings.parquet").unlink()
    resumed = _run(cells, tmp_path / "b", stream=chunks)
    assert resumed.chunks_reused == 1 and resumed.chunks_done == 2  # type: ignore[attr-defined]
    df_b, _ = read_embeddings(tmp_path / "b" / "embeddings.parquet")
    pd.testing.assert_frame_equal(df_a, df_b)
    assert df_b[ID].tolist() == cells[ID].tolist()
    assert (df_b["Metadata_label"] == cells["Metadata_label"]).all()


def test_changed_arguments_refuse_the_old_folder(cells: pd.DataFrame, tmp_path: Path) -> None:
    _run(cells.iloc[:10], tmp_path / "a")
    with pytest.raises(ConfigError, match="holds a run with other inputs"):
        _run(cells.iloc[:12], tmp_path / "a")


def test_channel_blocks_follow_channels(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    stack = rng.integers(0, 3000, (6, 3, 40, 40)).astype(np.uint16)
    np.save(tmp_path / "s.npy", stack)
    np.save(tmp_path / "r.npy", stack[:, ::-1].copy())
    _run(source_from_stack(tmp_path / "s.npy"), tmp_path / "s")
    _run(source_from_stack(tmp_path / "r.npy"), tmp_path / "r")
    a, _ = read_embeddings(tmp_path / "s" / "embeddings.parquet")
    b, _ = read_embeddings(tmp_path / "r" / "embeddings.parquet")
    assert np.allclose(a.filter(like="ch0_").to_numpy(), b.filter(like="ch2_").to_numpy(), atol=1e-6)


def test_bad_files_are_skipped_by_name_and_counted(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    src = tmp_path / "imgs"
    src.mkdir()
    for i in range(4):
        iio.imwrite(src / f"ok{i}.png", rng.integers(0, 255, (50, 50), dtype=np.uint8))
    iio.imwrite(src / "blank.png", np.zeros((50, 50), np.uint8))
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    nan = rng.random((50, 50)).astype(np.float32)
    nan[0, 0] = np.inf
    np.save(src / "inf.npy", nan)
    result = _run(source_from_folder(src), tmp_path / "out", stream=StreamConfig(chunk_images=3))
    assert result.n_images == 4 and result.n_skipped == 3  # type: ignore[attr-defined]
    skipped = pd.read_parquet(tmp_path / "out" / "skipped.parquet")
    reasons = dict(zip(skipped[ID], skipped["reason"], strict=True))
    assert "constant" in reasons["blank.png"] and "cannot be decoded" in reasons["broken.png"]
    assert "NaN/Inf" in reasons["inf.npy"]


def test_mixed_channel_counts_stop_with_a_clear_error_keeping_written_parts(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    src = tmp_path / "imgs"
    src.mkdir()
    for i in range(4):
        np.save(src / f"a{i}.npy", rng.random((2, 40, 40)).astype(np.float32))
    np.save(src / "z_three.npy", rng.random((3, 40, 40)).astype(np.float32))
    with pytest.raises(ChannelMismatchError, match="z_three.npy: has 3 channels .* have 2"):
        _run(source_from_folder(src), tmp_path / "out", stream=StreamConfig(chunk_images=2))
    assert (tmp_path / "out" / "parts" / "images-00000.parquet").exists()
    assert (tmp_path / "out" / "parts" / "images-00001.parquet").exists()


def test_duplicate_ids_are_refused(tmp_path: Path) -> None:
    pd.DataFrame({"path": ["a.png", "b.png"], ID: ["x", "x"]}).to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(ManifestError, match=r"duplicate image ids \['x'\]"):
        source_from_table(tmp_path / "t.csv")


def test_cell_region_on_real_fields_with_ground_truth(demo_data: Path, tmp_path: Path) -> None:
    man = pd.read_csv(demo_data / "dsb2018" / "manifest.csv")
    man = man[man.heuristic_modality == "fluorescence_gray"].head(4)
    table = pd.DataFrame(
        {
            "path": [f"dsb2018/images/{i}.png" for i in man.image_id],
            "mask_path": [f"dsb2018/labels/{i}.png" for i in man.image_id],
            ID: list(man.image_id),
        }
    )
    for col in ("path", "mask_path"):
        table[col] = [str(demo_data / p) for p in table[col]]
    table.to_csv(tmp_path / "t.csv", index=False)
    src = source_from_table(tmp_path / "t.csv")
    result = _run(src, tmp_path / "out", profile=ProfileConfig(mode="cell-region", rc=1.0))
    images, _ = read_embeddings(tmp_path / "out" / "embeddings.parquet")
    cells, _ = read_embeddings(tmp_path / "out" / "cells.parquet")
    assert result.n_images == 4  # type: ignore[attr-defined]
    for image_id, n in zip(man.image_id, man.n_nuclei, strict=True):
        labels = iio.imread(demo_data / "dsb2018" / "labels" / f"{image_id}.png")
        n_labels = len(np.unique(labels)) - 1
        assert n_labels == n
        assert (cells[ID] == image_id).sum() == n_labels
        assert images.loc[images[ID] == image_id, "Metadata_n_cells"].item() == n_labels
        mine = cells.loc[cells[ID] == image_id].filter(like="ch0_").to_numpy().mean(axis=0)
        assert np.allclose(images.loc[images[ID] == image_id].filter(like="ch0_").to_numpy()[0], mine, atol=1e-5)
    assert {"Metadata_BoxX0", "Metadata_CentroidY"} <= set(cells.columns)


def test_images_with_no_cells_are_dropped_or_zeroed(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    np.save(tmp_path / "img.npy", rng.random((1, 64, 64)).astype(np.float32))
    np.save(tmp_path / "mask.npy", np.zeros((64, 64), np.int32))
    pd.DataFrame({"path": ["img.npy"], "mask_path": ["mask.npy"]}).to_csv(tmp_path / "t.csv", index=False)
    src = source_from_table(tmp_path / "t.csv")
    dropped = _run(src, tmp_path / "d", profile=ProfileConfig(mode="cell-region"))
    assert dropped.n_images == 0 and dropped.skipped[0]["reason"] == "no cells detected"  # type: ignore[attr-defined]
    zeroed = _run(
        src,
        tmp_path / "z",
        profile=ProfileConfig(mode="cell-region"),
        stream=StreamConfig(chunk_images=5, empty="zero", write_h5ad=True),
    )
    df, _ = read_embeddings(tmp_path / "z" / "embeddings.parquet")
    assert zeroed.n_images == 1 and not df.filter(like="ch0_").to_numpy().any()  # type: ignore[attr-defined]
    import anndata

    adata = anndata.read_h5ad(tmp_path / "z" / "embeddings.h5ad")
    assert adata.shape == (1, 32) and "microsnoop" in adata.uns


def test_mask_of_the_wrong_shape_is_a_named_skip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for name, shape in (("good", (64, 64)), ("bad", (60, 64))):
        np.save(tmp_path / f"{name}.npy", rng.random((1, 64, 64)).astype(np.float32))
        labels = np.zeros(shape, np.int32)
        labels[10:20, 10:20] = 1
        np.save(tmp_path / f"{name}_mask.npy", labels)
    table = pd.DataFrame({"path": ["good.npy", "bad.npy"], "mask_path": ["good_mask.npy", "bad_mask.npy"]})
    table.to_csv(tmp_path / "t.csv", index=False)
    result = _run(source_from_table(tmp_path / "t.csv"), tmp_path / "o", profile=ProfileConfig(mode="cell-region"))
    assert result.n_images == 1 and result.n_skipped == 1  # type: ignore[attr-defined]
    assert "bad.npy: mask shape (60, 64) differs" in result.skipped[0]["reason"]  # type: ignore[attr-defined]


def test_cell_boxes_larger_than_a_tiny_image_are_clipped(tmp_path: Path) -> None:
    np.save(tmp_path / "tiny.npy", np.random.default_rng(0).random((2, 12, 12)).astype(np.float32))
    labels = np.zeros((12, 12), np.int32)
    labels[3:9, 3:9] = 1
    np.save(tmp_path / "tiny_mask.npy", labels)
    pd.DataFrame({"path": ["tiny.npy"], "mask_path": ["tiny_mask.npy"]}).to_csv(tmp_path / "t.csv", index=False)
    _run(source_from_table(tmp_path / "t.csv"), tmp_path / "o", profile=ProfileConfig(mode="cell-region", rc=4.0))
    cells, _ = read_embeddings(tmp_path / "o" / "cells.parquet")
    assert cells[["Metadata_BoxX0", "Metadata_BoxY0", "Metadata_BoxX1", "Metadata_BoxY1"]].iloc[0].tolist() == [
        0,
        0,
        12,
        12,
    ]


def test_rescale_and_tile_modes_embed_what_they_promise(demo_data: Path, tmp_path: Path) -> None:
    """Rescale: the field resized to the input size, once; tile: the mean over overlapping input-size tiles."""
    src = source_from_folder(demo_data / "cellprofiler_human")
    rt = init_runtime(device="cpu", amp="off", channels_last=False)
    got = {}
    for mode in ("rescale", "tile"):
        result = _run(src, tmp_path / mode, profile=ProfileConfig(mode=mode))
        assert result.n_images == 3  # type: ignore[attr-defined]
        table, _ = read_embeddings(tmp_path / mode / "embeddings.parquet")
        assert table[ID].tolist() == src[ID].tolist()
        got[mode] = table.filter(like="ch0_").to_numpy()
    for row, path in enumerate(src["path"]):
        image = read_image(path)  # 1 x 512 x 512
        tiles = list(make_tiles(image, CONTRACT.input_size, 0.1))
        assert len(tiles) >= 64  # 512 / 64 with overlap: the tile mode really tiles
        rescaled = embed_crops(_encoder(), [rescale_to_square(image, CONTRACT.input_size)], CONTRACT, rt)[0]
        tiled = embed_crops(_encoder(), tiles, CONTRACT, rt).mean(axis=0)
        assert np.allclose(got["rescale"][row], rescaled, atol=1e-5)
        assert np.allclose(got["tile"][row], tiled, atol=1e-5)
    assert not np.allclose(got["rescale"], got["tile"], atol=1e-3)


@pytest.mark.slow
@pytest.mark.parametrize("intensity", ["crop", "dataset"])  # dataset: rank 0 fits the levels, every rank uses them
def test_distributed_embedding_on_cpu_equals_single_process(
    cells: pd.DataFrame, tmp_path: Path, intensity: str
) -> None:
    torch.manual_seed(0)
    ckpt = save_checkpoint(
        tmp_path / "tiny.pt", MicrosnoopUNet(EncoderConfig(depths=(8, 16, 32))), preprocess=CONTRACT, provenance={}
    )
    cells.to_csv(tmp_path / "cells.csv", index=False)
    args = [
        "-m",
        "microsnoop",
        "embed",
        "--table",
        str(tmp_path / "cells.csv"),
        "--checkpoint",
        str(ckpt),
        "--chunk-images",
        "25",
        "--device",
        "cpu",
        "--amp",
        "off",
        "--no-progress",
        "--intensity",
        intensity,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, *args, "--out", str(tmp_path / "one")], check=True, env=env, timeout=600)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc-per-node",
            "2",
            "--master-port",
            str(29519 + (intensity == "dataset")),
            *args,
            "--out",
            str(tmp_path / "two"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    one, _ = read_embeddings(tmp_path / "one" / "embeddings.parquet")
    two, _ = read_embeddings(tmp_path / "two" / "embeddings.parquet")
    assert len(one) == 120
    pd.testing.assert_frame_equal(one, two)
