"""Multi-node pretraining through the Kubeflow Training Operator: build a PyTorchJob, submit it, follow it.

Why ``PyTorchJob`` (``kubeflow.org/v1``, Training Operator 1.9) rather than the newer Trainer ``TrainJob``
(``trainer.kubeflow.org/v1alpha1``): it is a stable v1 API shipped with every Kubeflow platform release
this chart targets, it needs no cluster-wide training runtime installed beside it, and its environment
contract is plain PyTorch's. The manifest is validated in tests against the operator's published CRD
schema (``infra/crds/kubeflow.org_pytorchjobs.yaml``).

The job (N pods, G GPUs each; pod 0 is the ``Master`` replica, the others ``Worker``):

* an init container fetches the pool from the object store (the pipeline step uploaded it there under a
  manifest named by the pool's content), so pods need no shared filesystem;
* the ``pytorch`` container runs ``microsnoop pretrain`` on it. With G = 1 it runs the CLI directly:
  the operator's ``MASTER_ADDR``, ``MASTER_PORT``, ``WORLD_SIZE`` (= N) and ``RANK`` (= pod index) are
  what the DDP code path already reads. With G > 1 ``torchrun`` starts G processes per pod from
  ``PET_NNODES``, ``PET_NPROC_PER_NODE`` and ``PET_NODE_RANK``, which the operator sets too;
* rank 0 then stores the run folder (``encoder.pt``, ``metrics.jsonl``) under a manifest named by the
  job, which the pipeline step restores into its model artifact.

Submitting is idempotent: the job name is a digest of the pool and the parameters, so a retried step
follows the job it started instead of starting a second one.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.settings import PlatformSettings, settings_or_env

log = logging.getLogger(__name__)

GROUP, VERSION, PLURAL, KIND = "kubeflow.org", "v1", "pytorchjobs", "PyTorchJob"
CONTAINER = "pytorch"  # the container name the operator injects its environment into
PORT = 23456
WORKSPACE = "/workspace"
NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
KEEP = ("encoder.pt", "metrics.jsonl")  # what rank 0 uploads; last.pt (optimizer state) stays behind


class TrainJobError(RuntimeError):
    """A training job that could not be submitted, failed, or ran past its deadline; the message says why."""


@dataclass(frozen=True)
class TrainJobSpec:
    """One multi-node pretraining run: N workers x G GPUs on a pool stored in the object store."""

    name: str
    namespace: str
    image: str
    pool_manifest: str
    out_manifest: str
    workers: int
    gpus_per_worker: int
    epochs: int
    images_per_epoch: int
    warmup_epochs: int = 0
    secret_name: str = ""
    node_selector: str = ""
    toleration: str = ""
    deadline_s: int = 7 * 24 * 3600
    pretrain_args: tuple[str, ...] = ()  # more `microsnoop pretrain` flags (e.g. --batch-size 32)
    workspace: str = WORKSPACE  # the pod-local folder holding the pool and the run (an emptyDir)

    def __post_init__(self) -> None:
        if not 1 <= self.workers <= 1024:
            raise TrainJobError(f"workers must be between 1 and 1024, got {self.workers}")
        if not 0 <= self.gpus_per_worker <= 16:
            raise TrainJobError(f"gpus_per_worker must be between 0 and 16, got {self.gpus_per_worker}")
        if self.epochs < 1 or self.images_per_epoch < 1:
            raise TrainJobError("epochs and images_per_epoch must be >= 1")
        if len(self.name) > 52 or not self.name.replace("-", "").isalnum() or self.name != self.name.lower():
            raise TrainJobError(f"job name {self.name!r} must be lower-case letters, digits and '-', at most 52 long")


def job_name(pool_manifest: str, params: dict[str, Any]) -> str:
    """A stable job name: the same pool and parameters give the same name (a retried step finds its job)."""
    digest = hashlib.sha256(json.dumps([pool_manifest, params], sort_keys=True).encode()).hexdigest()[:12]
    return f"microsnoop-pretrain-{digest}"


def _launcher(spec: TrainJobSpec) -> list[str]:
    pretrain = [
        "-m",
        "microsnoop",
        "pretrain",
        "--pool",
        f"{spec.workspace}/pool",
        "--out",
        f"{spec.workspace}/run",
        "--nepoch",
        str(spec.epochs),
        "--warmup-epochs",
        str(spec.warmup_epochs),
        "--images-per-epoch",
        str(spec.images_per_epoch),
        "--no-progress",
        *spec.pretrain_args,
    ]
    if spec.gpus_per_worker <= 1:
        return ["python", *pretrain]  # the operator's MASTER_ADDR / WORLD_SIZE / RANK drive DDP directly
    return [
        "torchrun",
        "--nnodes=${PET_NNODES}",
        "--nproc-per-node=${PET_NPROC_PER_NODE}",
        "--node-rank=${PET_NODE_RANK}",
        "--master-addr=${MASTER_ADDR}",
        "--master-port=${MASTER_PORT}",
        *pretrain,
    ]


def _script(spec: TrainJobSpec) -> str:
    """The container's shell script: train, then rank 0 stores the run folder."""
    train = " ".join(a if "${" in a else shlex.quote(a) for a in _launcher(spec))  # ${...}: the shell expands
    upload = shlex.join(
        [
            "python",
            "-m",
            "services.trainjob",
            "upload",
            "--run",
            f"{spec.workspace}/run",
            "--manifest",
            spec.out_manifest,
        ]
    )
    return f'set -e\n{train}\nif [ "${{RANK:-0}}" = "0" ]; then {upload}; fi\n'


