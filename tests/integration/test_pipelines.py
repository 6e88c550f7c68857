"""Pipelines: compiled specs are current and request GPUs; local runs are real (kfp.local, embedded services).

No Kubeflow Pipelines server can run here, so ``submit`` is checked against a recording stand-in for
``kfp.Client``: the test asserts the requests it would send, not a server's answer.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pandas as pd
import pytest
import yaml

from pipelines.runner import COMPILED_DIR, compile_pipelines, compiled_path, run_local, submit
from services.settings import PlatformSettings
from tests.integration._data import tiny_fields
from tests.integration._postgres import embedded_platform
from tests.integration._s3 import S3Server

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
NAMES = ["end_to_end", "pretraining", "profiling"]


def _executors(path: Path) -> dict[str, Any]:
    docs = list(yaml.safe_load_all(path.read_text()))
    return {"spec": docs[0], "platform": docs[1] if len(docs) > 1 else {}}


def test_committed_compiled_pipelines_are_current(tmp_path: Path) -> None:
    fresh = compile_pipelines(PlatformSettings(), tmp_path)
    for path in fresh:
        committed = COMPILED_DIR / path.name
        assert committed.is_file(), f"{committed} missing: run 'microsnoop pipeline compile' and commit it"
        assert committed.read_text() == path.read_text(), (
            f"{committed.name} is stale: run 'microsnoop pipeline compile' (with no MICROSNOOP_* set) and commit"
        )


def test_compiled_steps_use_the_project_image_install_nothing_and_request_gpus(tmp_path: Path) -> None:
    settings = replace(
        PlatformSettings(),
        image="registry.example/microsnoop:9.9",
        gpu_limit=2,
        gpu_node_selector="accelerator=h100",
        gpu_toleration="nvidia.com/gpu=present:NoSchedule",
    )
    (path,) = compile_pipelines(settings, tmp_path, ["end_to_end"])
    docs = _executors(path)
    executors = docs["spec"]["deploymentSpec"]["executors"]
    for name, ex in executors.items():
        container = ex["container"]
        assert container["image"] == "registry.example/microsnoop:9.9", name
        assert "pip install" not in " ".join(container.get("command", [])), name
        gpu = container.get("resources", {}).get("accelerator")
        if name in ("exec-pretrain", "exec-embed"):
            assert gpu["resourceType"] == "nvidia.com/gpu" and gpu["resourceCount"] == "2", name
        else:
            assert gpu is None, name
    k8s = docs["platform"]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert k8s["exec-embed"]["nodeSelector"]["labels"] == {"accelerator": "h100"}
    assert k8s["exec-pretrain"]["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert "exec-segment" not in k8s


def test_steps_receive_service_settings_from_a_secret(tmp_path: Path) -> None:
    settings = replace(PlatformSettings(), steps_secret_name="microsnoop-steps", gpu_limit=0)
    (path,) = compile_pipelines(settings, tmp_path, ["profiling"])
    k8s = _executors(path)["platform"]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    env = k8s["exec-publish-features"]["secretAsEnv"][0]
    assert env["secretName"] == "microsnoop-steps" and env["optional"] is True
    assert {"secretKey": "MICROSNOOP_PG_DSN", "envVar": "MICROSNOOP_PG_DSN"} in env["keyToEnv"]
    assert "accelerator" not in str(_executors(path)["spec"]["deploymentSpec"]["executors"]["exec-embed"])


def test_side_effect_steps_are_not_cached_and_io_steps_retry() -> None:
    spec = _executors(compiled_path("profiling"))["spec"]
    tasks = spec["root"]["dag"]["tasks"]
    assert tasks["publish-features"]["cachingOptions"] == {}
    loop = next(t for name, t in tasks.items() if name.startswith("for-loop"))
    embed = spec["components"][loop["componentRef"]["name"]]["dag"]["tasks"]["embed"]  # one per shard
    assert embed["cachingOptions"] == {"enableCache": True}
    assert embed["retryPolicy"]["maxRetryCount"] == 2


class RecordingClient:
    """Stand-in for kfp.Client (no KFP server can run here): records every request."""

    def __init__(self, host: str, existing: bool = False) -> None:
        self.host, self.calls, self.existing = host, [], existing

    def __getattr__(self, name: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append((name, args, kwargs))
            return {
                "get_pipeline_id": "pid-1" if self.existing else None,
                "upload_pipeline": SimpleNamespace(pipeline_id="pid-1"),
                "list_pipeline_versions": SimpleNamespace(pipeline_versions=[]),
                "upload_pipeline_version": SimpleNamespace(pipeline_version_id="vid-1"),
                "create_experiment": SimpleNamespace(experiment_id="eid-1"),
                "create_recurring_run": SimpleNamespace(recurring_run_id="rr-1"),
                "run_pipeline": SimpleNamespace(run_id="run-1"),
                "list_recurring_runs": SimpleNamespace(
                    recurring_runs=[
                        SimpleNamespace(
                            recurring_run_id="rr-old", display_name="microsnoop-profiling-scheduled", status="ENABLED"
                        )
                    ]
                ),
                "disable_recurring_run": {},
            }[name]

        return call


def test_submit_uploads_a_version_and_creates_a_recurring_run() -> None:
    clients: list[RecordingClient] = []

    def factory(host: str) -> RecordingClient:
        clients.append(RecordingClient(host))
        return clients[-1]

    ids = submit(
        "profiling",
        host="http://kfp.example:8888",
        settings=PlatformSettings(),
        arguments={"source_table": "s3://bucket/plate1.csv"},
        schedule="0 2 * * *",
        client_factory=factory,
    )
    assert ids == {"pipeline_id": "pid-1", "version_id": "vid-1", "recurring_run_id": "rr-1"}
    calls = {name: kwargs for name, _, kwargs in clients[0].calls}
    assert clients[0].host == "http://kfp.example:8888"
    assert calls["upload_pipeline"]["pipeline_name"] == "microsnoop-profiling"
    assert calls["create_recurring_run"]["cron_expression"] == "0 2 * * *"
    assert calls["create_recurring_run"]["params"] == {"source_table": "s3://bucket/plate1.csv"}
    assert calls["create_recurring_run"]["version_id"] == "vid-1"
    assert "run_pipeline" not in calls
    # The previous schedule of this pipeline is disabled, not duplicated; the version name carries a content hash.
    assert [args for name, args, _ in clients[0].calls if name == "disable_recurring_run"] == [("rr-old",)]
    version_name = [args for name, args, _ in clients[0].calls if name == "upload_pipeline_version"][0][1]
    assert version_name.startswith("microsnoop-profiling-0.1.0-p6-") and len(version_name.rsplit("-", 1)[1]) == 10


def test_submit_one_run_reuses_an_existing_pipeline() -> None:
    client = RecordingClient("h", existing=True)
    ids = submit("pretraining", host="h", settings=PlatformSettings(), client_factory=lambda host: client)
    names = [name for name, _, _ in client.calls]
    assert "upload_pipeline" not in names and "run_pipeline" in names and ids["run_id"] == "run-1"


def test_submit_without_a_compiled_file_says_how_to_fix(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="pipeline compile"):
        submit("profiling", host="h", settings=PlatformSettings(), package=tmp_path / "nope.yaml")


@pytest.fixture(scope="module")
def platform_settings() -> Iterator[PlatformSettings]:
    """Fresh embedded PostgreSQL, MLflow (SQLite) and file store for this module's pipeline runs."""
    with embedded_platform("pipelines") as settings:
        yield settings


