"""MLflow tracking helpers shared by the registry and benchmark logging; each call builds its own client."""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException

from microsnoop import __version__
from services.settings import PlatformSettings

_PARAM_MAX = 6000
_BATCH = 100


# -- clients and experiments --------------------------------------------------------------------------
def tracking_client(settings: PlatformSettings) -> MlflowClient:
    """A client on the settings' tracking and registry URI (telemetry off; the SQLite folder created).

    On SQLite the tables are created or migrated under an exclusive file lock: two pipeline steps opening a
    fresh database at once would otherwise race in MLflow's migrations ('table _alembic_tmp_... exists').
    """
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    uri = settings.tracking_uri
    if not uri.startswith("sqlite:///"):
        return MlflowClient(tracking_uri=uri, registry_uri=uri)
    db = Path(uri.removeprefix("sqlite:///"))
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(db.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        client.search_experiments(max_results=1)  # tracking tables created / migrated here
        client.search_registered_models(max_results=1)  # registry tables
    return client


@contextlib.contextmanager
def artifact_env(settings: PlatformSettings) -> Iterator[None]:
    """Point MLflow's S3 artifact client at the configured endpoint and keys for the call, then restore."""
    wanted: dict[str, str] = {}
    if settings.artifact_root.startswith("s3://"):
        scheme = "https" if settings.s3_secure else "http"
        wanted["MLFLOW_S3_ENDPOINT_URL"] = f"{scheme}://{settings.s3_endpoint}"
        if settings.s3_access_key:
            wanted["AWS_ACCESS_KEY_ID"] = settings.s3_access_key
        if settings.s3_secret_key:
            wanted["AWS_SECRET_ACCESS_KEY"] = settings.s3_secret_key
        if settings.s3_region:
            wanted["AWS_DEFAULT_REGION"] = settings.s3_region
    saved = {k: os.environ.get(k) for k in wanted}
    os.environ.update(wanted)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def experiment_id(client: MlflowClient, settings: PlatformSettings, name: str) -> str:
    """The id of experiment ``name``, created with the configured artifact root when missing."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    remote = settings.tracking_uri.startswith(("http://", "https://"))
    location = None if remote and not settings.mlflow_artifacts else f"{settings.artifact_root.rstrip('/')}/{name}"
    try:
        return str(client.create_experiment(name, artifact_location=location))
    except MlflowException:  # created meanwhile by another process
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return str(found.experiment_id)


# -- lineage ---------------------------------------------------------------------------------------------
def code_revision() -> str:
    """The git commit of this checkout (``+dirty`` with local changes), else the package version."""
    here = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
        if rev.returncode != 0:
            return __version__
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=10,
        )
        return rev.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return __version__


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts to ``{"a.b.c": leaf}``; lists and tuples stay leaves."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, path + "."))
        else:
            out[path] = value
    return out


def clean_key(key: str) -> str:
    return "".join(c if c.isalnum() or c in "_-. /" else "_" for c in key)[:250]


def param_text(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= _PARAM_MAX else text[: _PARAM_MAX - 3] + "..."


def is_number(value: Any) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)


def log_batches(
    client: MlflowClient,
    run_id: str,
    *,
    metrics: Sequence[Metric] = (),
    params: Sequence[Param] = (),
    tags: Sequence[RunTag] = (),
) -> None:
    for start in range(0, max(len(metrics), len(params), len(tags)), _BATCH):
        client.log_batch(
            run_id,
            metrics=list(metrics[start : start + _BATCH]),
            params=list(params[start : start + _BATCH]),
            tags=list(tags[start : start + _BATCH]),
        )


# -- benchmarks and listing ------------------------------------------------------------------------------
_TAG_HINTS = ("sha256", "hash", "model", "version", "checkpoint", "manifest", "suite")


def log_benchmark(
    settings: PlatformSettings,
    report: dict[str, Any],
    *,
    experiment: str = "microsnoop-benchmarks",
    run_name: str | None = None,
    artifacts: Sequence[Path] = (),
) -> str:
    """Log a benchmark report as one run: numeric leaves as metrics, the rest as params; returns the run id.

    Leaves whose key names a model version or a hash (``sha256``, ``manifest``, ``model_version`` ...) are
    also set as tags so runs can be searched by them; the whole report is kept as ``report.json``.
    """
    client = tracking_client(settings)
    with artifact_env(settings):
        run = client.create_run(experiment_id(client, settings, experiment), run_name=run_name)
        run_id = run.info.run_id
        try:
            flat = flatten(report)
            stamp = run.info.start_time or 0
            metrics = [
                Metric(clean_key(k), float(v), stamp, 0)
                for k, v in flat.items()
                if is_number(v) and math.isfinite(float(v))
            ]
            others = {clean_key(k): v for k, v in flat.items() if not is_number(v) and v is not None}
            params = [Param(k, param_text(v)) for k, v in others.items() if not isinstance(v, list | tuple)]
            tags = [
                RunTag(k, param_text(v))
                for k, v in others.items()
                if isinstance(v, str) and any(h in k.rsplit(".", 1)[-1].lower() for h in _TAG_HINTS)
            ]
            log_batches(client, run_id, metrics=metrics, params=params, tags=tags)
            client.log_dict(run_id, report, "report.json")
            for path in artifacts:
                client.log_artifact(run_id, str(path))
        except BaseException:
            client.set_terminated(run_id, "FAILED")
            raise
        client.set_terminated(run_id)
    return run_id