def _pod_template(spec: TrainJobSpec) -> dict[str, Any]:
    env_from = [{"secretRef": {"name": spec.secret_name, "optional": True}}] if spec.secret_name else []
    resources: dict[str, Any] = {}
    if spec.gpus_per_worker:
        resources = {"limits": {"nvidia.com/gpu": spec.gpus_per_worker}}
    mounts = [{"name": "workspace", "mountPath": spec.workspace}, {"name": "dshm", "mountPath": "/dev/shm"}]
    fetch = [
        "python",
        "-m",
        "services.trainjob",
        "fetch",
        "--manifest",
        spec.pool_manifest,
        "--dest",
        f"{spec.workspace}/pool",
    ]
    pod: dict[str, Any] = {
        "initContainers": [
            {"name": "fetch-pool", "image": spec.image, "command": fetch, "envFrom": env_from, "volumeMounts": mounts}
        ],
        "containers": [
            {
                "name": CONTAINER,
                "image": spec.image,
                "command": ["sh", "-c", _script(spec)],
                "envFrom": env_from,
                "env": [{"name": "OMP_NUM_THREADS", "value": "4"}],
                "ports": [{"name": "pytorchjob-port", "containerPort": PORT}],
                "resources": resources,
                "volumeMounts": mounts,
            }
        ],
        "volumes": [
            {"name": "workspace", "emptyDir": {}},
            {"name": "dshm", "emptyDir": {"medium": "Memory"}},  # NCCL needs more than the default 64 MB /dev/shm
        ],
    }
    if spec.node_selector:
        key, _, value = spec.node_selector.partition("=")
        pod["nodeSelector"] = {key: value}
    if spec.toleration:
        pair, _, effect = spec.toleration.partition(":")
        key, _, value = pair.partition("=")
        pod["tolerations"] = [{"key": key, "operator": "Equal", "value": value, "effect": effect or "NoSchedule"}]
    return {"metadata": {"labels": {"app.kubernetes.io/name": "microsnoop-pretrain"}}, "spec": pod}