@pytest.mark.slow
def test_profiling_runs_locally_and_republishing_keeps_row_counts(
    tmp_path: Path, platform_settings: PlatformSettings
) -> None:
    from services.featurestore import FeatureStore

    args = {
        "source_table": str(tiny_fields(tmp_path)),
        "model_ref": str(REPO / "models" / "microsnoop-cpu-v1.pt"),
        "label_column": "Metadata_Label",
        "n_shards": 2,  # kfp.local runs the ParallelFor over the shard plan
    }
    print_before = builtins.print
    run_local("profiling", args, platform_settings, pipeline_root=tmp_path / "kfp1")
    assert builtins.print is print_before  # kfp.local's threaded log indentation must not leak out
    with FeatureStore.from_settings(platform_settings) as store:
        first = store.counts()
        version = store.model_versions("image")[-1]
        hits = store.search(
            "image",
            model_version=version,
            entity_id=store.page("image", model_version=version, limit=1)["entity_id"].iloc[0],
            k=2,
        )
    assert first["image"] == 3 and first["cell"] > 3
    assert len(hits) == 2 and all(h.distance >= 0 for h in hits)
    run_local("profiling", args, platform_settings, pipeline_root=tmp_path / "kfp2")
    with FeatureStore.from_settings(platform_settings) as store:
        assert store.counts() == first


@pytest.mark.slow
def test_end_to_end_registers_a_champion_and_publishes_with_its_version(
    tmp_path: Path, platform_settings: PlatformSettings
) -> None:
    from microsnoop_platform.demo import demo_arguments
    from services.featurestore import FeatureStore
    from services.registry import list_versions

    args = demo_arguments(REPO / "demo_data", REPO / "models" / "microsnoop-cpu-v1.pt", epochs=1, images_per_epoch=8)
    args.update(source_table=str(tiny_fields(tmp_path, n=2)), limit_per_class=1)
    run_local("end_to_end", args, platform_settings, pipeline_root=tmp_path / "kfp")
    versions = list_versions(platform_settings)
    assert len(versions) >= 2  # the shipped baseline and the new candidate, each registered once
    champions = versions[versions["aliases"].astype(str).str.contains("champion")]
    assert len(champions) == 1
    champion = f"{platform_settings.model_name}/{champions['version'].iloc[0]}"
    with FeatureStore.from_settings(platform_settings) as store:
        assert champion in store.model_versions("image")
        assert len(store.page("image", model_version=champion, limit=10)) == 2


