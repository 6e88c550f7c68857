"""Pool curation on real demo images and on crafted bad inputs."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pandas as pd
import pytest

from microsnoop.curate import MANIFEST_COLUMNS, curate_pool, hash_split, infer_type, load_pool_manifest
from microsnoop.errors import ManifestError


def test_demo_pool_manifest(demo_pool: Path) -> None:
    m = load_pool_manifest(demo_pool)
    assert list(m.columns) == MANIFEST_COLUMNS
    assert set(m["type"]) == {"fluorescence", "brightfield", "histology"}
    assert set(m["split"]) == {"train", "val"}
    assert m["content_hash"].is_unique
    two_channel = m[m["path"].str.endswith("instanseg_Fluorescence_example.tif")]
    assert sorted(two_channel["channel"]) == [0, 1] and two_channel["split"].nunique() == 1
    he = m[m["path"].str.endswith("instanseg_HE_example.tif")]
    assert len(he) == 1 and he["type"].iloc[0] == "histology", "RGB histology becomes one gray plane"
    for rel in m["plane_path"].head(3):
        assert np.load(demo_pool / rel).ndim == 2


def _write(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, array)
    return path


def test_bad_images_are_named_counted_and_skipped(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    src = tmp_path / "src"
    _write(src / "good.png", rng.integers(0, 255, (64, 64), dtype=np.uint8))
    _write(src / "const.png", np.full((64, 64), 9, np.uint8))
    (src / "empty.png").write_bytes(b"")
    (src / "corrupt.tif").write_bytes(b"II*\x00" + b"\x01" * 40)
    nan = rng.random((64, 64)).astype(np.float32)
    nan[3, 3] = np.nan
    np.save(src / "nan.npy", nan)
    manifest, report = curate_pool([src], tmp_path / "pool", progress=False)
    assert report.n_files == 5 and report.n_planes == 1 and len(manifest) == 1
    reasons = {Path(p.split("#")[0]).name: r.split(":")[0] for p, r in report.skipped}
    assert reasons == {
        "const.png": "constant",
        "empty.png": "unreadable",
        "corrupt.tif": "unreadable",
        "nan.npy": "non-finite",
    }
    assert "skipped 4" in report.summary()
    assert (tmp_path / "pool" / "skipped.tsv").read_text().count("\n") == 4


def test_source_split_kept_else_seeded_holdout(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    for split in ("train", "val"):
        for i in range(3):
            _write(tmp_path / "src" / split / f"{split}{i}.png", rng.integers(0, 255, (32, 32), dtype=np.uint8))
    for i in range(40):
        _write(tmp_path / "flat" / f"img{i}.png", rng.integers(0, 255, (32, 32), dtype=np.uint8))
    m, _ = curate_pool([tmp_path / "src", tmp_path / "flat"], tmp_path / "pool", progress=False)
    kept = m[m["source"].isin(["train", "val"])]
    assert (kept["split"] == kept["source"]).all()
    flat = m[m["source"] == "flat"]
    assert 3 <= (flat["split"] == "val").sum() <= 14
    m2, _ = curate_pool([tmp_path / "src", tmp_path / "flat"], tmp_path / "pool2", progress=False)
    assert m["split"].tolist() == m2["split"].tolist()
    assert hash_split("a", val_fraction=0.0, seed=0) == "train"


def test_type_rule_and_types_table(tmp_path: Path) -> None:
    dark = np.zeros((1, 64, 64), np.uint16)
    dark[0, 20:30, 20:30] = 5000
    assert infer_type(dark) == "fluorescence"
    bright = np.full((1, 64, 64), 200, np.uint8)
    bright[0, 20:30, 20:30] = 40
    assert infer_type(bright) == "brightfield"
    colour = np.stack([bright[0], bright[0] // 2, bright[0]])
    assert infer_type(colour) == "histology"
    _write(tmp_path / "x.png", bright[0])
    (tmp_path / "types.csv").write_text("path,type\nx.png,phase-contrast\n")
    m, _ = curate_pool([], tmp_path / "pool", types_table=tmp_path / "types.csv", progress=False)
    assert m["type"].tolist() == ["brightfield"]
    (tmp_path / "bad.csv").write_text("path,type\nx.png,confocal\n")
    with pytest.raises(ManifestError, match="unknown image type 'confocal'"):
        curate_pool([], tmp_path / "pool3", types_table=tmp_path / "bad.csv", progress=False)


def test_duplicate_ids_and_empty_pools_are_refused(tmp_path: Path) -> None:
    (tmp_path / "p").mkdir()
    row = dict.fromkeys(MANIFEST_COLUMNS, "x")
    pd.DataFrame([row, row]).to_parquet(tmp_path / "p" / "manifest.parquet")
    with pytest.raises(ManifestError, match="duplicate plane_id x"):
        load_pool_manifest(tmp_path / "p")
    with pytest.raises(ManifestError, match="no pool manifest.*microsnoop curate"):
        load_pool_manifest(tmp_path / "nope")