def pytorchjob_manifest(spec: TrainJobSpec) -> dict[str, Any]:
    """The PyTorchJob for spec: a Master replica plus workers - 1 Worker replicas, G processes per pod."""
    replicas: dict[str, Any] = {
        "Master": {"replicas": 1, "restartPolicy": "OnFailure", "template": _pod_template(spec)},
    }
    if spec.workers > 1:
        replicas["Worker"] = {
            "replicas": spec.workers - 1,
            "restartPolicy": "OnFailure",
            "template": _pod_template(spec),
        }
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {
            "name": spec.name,
            "namespace": spec.namespace,
            "labels": {"app.kubernetes.io/part-of": "microsnoop"},
        },
        "spec": {
            "nprocPerNode": str(max(1, spec.gpus_per_worker)),
            "runPolicy": {
                "cleanPodPolicy": "None",
                "backoffLimit": 3,
                "activeDeadlineSeconds": spec.deadline_s,
                "ttlSecondsAfterFinished": 86400,
            },
            "pytorchReplicaSpecs": replicas,
        },
    }


def job_state(job: dict[str, Any]) -> tuple[str, str]:
    """(state, message) of a PyTorchJob from its last true condition (Created, Running, Succeeded, Failed...)."""
    conditions = [c for c in (job.get("status") or {}).get("conditions") or [] if str(c.get("status")) == "True"]
    if not conditions:
        return "Pending", "no condition yet"
    last = conditions[-1]
    return str(last.get("type", "Unknown")), str(last.get("message") or last.get("reason") or "")


