"""Platform commands added to the ``microsnoop`` CLI through the ``microsnoop.cli`` entry point.

``microsnoop pipeline compile|run|submit``, ``microsnoop platform up|down|demo``, ``microsnoop search``,
``microsnoop serve-search`` and ``microsnoop dashboard``. Settings come from MICROSNOOP_* variables
(see ``services/settings.py``); options given here override them.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated, Any

import typer

from services.settings import PlatformSettings, load_settings

pipeline_app = typer.Typer(
    help="Compile, run locally (kfp.local) or submit the Kubeflow pipelines.", no_args_is_help=True
)
platform_app = typer.Typer(
    help="The embedded services (PostgreSQL + pgvector, MLflow on SQLite) and the demo.", no_args_is_help=True
)

DataDir = Annotated[
    Path | None,
    typer.Option(help="State folder of the embedded services (default MICROSNOOP_DATA_DIR or runs/platform)."),
]
Params = Annotated[
    list[str] | None, typer.Option("--param", help="Pipeline argument key=value (JSON values allowed); repeat.")
]


def _settings(data_dir: Path | None) -> PlatformSettings:
    settings = load_settings()
    return settings.with_data_dir(data_dir) if data_dir is not None else settings


def parse_params(items: list[str] | None) -> dict[str, Any]:
    """``key=value`` pairs; values parsed as JSON when they are JSON (numbers, booleans), else strings."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"--param {item!r}: use key=value")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


@pipeline_app.command("compile")
def pipeline_compile(
    out: Annotated[
        Path | None, typer.Option(help="Folder for <name>-<version>.yaml (default pipelines/compiled).")
    ] = None,
    name: Annotated[list[str] | None, typer.Option(help="Only these pipelines (repeat).")] = None,
    image: Annotated[str | None, typer.Option(help="Container image of every step (default MICROSNOOP_IMAGE).")] = None,
) -> None:
    """Compile the pipelines to versioned KFP IR YAML (GPU policy from MICROSNOOP_GPU_*)."""
    from dataclasses import replace

    from pipelines.runner import COMPILED_DIR, compile_pipelines

    settings = load_settings()
    if image:
        settings = replace(settings, image=image)
    for path in compile_pipelines(settings, out or COMPILED_DIR, list(name) if name else None):
        typer.echo(f"wrote {path}")


@pipeline_app.command("run")
def pipeline_run(
    name: Annotated[str, typer.Argument(help="pretraining, profiling or end_to_end.")],
    local: Annotated[
        bool, typer.Option("--local", help="Run here with kfp.local (the only mode without a server).")
    ] = False,
    param: Params = None,
    data_dir: DataDir = None,
    pipeline_root: Annotated[
        Path | None, typer.Option(help="Artifacts of the local run (default DATA_DIR/kfp).")
    ] = None,
) -> None:
    """Run a pipeline locally, step by step in subprocesses, against the embedded or configured services."""
    from pipelines.runner import run_local

    if not local:
        raise typer.BadParameter("only --local runs here; use 'microsnoop pipeline submit' for a KFP server")
    settings = _settings(data_dir)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    result = run_local(name, parse_params(param), settings, pipeline_root=pipeline_root or settings.data_dir / "kfp")
    typer.echo(f"pipeline {name} finished; artifacts under {result.pipeline_root}")


@pipeline_app.command("submit")
def pipeline_submit(
    name: Annotated[str, typer.Argument(help="pretraining, profiling or end_to_end.")],
    host: Annotated[str | None, typer.Option(help="KFP API URL (default MICROSNOOP_KFP_HOST).")] = None,
    schedule: Annotated[str, typer.Option(help="Cron expression: create a recurring run instead of one run.")] = "",
    param: Params = None,
    experiment: Annotated[str, typer.Option(help="KFP experiment name.")] = "microsnoop",
    package: Annotated[
        Path | None, typer.Option(help="Compiled YAML (default pipelines/compiled/<name>-<version>.yaml).")
    ] = None,
) -> None:
    """Upload the pipeline version to Kubeflow Pipelines and create a run or a recurring run."""
    from pipelines.runner import submit

    settings = load_settings()
    host = host or settings.kfp_host
    if not host:
        raise typer.BadParameter("give --host URL or set MICROSNOOP_KFP_HOST")
    ids = submit(
        name,
        host=host,
        settings=settings,
        arguments=parse_params(param),
        schedule=schedule,
        experiment=experiment,
        package=package,
    )
    typer.echo(json.dumps(ids))


@platform_app.command("up")
def platform_up(data_dir: DataDir = None) -> None:
    """Start the embedded PostgreSQL (pgvector) if no DSN is configured, and print where everything lives."""
    from services.featurestore import ensure_postgres
    from services.featurestore.server import redact_dsn

    settings = _settings(data_dir)
    dsn = redact_dsn(ensure_postgres(settings))  # the password stays in DATA_DIR/postgres.password
    typer.echo(f"postgres: {dsn}\nmlflow:   {settings.tracking_uri}\nstore:    {settings.store_uri}")
    typer.echo(f"MLflow UI: mlflow ui --backend-store-uri {settings.tracking_uri} --host 127.0.0.1 --port 5000")


