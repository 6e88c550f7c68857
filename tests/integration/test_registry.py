"""The encoder registry against a real MLflow tracking store (SQLite) and, where possible, S3 artifacts."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow import MlflowClient

from microsnoop.models.checkpoint import file_sha256, load_encoder
from services.registry import (
    Registration,
    RegistryError,
    list_versions,
    log_benchmark,
    register_encoder,
    resolve_encoder,
)
from services.settings import PlatformSettings
from tests.integration._mlflow import make_tiny_checkpoint
from tests.integration._s3 import S3Server

pytestmark = pytest.mark.integration

LINEAGE = {"pool_manifest_sha256": "ab" * 32, "training": {"nepoch": 3, "lr": 1e-3}}


@dataclass(frozen=True)
class Built:
    """A registry with four registrations: A, A again, B (worse), C (better)."""

    settings: PlatformSettings
    checkpoints: dict[str, Path]
    regs: dict[str, Registration]


def _embed(path: Path) -> np.ndarray:
    encoder = load_encoder(path)
    x = torch.from_numpy(np.random.default_rng(0).normal(size=(2, 1, 32, 32)).astype(np.float32))
    with torch.inference_mode():
        return encoder(x).numpy()


@pytest.fixture(scope="module")
def built(mlflow_module_settings: PlatformSettings, tmp_path_factory: pytest.TempPathFactory) -> Built:
    settings = mlflow_module_settings
    folder = tmp_path_factory.mktemp("ckpt")
    ckpts = {k: make_tiny_checkpoint(folder / f"{k}.pt", seed=i) for i, k in enumerate("ABC")}
    regs = {
        "A": register_encoder(
            settings, ckpts["A"], lineage=LINEAGE, scores={"map": 0.5, "knn": 0.6}, primary_metric="map"
        ),
        "A again": register_encoder(settings, ckpts["A"], lineage=LINEAGE, scores={"map": 0.5}, primary_metric="map"),
        "B": register_encoder(
            settings, ckpts["B"], lineage=LINEAGE, scores={"map": 0.4, "knn": 0.9}, primary_metric="map"
        ),
        "C": register_encoder(
            settings, ckpts["C"], lineage=LINEAGE, scores={"map": 0.7, "knn": 0.5}, primary_metric="map"
        ),
    }
    return Built(settings, ckpts, regs)


def _client(settings: PlatformSettings) -> MlflowClient:
    return MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)


def test_same_checkpoint_gives_the_same_version(built: Built) -> None:
    first, again = built.regs["A"], built.regs["A again"]
    assert (first.name, first.version, first.promoted, first.previous_champion) == ("test-encoder", "1", True, None)
    assert (again.version, again.run_id, again.promoted) == ("1", first.run_id, False)
    shas = [mv.tags["checkpoint_sha256"] for mv in _client(built.settings).search_model_versions("name='test-encoder'")]
    assert sorted(shas) == sorted({file_sha256(p) for p in built.checkpoints.values()})


def test_champion_moves_only_on_improvement(built: Built) -> None:
    worse, better = built.regs["B"], built.regs["C"]
    assert (worse.version, worse.promoted, worse.previous_champion) == ("2", False, "1")
    assert (better.version, better.promoted, better.previous_champion) == ("3", True, "1")
    assert str(_client(built.settings).get_model_version_by_alias("test-encoder", "champion").version) == "3"


def test_lineage_is_logged(built: Built) -> None:
    run = _client(built.settings).get_run(built.regs["A"].run_id)
    assert run.data.metrics == {"map": 0.5, "knn": 0.6}
    params = run.data.params
    assert params["lineage.pool_manifest_sha256"] == "ab" * 32
    assert params["lineage.training.nepoch"] == "3"
    assert params["checkpoint.sha256"] == file_sha256(built.checkpoints["A"])
    assert params["preprocess.input_size"] == "32"
    assert params["encoder.depths"] == "[8, 16]"
    assert params["code_revision"]


@pytest.mark.parametrize(
    ("ref", "key"),
    [("champion", "C"), ("2", "B"), ("models:/test-encoder@champion", "C"), ("models:/test-encoder/1", "A")],
)
def test_resolve_gives_a_loadable_identical_encoder(built: Built, tmp_path: Path, ref: str, key: str) -> None:
    path = resolve_encoder(built.settings, ref, dest=tmp_path / "dl")
    assert path.parent == tmp_path / "dl"
    assert file_sha256(path) == file_sha256(built.checkpoints[key])
    np.testing.assert_array_equal(_embed(path), _embed(built.checkpoints[key]))
    assert resolve_encoder(built.settings, ref, dest=tmp_path / "dl") == path  # cached copy reused


def test_resolve_default_dest_and_local_path(built: Built) -> None:
    path = resolve_encoder(built.settings)
    assert path.is_relative_to(built.settings.data_dir / "models" / "test-encoder" / "3")
    local = built.checkpoints["A"]
    assert resolve_encoder(built.settings, str(local)) == local
    with pytest.raises(RegistryError, match="no such checkpoint file"):
        resolve_encoder(built.settings, str(local.with_name("missing.pt")))
    with pytest.raises(RegistryError, match="no version 99"):
        resolve_encoder(built.settings, "99")
    with pytest.raises(RegistryError, match="no 'staging' alias"):
        resolve_encoder(built.settings, "staging")


def test_logged_pyfunc_embeds_like_the_checkpoint(built: Built, tmp_path: Path) -> None:
    import mlflow.artifacts
    import mlflow.pyfunc

    mv = _client(built.settings).get_model_version("test-encoder", "1")
    local = mlflow.artifacts.download_artifacts(
        artifact_uri=mv.source, dst_path=str(tmp_path), tracking_uri=built.settings.tracking_uri
    )
    model = mlflow.pyfunc.load_model(local)
    images = np.random.default_rng(1).uniform(0, 100, size=(3, 1, 32, 32)).astype(np.float32)
    out = model.predict(images)
    assert out.shape == (3, 16)
    assert np.isfinite(out).all()


def test_list_versions_table(built: Built) -> None:
    table = list_versions(built.settings)
    assert table["version"].tolist() == [1, 2, 3]
    assert table["aliases"].tolist() == ["", "", "champion"]
    assert table["primary_metric"].tolist() == ["map"] * 3
    assert table["primary_value"].tolist() == [0.5, 0.4, 0.7]
    assert table["knn"].tolist() == [0.6, 0.9, 0.5]
    assert table["checkpoint_sha256"].tolist() == [file_sha256(built.checkpoints[k]) for k in "ABC"]


def test_lower_is_better_and_no_champion_error(mlflow_settings: PlatformSettings, tmp_path: Path) -> None:
    assert list_versions(mlflow_settings).empty
    with pytest.raises(RegistryError, match="no 'champion' alias.*register_encoder"):
        resolve_encoder(mlflow_settings)
    a, b = (make_tiny_checkpoint(tmp_path / f"{k}.pt", seed=10 + i) for i, k in enumerate("ab"))
    first = register_encoder(
        mlflow_settings, a, lineage={}, scores={"loss": 0.3}, primary_metric="loss", higher_is_better=False
    )
    second = register_encoder(
        mlflow_settings, b, lineage={}, scores={"loss": 0.2}, primary_metric="loss", higher_is_better=False
    )
    assert first.promoted and second.promoted and second.previous_champion == "1"
    with pytest.raises(ValueError, match="primary_metric 'map' is not among the scores"):
        register_encoder(mlflow_settings, a, lineage={}, scores={"loss": 0.3}, primary_metric="map")


def test_log_benchmark_metrics_visible(mlflow_settings: PlatformSettings, tmp_path: Path) -> None:
    extra = tmp_path / "table.md"
    extra.write_text("| a | b |\n")
    report = {
        "suite": "cellcycle",
        "n": 513,
        "model_version": "3",
        "pool_manifest_sha256": "cd" * 32,
        "scores": {"microsnoop": {"knn": {"accuracy": 0.81, "accuracy_ci95": [0.7, 0.9]}}, "cp-measure": {"f1": 0.9}},
    }
    run_id = log_benchmark(mlflow_settings, report, run_name="bench", artifacts=[extra])
    run = _client(mlflow_settings).get_run(run_id)
    assert run.data.metrics == {"n": 513.0, "scores.microsnoop.knn.accuracy": 0.81, "scores.cp-measure.f1": 0.9}
    assert run.data.params["suite"] == "cellcycle"
    assert run.data.tags["model_version"] == "3"
    assert run.data.tags["pool_manifest_sha256"] == "cd" * 32
    assert run.info.run_name == "bench" and run.info.status == "FINISHED"
    names = {a.path for a in _client(mlflow_settings).list_artifacts(run_id)}
    assert names == {"report.json", "table.md"}


def test_registry_with_s3_artifacts(s3_server: S3Server, tmp_path: Path) -> None:
    if importlib.util.find_spec("boto3") is None:
        pytest.skip("boto3 is not installed: MLflow's s3:// artifact store needs it (pip install boto3)")
    settings = PlatformSettings(
        data_dir=tmp_path / "platform",
        model_name="test-encoder",
        mlflow_artifacts="s3://mlflow-artifacts/test",
        s3_endpoint=s3_server.endpoint,
        s3_access_key=s3_server.access_key,
        s3_secret_key=s3_server.secret_key,
    )
    from services.storage import open_store

    open_store(settings, "s3://mlflow-artifacts").put_bytes(b"", kind="reports")  # creates the bucket
    ckpt = make_tiny_checkpoint(tmp_path / "s3.pt", seed=5)
    reg = register_encoder(settings, ckpt, lineage={}, scores={"map": 0.1}, primary_metric="map")
    path = resolve_encoder(settings, reg.version, dest=tmp_path / "dl")
    assert file_sha256(path) == file_sha256(ckpt)
