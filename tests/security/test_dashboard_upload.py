"""Dashboard uploads are capped and metadata is escaped before st.markdown (issue 14)."""

from __future__ import annotations

import io
import re
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from services.browse import BrowseError, similarity
from services.settings import PlatformSettings
from tests.integration._mlflow import make_tiny_checkpoint, mlflow_settings  # noqa: F401


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def test_uploads_over_the_byte_cap_are_refused() -> None:
    with pytest.raises(BrowseError, match="upload limit"):
        similarity.check_upload(b"\0" * (similarity.MAX_UPLOAD_BYTES + 1), "big.png")


def test_a_small_file_of_many_pixels_is_refused_before_decoding() -> None:
    bomb = _png(np.zeros((4096, 4096), np.uint8))  # ~16 M pixels in a few kB
    assert len(bomb) < 100_000
    started = time.perf_counter()
    with pytest.raises(BrowseError, match="pixels"):
        similarity.check_upload(bomb, "bomb.png")
    assert time.perf_counter() - started < 1.0


def test_garbage_uploads_are_a_message() -> None:
    with pytest.raises(BrowseError, match="not a readable"):
        similarity.check_upload(b"not an image", "x.png")


@pytest.mark.integration
def test_crowded_uploads_are_refused_not_embedded(
    mlflow_settings: PlatformSettings,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from services.registry import register_encoder

    register_encoder(
        mlflow_settings, make_tiny_checkpoint(tmp_path / "tiny.pt", seed=0), lineage={}, scores={"knn1": 0.5},
        primary_metric="knn1",
    )  # fmt: skip
    field = np.zeros((256, 256), np.uint8)
    for y in range(12, 256, 24):
        for x in range(12, 256, 24):
            field[y - 5 : y + 5, x - 5 : x + 5] = 200  # 100 separate nuclei
    monkeypatch.setattr(similarity, "MAX_UPLOAD_CELLS", 20)
    with pytest.raises(BrowseError, match="nuclei"):
        similarity.embed_upload(mlflow_settings, _png(field), "crowded.png")
    sparse = np.zeros((256, 256), np.uint8)
    sparse[100:120, 100:120] = 200
    vector, _ = similarity.embed_upload(mlflow_settings, _png(sparse), "one.png")
    assert np.isfinite(vector).all()


def test_metadata_is_escaped_for_markdown() -> None:
    from dashboard import common

    hostile = {"label": "![x](http://tracker.example/p.png)", "plate": "<img src=x>", "moa": "**bold**"}
    text = common.caption(hostile)
    assert not re.search(r"(?<!\\)[!\[\]()<>*:]", text), text  # every markdown/HTML character escaped
    assert similarity.escape_markdown("a_b") == "a\\_b"


@pytest.mark.integration
def test_an_upload_is_scaled_like_the_version_it_is_compared_with(
    mlflow_settings: PlatformSettings,  # noqa: F811
    pg_dsn: str,
    tmp_path: Path,
) -> None:
    """A version published on a dataset intensity scale (docs/intensity.md) gets uploads on that scale."""
    import dataclasses
    import uuid

    import pandas as pd

    from services.featurestore import FeatureStore
    from services.registry import register_encoder

    settings = dataclasses.replace(mlflow_settings, model_name=f"upload-scale-{uuid.uuid4().hex[:8]}")
    register_encoder(
        settings, make_tiny_checkpoint(tmp_path / "tiny.pt", seed=0), lineage={}, scores={"knn1": 0.5},
        primary_metric="knn1",
    )  # fmt: skip
    field = np.zeros((128, 128), np.uint8)
    field[40:60, 40:60], field[80:96, 80:96] = 200, 60  # a bright and a dim nucleus
    with FeatureStore(pg_dsn) as store:
        per_crop, version = similarity.embed_upload(settings, _png(field), "two.png", store=store)
        assert store.intensity_levels("image", version) == ()
        table = pd.DataFrame(
            np.eye(3, len(per_crop), dtype=np.float32), columns=[f"ch0_{k:03d}" for k in range(len(per_crop))]
        )
        table.insert(0, "Metadata_ImageID", ["a", "b", "c"])
        store.publish("image", table, model_version=version, replace=True, intensity_levels=((0.0, 255.0),))
        scaled, _ = similarity.embed_upload(settings, _png(field), "two.png", store=store)
    assert np.isfinite(scaled).all() and not np.allclose(scaled, per_crop, atol=1e-4)
