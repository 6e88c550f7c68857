"""Multi-node pretraining through the Kubeflow Training Operator.

No Kubernetes API server or Training Operator can run here, so: the PyTorchJob manifests are validated
against the operator's published CRD schema (vendored in ``infra/crds``, strictly: an undeclared field
fails, where the API server would silently prune it); submission and status streaming run against a
scripted stand-in for ``kubernetes.client.CustomObjectsApi`` (the Kubernetes API is mocked); and the
job's real container commands run as two local processes with the environment the operator gives each
pod (copied from training-operator v1.9.0 ``pkg/controller.v1/pytorch/envvar.go``), on CPU with gloo.
"""

from __future__ import annotations

import copy
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from services.settings import PlatformSettings
from services.sharding import restore_folder, save_folder
from services.trainjob import (
    CONTAINER,
    TrainJobError,
    TrainJobSpec,
    job_name,
    pytorchjob_manifest,
    submit_and_wait,
)
from tests.unit.test_distributed import ARGS, _check

REPO = Path(__file__).resolve().parents[2]
CRD = REPO / "infra" / "crds" / "kubeflow.org_pytorchjobs.yaml"


def _strict(schema: Any) -> Any:
    """The schema with additionalProperties: false wherever it declares properties and allows nothing else."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if (
            "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft7Validator:
    crd = yaml.safe_load(CRD.read_text())
    assert crd["spec"]["names"]["kind"] == "PyTorchJob"
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return jsonschema.Draft7Validator(_strict(version["schema"]["openAPIV3Schema"]))


def _spec(**overrides: Any) -> TrainJobSpec:
    values: dict[str, Any] = dict(
        name="microsnoop-pretrain-abc123",
        namespace="kubeflow-user",
        image="registry.example/microsnoop:0.1.0-cuda12.8",
        pool_manifest="s3://bucket/store/manifests/pool-1.json",
        out_manifest="trainjob-microsnoop-pretrain-abc123",
        workers=4,
        gpus_per_worker=8,
        epochs=100,
        images_per_epoch=12000,
        secret_name="microsnoop-steps",
        node_selector="nvidia.com/gpu.present=true",
        toleration="nvidia.com/gpu=present:NoSchedule",
    )
    values.update(overrides)
    return TrainJobSpec(**values)


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"workers": 1, "gpus_per_worker": 1, "secret_name": "", "node_selector": "", "toleration": ""},
        {"gpus_per_worker": 0},
    ],
)
def test_manifests_validate_against_the_operator_crd(
    validator: jsonschema.Draft7Validator, overrides: dict[str, Any]
) -> None:
    spec = _spec(**overrides)
    manifest = pytorchjob_manifest(spec)
    errors = sorted(validator.iter_errors(manifest), key=str)
    assert not errors, [f"{list(e.absolute_path)}: {e.message}" for e in errors]
    replicas = manifest["spec"]["pytorchReplicaSpecs"]
    assert replicas["Master"]["replicas"] == 1
    assert replicas.get("Worker", {"replicas": 0})["replicas"] == spec.workers - 1
    container = replicas["Master"]["template"]["spec"]["containers"][0]
    assert container["name"] == CONTAINER  # the operator injects its environment into this container only
    limits = container["resources"].get("limits", {})
    assert limits.get("nvidia.com/gpu", 0) == spec.gpus_per_worker
    assert manifest["spec"]["nprocPerNode"] == str(max(1, spec.gpus_per_worker))


def test_the_strict_schema_catches_what_the_api_server_would_prune(validator: jsonschema.Draft7Validator) -> None:
    manifest = pytorchjob_manifest(_spec())
    typo = copy.deepcopy(manifest)
    typo["spec"]["nprocsPerNode"] = typo["spec"].pop("nprocPerNode")
    wrong_type = copy.deepcopy(manifest)
    wrong_type["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"] = "3"
    bad_container = copy.deepcopy(manifest)
    bad_container["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]["gpu"] = 1
    for broken in (typo, wrong_type, bad_container):
        assert list(validator.iter_errors(broken)), broken


def test_one_gpu_per_pod_runs_the_cli_and_more_use_torchrun() -> None:
    one = pytorchjob_manifest(_spec(gpus_per_worker=1))["spec"]["pytorchReplicaSpecs"]["Worker"]
    script = one["template"]["spec"]["containers"][0]["command"][2]
    assert script.splitlines()[1].startswith("python -m microsnoop pretrain --pool /workspace/pool")
    eight = pytorchjob_manifest(_spec())["spec"]["pytorchReplicaSpecs"]["Worker"]
    script = eight["template"]["spec"]["containers"][0]["command"][2]
    assert (
        "torchrun --nnodes=${PET_NNODES} --nproc-per-node=${PET_NPROC_PER_NODE} --node-rank=${PET_NODE_RANK}" in script
    )
    assert "--master-addr=${MASTER_ADDR} --master-port=${MASTER_PORT}" in script
    assert 'if [ "${RANK:-0}" = "0" ]; then python -m services.trainjob upload' in script
    init = eight["template"]["spec"]["initContainers"][0]["command"]
    assert (
        init[:4] == ["python", "-m", "services.trainjob", "fetch"] and "s3://bucket/store/manifests/pool-1.json" in init
    )


def test_job_names_are_stable_and_specs_are_checked() -> None:
    a = job_name("s3://b/m/pool-1.json", {"epochs": 2, "workers": 2})
    assert a == job_name("s3://b/m/pool-1.json", {"workers": 2, "epochs": 2})
    assert a != job_name("s3://b/m/pool-1.json", {"epochs": 3, "workers": 2})
    assert len(a) <= 52
    with pytest.raises(TrainJobError, match="workers must be between"):
        _spec(workers=0)
    with pytest.raises(TrainJobError, match="gpus_per_worker"):
        _spec(gpus_per_worker=-1)
    with pytest.raises(TrainJobError, match="lower-case"):
        _spec(name="Microsnoop_Job")


class FakeCustomObjects:
    """Scripted stand-in for kubernetes.client.CustomObjectsApi (the Kubernetes API is mocked)."""

    def __init__(self, states: list[dict[str, Any]], create_status: int | None = None) -> None:
        self.states, self.create_status = iter(states), create_status
        self.created: list[tuple[Any, ...]] = []

    def create_namespaced_custom_object(self, group: str, version: str, ns: str, plural: str, body: Any) -> Any:
        if self.create_status is not None:
            error = RuntimeError(f"({self.create_status}) from the API server")
            error.status = self.create_status  # type: ignore[attr-defined]
            raise error
        self.created.append((group, version, ns, plural, body))
        return body

    def get_namespaced_custom_object(self, group: str, version: str, ns: str, plural: str, name: str) -> Any:
        return {"metadata": {"name": name}, "status": next(self.states)}


def _cond(kind: str, message: str = "") -> dict[str, Any]:
    return {"type": kind, "status": "True", "message": message}


def test_submit_streams_each_state_change_and_returns_on_success() -> None:
    states: list[dict[str, Any]] = [
        {},
        {"conditions": [_cond("Created")]},
        {"conditions": [_cond("Created"), _cond("Running")], "replicaStatuses": {"Master": {"active": 1}}},
        {"conditions": [_cond("Created"), _cond("Running")], "replicaStatuses": {"Master": {"active": 1}}},
        {"conditions": [_cond("Created"), {"type": "Running", "status": "False"}, _cond("Succeeded", "done")]},
    ]
    api, lines = FakeCustomObjects(states), list[str]()
    manifest = pytorchjob_manifest(_spec())
    job = submit_and_wait(api, manifest, poll_s=1, report=lines.append, sleep=lambda s: None)
    assert api.created[0][:4] == ("kubeflow.org", "v1", "kubeflow-user", "pytorchjobs")
    assert job["status"]["conditions"][-1]["type"] == "Succeeded"
    states_seen = [line.split(": ", 1)[1].split(" ")[0] for line in lines[1:]]
    assert states_seen == ["Pending", "Created", "Running", "Succeeded"]  # the repeated Running is not re-reported


def test_submit_follows_an_existing_job_and_reports_failures() -> None:
    lines: list[str] = []
    api = FakeCustomObjects([{"conditions": [_cond("Failed", "OOMKilled")]}], create_status=409)
    with pytest.raises(TrainJobError, match="failed: OOMKilled; see kubectl logs"):
        submit_and_wait(api, pytorchjob_manifest(_spec()), report=lines.append, sleep=lambda s: None)
    assert "exists already" in lines[0]
    with pytest.raises(TrainJobError, match="install the Kubeflow Training Operator"):
        submit_and_wait(FakeCustomObjects([], create_status=404), pytorchjob_manifest(_spec()), sleep=lambda s: None)
    stuck = FakeCustomObjects([{"conditions": [_cond("Running")]}] * 5)
    with pytest.raises(TrainJobError, match="still Running after 3 s"):
        submit_and_wait(stuck, pytorchjob_manifest(_spec()), poll_s=1, timeout_s=3, sleep=lambda s: None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def operator_env(spec: TrainJobSpec, rank: int, port: int) -> dict[str, str]:
    """What the Training Operator v1.9 sets in the pytorch container of pod ``rank`` (envvar.go, setPodEnv)."""
    nproc = max(1, spec.gpus_per_worker)
    return {
        "PYTHONUNBUFFERED": "1",
        "MASTER_ADDR": "127.0.0.1",  # in a cluster: the Master replica's service, <job>-master-0
        "MASTER_PORT": str(port),
        "WORLD_SIZE": str(spec.workers * nproc),
        "RANK": str(rank),
        "PET_NODE_RANK": str(rank),
        "PET_NPROC_PER_NODE": str(nproc),
        "PET_NNODES": str(spec.workers),
    }


@pytest.fixture
def local_store(tmp_path: Path) -> Iterator[PlatformSettings]:
    yield PlatformSettings().with_data_dir(tmp_path / "platform")


@pytest.mark.slow
def test_the_job_containers_train_with_ddp_under_the_operator_environment(
    demo_pool: Path, tmp_path: Path, local_store: PlatformSettings
) -> None:
    """Two pods' worth of processes, launched exactly as the manifest says, reach one DDP checkpoint."""
    pool_manifest = save_folder("pool-test", demo_pool, {}, local_store)
    extra = ("--depths", "8,16,32", "--input-size", "64", "--batch-size", "2")  # test_distributed's tiny network
    assert all(a in ARGS for a in extra)
    spec = _spec(
        workers=2,
        gpus_per_worker=1,
        epochs=2,
        images_per_epoch=8,
        pool_manifest=pool_manifest,
        out_manifest="trainjob-test",
        workspace=str(tmp_path / "ws"),
        pretrain_args=extra,
    )
    pod = pytorchjob_manifest(spec)["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]
    base = {k: v for k, v in os.environ.items() if not k.startswith(("MICROSNOOP_", "WORLD_SIZE", "RANK", "LOCAL_"))}
    base.update(
        MICROSNOOP_DATA_DIR=str(local_store.data_dir),
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{base.get('PATH', '')}",
        PYTHONPATH=str(REPO),
    )
    base.update({e["name"]: e["value"] for e in pod["containers"][0]["env"]})
    base["OMP_NUM_THREADS"] = "1"
    init = subprocess.run(pod["initContainers"][0]["command"], env=base, cwd=REPO, capture_output=True, text=True)
    assert init.returncode == 0, init.stderr[-2000:]
    port = _free_port()
    procs = [
        subprocess.Popen(
            pod["containers"][0]["command"],
            env={**base, **operator_env(spec, rank, port)},
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in range(2)
    ]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=600)
        results.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
    assert results[1].returncode == 0, results[1].stderr[-3000:]
    _check(Path(spec.workspace) / "run", results[0])
    restored = tmp_path / "restored"
    assert restore_folder(spec.out_manifest, restored, local_store) is not None
    assert sorted(p.name for p in restored.iterdir()) == ["encoder.pt", "metrics.jsonl"]