@platform_app.command("down")
def platform_down(data_dir: DataDir = None) -> None:
    """Stop the embedded PostgreSQL server (data stays on disk)."""
    from services.featurestore import stop_postgres

    stop_postgres(_settings(data_dir))
    typer.echo("embedded postgres stopped")


@platform_app.command("demo")
def platform_demo(
    data_dir: Annotated[Path, typer.Option(help="State folder for the demo's services.")] = Path("runs/platform"),
    data: Annotated[Path, typer.Option(help="Demo data folder.")] = Path("demo_data"),
    baseline: Annotated[Path, typer.Option(help="Shipped checkpoint registered as the baseline.")] = Path(
        "models/microsnoop-cpu-v1.pt"
    ),
    epochs: Annotated[int, typer.Option(help="Demo pretraining epochs.")] = 2,
    images_per_epoch: Annotated[int, typer.Option(help="Images per demo epoch.")] = 32,
) -> None:
    """Start the services, run end_to_end locally on the demo data, publish, print scores and a similarity query."""
    from microsnoop_platform.demo import run_platform_demo

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    settings = load_settings().with_data_dir(data_dir)
    run_platform_demo(
        settings, data=data, baseline=baseline, epochs=epochs, images_per_epoch=images_per_epoch, echo=typer.echo
    )


def search(
    level: Annotated[str, typer.Option(help="cell, image or treatment.")] = "image",
    entity_id: Annotated[str | None, typer.Option(help="Find neighbours of this stored entity.")] = None,
    model_version: Annotated[str | None, typer.Option(help="Model version (default: the latest published).")] = None,
    k: Annotated[int, typer.Option("-k", "--k", min=1, max=1000, help="Neighbours to return.")] = 5,
    exclude_same: Annotated[
        list[str] | None, typer.Option(help="Drop hits sharing this field (plate, compound); repeat.")
    ] = None,
    data_dir: DataDir = None,
) -> None:
    """Top-k similar entities from the pgvector feature store (cosine distance), as JSON lines."""
    import psycopg2

    from services.featurestore.schema import StoreError
    from services.featurestore.server import PostgresError
    from services.featurestore.store import FeatureStore

    settings = _settings(data_dir)
    try:
        with FeatureStore.from_settings(settings) as store:
            versions = store.model_versions(level)
            if not versions:
                raise StoreError(f"no {level} embeddings in the store; run 'make demo' or a profiling pipeline")
            version = model_version or versions[-1]
            if entity_id is None:
                first = store.page(level, model_version=version, limit=1)["entity_id"]
                if first.empty:
                    raise StoreError(f"model {version!r} holds no {level} embeddings; pick another --model-version")
                entity_id = str(first.iloc[0])
            hits = store.search(
                level, model_version=version, entity_id=entity_id, k=k, exclude_same=tuple(exclude_same or ())
            )
    except (StoreError, ConnectionError, PostgresError, psycopg2.Error) as exc:  # one line, never a traceback
        typer.echo(f"error: {str(exc).strip().splitlines()[0]}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(f"# {k} nearest {level}s to {entity_id} (model {version})")
    for hit in hits:
        typer.echo(
            json.dumps(
                {"entity_id": hit.entity_id, "distance": float(f"{hit.distance:.3g}"), **hit.metadata}, default=str
            )
        )


def serve_search(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
    data_dir: DataDir = None,
) -> None:
    """Serve the similarity-search HTTP API (FastAPI; docs at /docs, health at /health)."""
    from services.search_api import serve

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    serve(_settings(data_dir), host=host, port=port)


def dashboard(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8501,
    data_dir: DataDir = None,
) -> None:
    """Open the Streamlit dashboard over the feature store and the registry."""
    import os
    import subprocess
    import sys

    app = Path(__file__).resolve().parents[1] / "dashboard" / "app.py"
    env = dict(os.environ)
    if data_dir is not None:
        env["MICROSNOOP_DATA_DIR"] = str(data_dir.resolve())
    cmd = [sys.executable, "-m", "streamlit", "run", str(app), "--server.address", host, "--server.port", str(port)]
    cmd += ["--server.headless", "true", "--browser.gatherUsageStats", "false", "--server.maxUploadSize", "16"]
    raise SystemExit(subprocess.call(cmd, env=env))


def register(app: typer.Typer) -> None:
    """Attach the platform commands to the core app."""
    app.add_typer(pipeline_app, name="pipeline")
    app.add_typer(platform_app, name="platform")
    app.command("search")(search)
    app.command("serve-search")(serve_search)
    app.command("dashboard")(dashboard)
