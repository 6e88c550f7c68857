"""Compile pipelines to versioned IR YAML, run them locally with kfp.local, or submit them to a KFP server."""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import logging
import os
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from microsnoop import __version__
from pipelines.definitions import PIPELINE_VERSION, PIPELINES
from services.settings import PREFIX, PlatformSettings

log = logging.getLogger(__name__)
COMPILED_DIR = Path(__file__).resolve().parent / "compiled"


def pipeline_version() -> str:
    """Version of the compiled pipelines: the package version plus the wiring version."""
    return f"{__version__}-p{PIPELINE_VERSION}"


def compiled_path(name: str, out_dir: Path = COMPILED_DIR) -> Path:
    """Where ``name`` is compiled: ``<out_dir>/<name>-<version>.yaml``."""
    return out_dir / f"{name}-{pipeline_version()}.yaml"


def _check_name(name: str) -> None:
    if name not in PIPELINES:
        raise KeyError(f"unknown pipeline {name!r}; choose one of {sorted(PIPELINES)}")


def compile_pipelines(
    settings: PlatformSettings, out_dir: Path = COMPILED_DIR, names: list[str] | None = None
) -> list[Path]:
    """Compile the pipelines for ``settings`` (image, GPU policy) into versioned YAML files."""
    from kfp import compiler

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name in names or sorted(PIPELINES):
        _check_name(name)
        path = compiled_path(name, out_dir)
        compiler.Compiler().compile(PIPELINES[name](settings), str(path))
        written.append(path)
    return written


@contextlib.contextmanager
def settings_environment(settings: PlatformSettings) -> Iterator[None]:
    """Export ``settings`` as MICROSNOOP_* variables for child processes (restored afterwards)."""
    saved = dict(os.environ)
    for f in fields(settings):
        value = getattr(settings, f.name)
        os.environ[PREFIX + f.name.upper()] = str(value.resolve()) if isinstance(value, Path) else str(value)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@dataclass(frozen=True)
class LocalRun:
    """Where a local run left its artifacts, and each task's returned summary."""

    pipeline_root: Path
    outputs: dict[str, Any]


def run_local(name: str, arguments: Mapping[str, Any], settings: PlatformSettings, *, pipeline_root: Path) -> LocalRun:
    """Run a pipeline for real with ``kfp.local.SubprocessRunner`` in this environment (no containers)."""
    from kfp import local

    _check_name(name)
    pipeline_root.mkdir(parents=True, exist_ok=True)
    # kfp.local indents task logs by swapping builtins.print; ParallelFor tasks run in threads whose swaps
    # interleave, which can leave print replaced after the run (numba then fails to import): restore it.
    original_print = builtins.print
    try:
        with settings_environment(settings), warnings.catch_warnings():
            # Expected here: the local runner uses this environment instead of the image, and ignores GPU requests.
            warnings.filterwarnings("ignore", message=".*custom or non-Python base image.*")
            warnings.filterwarnings("ignore", message=".*have no effect in the current local runner.*")
            local.init(
                runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(pipeline_root), raise_on_error=True
            )
            task = PIPELINES[name](settings)(**arguments)
    finally:
        builtins.print = original_print
    return LocalRun(pipeline_root, dict(getattr(task, "outputs", {}) or {}))


def submit(
    name: str,
    *,
    host: str,
    settings: PlatformSettings,
    arguments: Mapping[str, Any] | None = None,
    schedule: str = "",
    experiment: str = "microsnoop",
    package: Path | None = None,
    client_factory: Callable[..., Any] | None = None,
) -> dict[str, str]:
    """Upload a pipeline version to KFP and start a run, or a recurring run when ``schedule`` (cron) is given."""
    _check_name(name)
    package = package or compiled_path(name)
    if not package.is_file():
        raise FileNotFoundError(f"{package}: no compiled pipeline; run 'microsnoop pipeline compile' first")
    if client_factory is None:
        import kfp

        client_factory = kfp.Client
    client = client_factory(host=host)
    pipeline_name = f"microsnoop-{name.replace('_', '-')}"
    # The content hash makes a recompiled package (another image or GPU policy) a new version.
    version_name = f"{pipeline_name}-{pipeline_version()}-{hashlib.sha256(package.read_bytes()).hexdigest()[:10]}"
    pipeline_id = client.get_pipeline_id(pipeline_name)
    if pipeline_id is None:
        pipeline_id = client.upload_pipeline(str(package), pipeline_name=pipeline_name).pipeline_id
    version_id = _existing_version(client, pipeline_id, version_name)
    if version_id is None:
        version = client.upload_pipeline_version(str(package), version_name, pipeline_id=pipeline_id)
        version_id = version.pipeline_version_id
    experiment_id = client.create_experiment(name=experiment).experiment_id
    params = dict(arguments or {})
    if schedule:
        job_name = f"{pipeline_name}-scheduled"
        for old in _recurring_runs(client, experiment_id, job_name):
            client.disable_recurring_run(old)  # one schedule per pipeline: the new version replaces the old
        job = client.create_recurring_run(
            experiment_id=experiment_id,
            job_name=job_name,
            cron_expression=schedule,
            params=params,
            pipeline_id=pipeline_id,
            version_id=version_id,
            no_catchup=True,
        )
        return {"pipeline_id": pipeline_id, "version_id": version_id, "recurring_run_id": job.recurring_run_id}
    run = client.run_pipeline(
        experiment_id=experiment_id,
        job_name=f"{version_name}-run",
        params=params,
        pipeline_id=pipeline_id,
        version_id=version_id,
    )
    return {"pipeline_id": pipeline_id, "version_id": version_id, "run_id": run.run_id}


def _recurring_runs(client: Any, experiment_id: str, job_name: str) -> list[str]:
    page = client.list_recurring_runs(experiment_id=experiment_id, page_size=100)
    runs = getattr(page, "recurring_runs", None) or []
    return [str(r.recurring_run_id) for r in runs if r.display_name == job_name and str(r.status).upper() != "DISABLED"]


def _existing_version(client: Any, pipeline_id: str, version_name: str) -> str | None:
    page = client.list_pipeline_versions(pipeline_id=pipeline_id, page_size=100)
    for version in getattr(page, "pipeline_versions", None) or []:
        if version.display_name == version_name:
            return str(version.pipeline_version_id)
    return None
