"""Benchmark reports to MLflow when a tracking URI is configured (MICROSNOOP_MLFLOW_URI or MLFLOW_TRACKING_URI)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from services.settings import load_settings


def log_report(paths: dict[str, Path]) -> str | None:
    """Log a suite's JSON report and its plots as one MLflow run; None when no tracking URI is set."""
    from dataclasses import replace

    from services.tracking import log_benchmark

    settings = load_settings()
    uri = settings.mlflow_uri or os.environ.get("MLFLOW_TRACKING_URI", "")
    if not uri:
        return None
    settings = replace(settings, mlflow_uri=uri)
    report = json.loads(paths["json"].read_text())
    scores = {f"{r['feature_set']}/{r['score']}/{r['metric']}": r["value"] for r in report.get("rows", [])}
    summary = {
        "suite": report["suite"],
        "scores": scores,
        "models": report.get("models", {}),
        "data_hash": report.get("data_hash"),
        "command": report.get("command"),
    }
    run_id = log_benchmark(settings, summary, run_name=report["suite"], artifacts=list(paths.values()))
    return f"logged to MLflow ({uri}) as run {run_id} in experiment microsnoop-benchmarks"