def submit_and_wait(
    api: Any,
    manifest: dict[str, Any],
    *,
    poll_s: float = 15.0,
    timeout_s: float | None = None,
    report: Callable[[str], None] = log.info,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Create the job (or follow the one of that name), report each state change, and return it once succeeded."""
    meta = manifest["metadata"]
    try:
        api.create_namespaced_custom_object(GROUP, VERSION, meta["namespace"], PLURAL, manifest)
        report(f"submitted {KIND} {meta['namespace']}/{meta['name']}")
    except Exception as exc:  # the client raises ApiException; only a 409 (exists) is expected
        if getattr(exc, "status", None) != 409:
            raise TrainJobError(
                f"cannot create {KIND} {meta['name']} ({exc}); install the Kubeflow Training Operator and let the "
                "step's service account create pytorchjobs.kubeflow.org (docs/deploy.md)"
            ) from exc
        report(f"{KIND} {meta['name']} exists already: following it")
    timeout = timeout_s if timeout_s is not None else float(manifest["spec"]["runPolicy"]["activeDeadlineSeconds"])
    waited, last = 0.0, ("", "")
    while True:
        job = api.get_namespaced_custom_object(GROUP, VERSION, meta["namespace"], PLURAL, meta["name"])
        state = job_state(job)
        replicas = (job.get("status") or {}).get("replicaStatuses") or {}
        if state != last:
            report(f"{meta['name']}: {state[0]} {state[1]} replicas={json.dumps(replicas, sort_keys=True)}")
            last = state
        if state[0] == "Succeeded":
            return job  # type: ignore[no-any-return]
        if state[0] == "Failed":
            raise TrainJobError(
                f"{KIND} {meta['name']} failed: {state[1]}; see kubectl logs -n {meta['namespace']} "
                f"-l training.kubeflow.org/job-name={meta['name']}"
            )
        if waited >= timeout:
            raise TrainJobError(f"{KIND} {meta['name']} still {state[0]} after {waited:.0f} s; raise the deadline")
        sleep(poll_s)
        waited += poll_s


def current_namespace() -> str:
    """The namespace this pod runs in (its service account's), for jobs started from a pipeline step."""
    if NAMESPACE_FILE.is_file():
        return NAMESPACE_FILE.read_text().strip()
    raise TrainJobError(f"{NAMESPACE_FILE} not found: the Training Operator path runs inside a cluster pod")


def custom_objects_api() -> Any:
    """A CustomObjectsApi from the in-cluster service account (else the local kubeconfig)."""
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client.CustomObjectsApi()


def pretrain_on_operator(
    pool_dir: str,
    out_dir: str,
    *,
    workers: int,
    gpus_per_worker: int,
    epochs: int,
    images_per_epoch: int,
    warmup_epochs: int = 0,
    settings: PlatformSettings | None = None,
    api: Any = None,
    namespace: str | None = None,
    poll_s: float = 15.0,
) -> dict[str, Any]:
    """Upload the pool, run a PyTorchJob of workers x gpus_per_worker, restore its checkpoint into out_dir."""
    from services.sharding import restore_folder, save_folder
    from services.staging import manifest_name

    settings = settings_or_env(settings)
    if settings.store_uri.startswith("file://"):
        raise TrainJobError(
            "the Training Operator path needs an object store the job's pods can reach: set MICROSNOOP_STORAGE_URI "
            "to an s3:// URI (or run with workers=0 to train inside the step)"
        )
    params = {"epochs": epochs, "images_per_epoch": images_per_epoch, "warmup_epochs": warmup_epochs}
    pool_sha = hashlib.sha256((Path(pool_dir) / "manifest.parquet").read_bytes()).hexdigest()[:16]
    pool_manifest = save_folder(manifest_name(f"pool-{pool_sha}"), Path(pool_dir), {"pool": pool_sha}, settings)
    name = job_name(pool_manifest, {**params, "workers": workers, "gpus_per_worker": gpus_per_worker})
    spec = TrainJobSpec(
        name=name,
        namespace=namespace or current_namespace(),
        image=settings.image,
        pool_manifest=pool_manifest,
        out_manifest=manifest_name(f"trainjob-{name}"),
        workers=workers,
        gpus_per_worker=gpus_per_worker,
        epochs=epochs,
        images_per_epoch=images_per_epoch,
        warmup_epochs=warmup_epochs,
        secret_name=settings.steps_secret_name,
        node_selector=settings.gpu_node_selector if gpus_per_worker else "",
        toleration=settings.gpu_toleration if gpus_per_worker else "",
    )
    submit_and_wait(api or custom_objects_api(), pytorchjob_manifest(spec), poll_s=poll_s)
    if restore_folder(spec.out_manifest, Path(out_dir), settings) is None:
        raise TrainJobError(f"{name} succeeded but stored no run folder under {spec.out_manifest}; see its rank-0 log")
    return {
        "checkpoint_name": "encoder.pt",
        "job": name,
        "params": {**params, "workers": workers, "gpus_per_worker": gpus_per_worker},
    }


def main(argv: list[str] | None = None) -> None:
    """Entry point of the job's containers: ``fetch`` the pool, ``upload`` the run folder (rank 0)."""
    from services.sharding import restore_folder, save_folder

    parser = argparse.ArgumentParser(prog="python -m services.trainjob", description=main.__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    fetch = sub.add_parser("fetch", help="download a stored folder (by manifest) into --dest")
    fetch.add_argument("--manifest", required=True)
    fetch.add_argument("--dest", type=Path, required=True)
    upload = sub.add_parser("upload", help="store a finished run folder under --manifest")
    upload.add_argument("--run", type=Path, required=True)
    upload.add_argument("--manifest", required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    settings = settings_or_env(None)
    if args.command == "fetch":
        if restore_folder(args.manifest, args.dest, settings) is None:
            raise SystemExit(f"no stored folder {args.manifest}; the pipeline step uploads the pool before the job")
        return
    kept = [args.run / name for name in KEEP if (args.run / name).is_file()]
    if not kept:
        raise SystemExit(f"{args.run} holds no encoder.pt: training did not finish")
    save_folder(args.manifest, args.run, {"rank": os.environ.get("RANK", "0")}, settings, only=KEEP)


if __name__ == "__main__":
    main()