def test_stage_step_stores_images_in_a_real_s3_server(tmp_path: Path, s3_server: S3Server) -> None:
    from services.staging import stage_source_step
    from services.storage import open_store

    settings = PlatformSettings(
        data_dir=tmp_path,
        storage_uri=f"s3://microsnoop-steps/{tmp_path.name}",
        s3_endpoint=s3_server.endpoint,
        s3_access_key=s3_server.access_key,
        s3_secret_key=s3_server.secret_key,
    )
    out = stage_source_step(str(tiny_fields(tmp_path, n=2)), str(tmp_path / "staged"), settings=settings)
    staged = pd.read_csv(tmp_path / "staged" / "source.csv")
    store = open_store(settings)
    assert out["n_images"] == 2 and all(u.startswith("s3://microsnoop-steps/") for u in staged["Metadata_ImageURI"])
    assert all(store.exists(u) for u in staged["Metadata_ImageURI"])
    assert len(store.read_manifest(out["manifest"])["objects"]) == 2
    # Staging again uploads nothing new: the keys are content hashes.
    before = sorted(store.list_uris("images"))
    stage_source_step(str(tiny_fields(tmp_path, n=2)), str(tmp_path / "staged2"), settings=settings)
    assert sorted(store.list_uris("images")) == before


def test_stage_step_reads_a_source_table_from_s3(tmp_path: Path, s3_server: S3Server) -> None:
    from minio import Minio

    from services.staging import stage_source_step

    client = Minio(s3_server.endpoint, s3_server.access_key, s3_server.secret_key, secure=False)
    if not client.bucket_exists("plates"):
        client.make_bucket("plates")
    table = pd.read_csv(tiny_fields(tmp_path, n=2))
    for i, path in enumerate(table["path"]):
        client.fput_object("plates", f"run1/images/field{i}.png", path)
    table["path"] = ["images/field0.png", "images/field1.png"]
    table.to_csv(tmp_path / "plate.csv", index=False)
    client.fput_object("plates", "run1/plate.csv", str(tmp_path / "plate.csv"))
    settings = PlatformSettings(
        data_dir=tmp_path,
        s3_endpoint=s3_server.endpoint,
        s3_access_key=s3_server.access_key,
        s3_secret_key=s3_server.secret_key,
    )
    out = stage_source_step("s3://plates/run1/plate.csv", str(tmp_path / "staged"), settings=settings)
    staged = pd.read_csv(tmp_path / "staged" / "source.csv")
    assert out["n_images"] == 2 and list(staged["Metadata_ImageID"]) == list(table["Metadata_ImageID"])
    assert all((tmp_path / "staged" / p).is_file() for p in staged["path"])
    assert not (tmp_path / "staged" / "source-input").exists()  # downloads stay out of the artifact


def test_step_inputs_on_s3_are_fetched_as_folders_and_tables(tmp_path: Path, s3_server: S3Server) -> None:
    from minio import Minio

    from services.staging import local_input

    client = Minio(s3_server.endpoint, s3_server.access_key, s3_server.secret_key, secure=False)
    if not client.bucket_exists("eval"):
        client.make_bucket("eval")
    fields = REPO / "demo_data" / "dsb2018"
    names = ["manifest.csv", *[f"images/{p.name}" for p in sorted((fields / "images").glob("*.png"))[:2]]]
    for name in names:
        client.fput_object("eval", f"fields/{name}", str(fields / name))
    types = pd.DataFrame({"path": ["images/a.png"], "type": ["fluorescence"]})
    types.to_csv(tmp_path / "types.csv", index=False)
    client.fput_object("eval", "pool/types.csv", str(tmp_path / "types.csv"))
    client.fput_object("eval", "pool/images/a.png", str(fields / names[1]))
    settings = PlatformSettings(
        data_dir=tmp_path,
        s3_endpoint=s3_server.endpoint,
        s3_access_key=s3_server.access_key,
        s3_secret_key=s3_server.secret_key,
    )
    folder = local_input("s3://eval/fields", tmp_path / "fields", settings)
    assert sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) == sorted(names)
    table = pd.read_csv(local_input("s3://eval/pool/types.csv", tmp_path / "pool", settings, table=True))
    assert table["type"].tolist() == ["fluorescence"] and Path(table["path"][0]).is_file()
    assert local_input("/data/x.csv", tmp_path, settings) == Path("/data/x.csv")
    with pytest.raises(FileNotFoundError, match="no objects"):
        local_input("s3://eval/nothing", tmp_path / "none", settings)
