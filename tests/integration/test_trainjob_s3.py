"""The pretrain step's Training Operator path against a real S3 server (SeaweedFS ``weed mini``).

No Kubernetes API server can run here: a stand-in for ``CustomObjectsApi`` records the PyTorchJob and,
when asked for its status, does what the job's rank 0 would do at its end (store ``encoder.pt`` and
``metrics.jsonl`` under the job's manifest with ``python -m services.trainjob upload``) and reports
``Succeeded``. Everything else is real: the pool upload, the manifest names, the download the job's
init container runs, and the restore into the step's model artifact.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from services.settings import PlatformSettings
from services.trainjob import TrainJobError, pretrain_on_operator
from tests.integration._s3 import S3Server

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def _env(settings: PlatformSettings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MICROSNOOP_")}
    env.update(
        MICROSNOOP_DATA_DIR=str(settings.data_dir),
        MICROSNOOP_STORAGE_URI=settings.storage_uri,
        MICROSNOOP_S3_ENDPOINT=settings.s3_endpoint,
        MICROSNOOP_S3_ACCESS_KEY=settings.s3_access_key,
        MICROSNOOP_S3_SECRET_KEY=settings.s3_secret_key,
        PYTHONPATH=str(REPO),
    )
    return env


class FinishingJobApi:
    """Records the PyTorchJob; on the first status read, plays rank 0's upload and reports success."""

    def __init__(self, settings: PlatformSettings, run: Path) -> None:
        self.settings, self.run, self.created = settings, run, []

    def create_namespaced_custom_object(self, group: str, version: str, ns: str, plural: str, body: Any) -> Any:
        self.created.append(body)
        return body

    def get_namespaced_custom_object(self, group: str, version: str, ns: str, plural: str, name: str) -> Any:
        script = self.created[0]["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]
        upload = script["command"][2].splitlines()[-1].split("then ", 1)[1].removesuffix("; fi").split()
        upload[upload.index("--run") + 1] = str(self.run)  # the pod's /workspace/run, here a local folder
        proc = subprocess.run(
            [sys.executable, *upload[1:]], env=_env(self.settings), cwd=REPO, capture_output=True, text=True
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        return {"status": {"conditions": [{"type": "Succeeded", "status": "True", "message": "done"}]}}


def test_the_step_uploads_the_pool_submits_and_restores_the_checkpoint(
    demo_pool: Path, tmp_path: Path, s3_server: S3Server
) -> None:
    settings = PlatformSettings(
        data_dir=tmp_path / "platform",
        storage_uri=f"s3://microsnoop-trainjob/{tmp_path.name}",
        s3_endpoint=s3_server.endpoint,
        s3_access_key=s3_server.access_key,
        s3_secret_key=s3_server.secret_key,
        steps_secret_name="microsnoop-steps",
    )
    run = tmp_path / "job-run"
    run.mkdir()
    (run / "encoder.pt").write_bytes(b"weights of rank 0")
    (run / "metrics.jsonl").write_text('{"epoch": 0}\n')
    (run / "last.pt").write_bytes(b"optimizer state stays in the pod")
    api = FinishingJobApi(settings, run)
    out = tmp_path / "model"
    result = pretrain_on_operator(
        str(demo_pool),
        str(out),
        workers=2,
        gpus_per_worker=4,
        epochs=3,
        images_per_epoch=64,
        settings=settings,
        api=api,
        namespace="team-a",
        poll_s=0,
    )
    assert result["checkpoint_name"] == "encoder.pt" and result["params"]["workers"] == 2
    assert (out / "encoder.pt").read_bytes() == b"weights of rank 0" and not (out / "last.pt").exists()
    job = api.created[0]
    assert job["metadata"]["namespace"] == "team-a" and job["metadata"]["name"] == result["job"]
    assert job["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"] == 1
    fetch = job["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]["initContainers"][0]["command"]
    manifest = fetch[fetch.index("--manifest") + 1]
    assert manifest.startswith(f"s3://microsnoop-trainjob/{tmp_path.name}/manifests/pool-")
    # What the init container runs in each pod: the pool arrives whole.
    pod_pool = tmp_path / "pod-pool"
    proc = subprocess.run(
        [sys.executable, "-m", "services.trainjob", "fetch", "--manifest", manifest, "--dest", str(pod_pool)],
        env=_env(settings),
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    local = sorted(str(p.relative_to(demo_pool)) for p in demo_pool.rglob("*") if p.is_file())
    assert sorted(str(p.relative_to(pod_pool)) for p in pod_pool.rglob("*") if p.is_file()) == local


def test_the_operator_path_refuses_a_store_the_pods_cannot_reach(demo_pool: Path, tmp_path: Path) -> None:
    settings = PlatformSettings().with_data_dir(tmp_path)
    with pytest.raises(TrainJobError, match="MICROSNOOP_STORAGE_URI.*s3://.*workers=0"):
        pretrain_on_operator(
            str(demo_pool), str(tmp_path / "m"), workers=2, gpus_per_worker=1, epochs=1, images_per_epoch=8,
            settings=settings, api=object(), namespace="x",
        )  # fmt: skip
