"""An OME-Zarr HCS plate goes stage -> segment -> embed -> publish into the feature store with plate/well/site
metadata, and is searchable with filters (real embedded PostgreSQL + pgvector, MLflow on SQLite, weed mini S3)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from services.settings import PlatformSettings
from tests._omezarr import write_plate
from tests.integration._postgres import embedded_platform
from tests.integration._s3 import S3Server

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
WELLS = ("A/1", "A/2", "B/1")


@pytest.fixture(scope="module")
def platform_settings() -> Iterator[PlatformSettings]:
    """Fresh embedded PostgreSQL, MLflow (SQLite) and file store for this module."""
    with embedded_platform("omezarr") as settings:
        yield settings


@pytest.mark.slow
def test_a_plate_goes_from_zarr_to_searchable_wells(tmp_path: Path, platform_settings: PlatformSettings) -> None:
    from services.featurestore import FeatureStore
    from services.staging import stage_source_step
    from services.steps import embed_step, joint_step, publish_step, segment_step

    plate = write_plate(tmp_path / "screen.zarr", wells=WELLS, fields=2, size=96, plate_name="screen-7", levels=2)
    staged = stage_source_step(str(plate), str(tmp_path / "staged"), settings=platform_settings)
    assert staged["n_images"] == 6
    table = pd.read_csv(tmp_path / "staged" / "source.csv")
    assert list(table["Metadata_Well"]) == ["A01", "A01", "A02", "A02", "B01", "B01"]
    assert table["Metadata_SourceURI"].iloc[0] == f"{plate}/A/1/0"
    seg = segment_step(str(tmp_path / "staged"), str(tmp_path / "seg"), settings=platform_settings)
    assert seg["n_images"] == 6 and seg["failed"] == 0 and seg["n_cells"] >= 6
    emb = embed_step(
        str(tmp_path / "seg"),
        str(tmp_path / "emb"),
        model_ref=str(REPO / "models" / "microsnoop-cpu-v1.pt"),
        device="cpu",
        settings=platform_settings,
    )
    assert emb["n_images"] == 6
    published = publish_step(str(tmp_path / "emb"), model_version=emb["model_version"], settings=platform_settings)
    assert published["image"] == 6 and published["cell"] >= 6
    with FeatureStore.from_settings(platform_settings) as store:
        version = emb["model_version"]
        wells = store.page("image", model_version=version, limit=10, filters={"plate": "screen-7"})
        assert sorted(wells["well"]) == ["A01", "A01", "A02", "A02", "B01", "B01"]
        query = wells[wells["well"] == "A01"]["entity_id"].iloc[0]
        hits = store.search("image", model_version=version, entity_id=query, k=5, filters={"well": "A02"})
        assert len(hits) == 2 and {h.metadata["well"] for h in hits} == {"A02"}
        assert {h.metadata["plate"] for h in hits} == {"screen-7"}
        assert {h.metadata["extra"]["Metadata_Site"] for h in hits} == {0, 1}
        cell_page = store.page("cell", model_version=version, limit=500, filters={"well": "B01"})
        assert len(cell_page) >= 2 and set(cell_page["plate"]) == {"screen-7"}
        one = store.search("image", model_version=version, entity_id=query, k=5, filters={"well": "A02", "site": "1"})
        assert len(one) == 1 and one[0].metadata["extra"]["Metadata_Site"] == 1
        other_sites = store.search("image", model_version=version, entity_id=query, k=10, exclude_same=["site"])
        assert other_sites and {h.metadata["extra"]["Metadata_Site"] for h in other_sites} == {1}
    # The paper's joint use as the pipeline's joint step runs it: two channels, PCA to 3 each, own version.
    joint = joint_step(str(tmp_path / "emb"), str(tmp_path / "joint"), embedded=emb, n_components=3)
    assert joint["joint"] and joint["model_version"].startswith(f"{version}+joint3-")
    assert len(joint["joint_tables"]["embeddings.parquet"]["modalities"]) == 2
    joint_table = pd.read_parquet(tmp_path / "joint" / "embeddings.parquet")
    assert [c for c in joint_table.columns if not c.startswith("Metadata_")] == [f"joint_{k:03d}" for k in range(6)]
    again = joint_step(str(tmp_path / "emb"), str(tmp_path / "joint2"), embedded=emb, n_components=3)
    assert again["model_version"] == joint["model_version"], "the same data and fit give the same version"
    published = publish_step(str(tmp_path / "joint"), model_version=joint["model_version"], settings=platform_settings)
    assert published["image"] == 6
    with FeatureStore.from_settings(platform_settings) as store:
        hits = store.search("image", model_version=joint["model_version"], entity_id=query, k=5, filters={"site": "0"})
        assert hits and {h.metadata["extra"]["Metadata_Site"] for h in hits} == {0}
    passed = joint_step(str(tmp_path / "emb"), str(tmp_path / "plain"), embedded=emb, n_components=0)
    assert passed == {**emb, "joint": False}
    pd.testing.assert_frame_equal(
        pd.read_parquet(tmp_path / "plain" / "embeddings.parquet"),
        pd.read_parquet(tmp_path / "emb" / "embeddings.parquet"),
    )


def test_a_plate_on_s3_is_staged_reading_only_the_chosen_level(tmp_path: Path, s3_server: S3Server) -> None:
    from minio import Minio

    from services.staging import fetch_omezarr, stage_source_step

    plate = write_plate(tmp_path / "p.zarr", wells=("A/1", "B/3"), fields=1, size=64, levels=3)
    client = Minio(s3_server.endpoint, s3_server.access_key, s3_server.secret_key, secure=False)
    if not client.bucket_exists("screens"):
        client.make_bucket("screens")
    for path in sorted(p for p in plate.rglob("*") if p.is_file()):
        client.fput_object("screens", f"run2/p.zarr/{path.relative_to(plate).as_posix()}", str(path))
    settings = PlatformSettings(
        data_dir=tmp_path / "platform",
        s3_endpoint=s3_server.endpoint,
        s3_access_key=s3_server.access_key,
        s3_secret_key=s3_server.secret_key,
    )
    fetched = fetch_omezarr("s3://screens/run2/p.zarr", tmp_path / "fetched", settings, level=1)
    chunks = {p.relative_to(fetched).as_posix() for p in fetched.rglob("*") if p.is_file()}
    assert any(c.startswith("A/1/0/s1/") for c in chunks) and any(c.startswith("B/3/0/s1/") for c in chunks)
    assert not any("/s0/" in c or "/s2/" in c for c in chunks if not c.endswith("zarr.json"))
    out = stage_source_step("s3://screens/run2/p.zarr", str(tmp_path / "staged"), level=1, settings=settings)
    table = pd.read_csv(tmp_path / "staged" / "source.csv")
    assert out["n_images"] == 2 and list(table["Metadata_Well"]) == ["A01", "B03"]
    assert list(table["Metadata_SourceURI"]) == ["s3://screens/run2/p.zarr/A/1/0", "s3://screens/run2/p.zarr/B/3/0"]
    assert np.load(tmp_path / "staged" / table["path"].iloc[0]).shape == (2, 32, 32)  # level 1 of 64 px


def test_a_missing_level_fails_staging_in_one_line(tmp_path: Path) -> None:
    from microsnoop.errors import InvalidImageError
    from services.staging import stage_source_step

    plate = write_plate(tmp_path / "q.zarr", wells=("A/1",), fields=1, size=32, levels=1)
    settings = PlatformSettings(data_dir=tmp_path / "platform")
    with pytest.raises(InvalidImageError, match="resolution level 4 does not exist; it has 1 level"):
        stage_source_step(str(plate), str(tmp_path / "staged"), level=4, settings=settings)
