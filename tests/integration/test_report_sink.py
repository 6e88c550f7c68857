"""`microsnoop benchmark` hands its report to MLflow through the entry-point sink when a tracking URI is set."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from microsnoop.cli import report_to_sinks

pytestmark = pytest.mark.integration


def _report(tmp_path: Path) -> dict[str, Path]:
    rows = [{"feature_set": "shipped", "score": "knn_1", "metric": "accuracy", "value": 0.75, "ci95": [0.5, 1.0]}]
    report = {"suite": "dsb2018-fields", "rows": rows, "models": {"shipped": "x.pt@sha256:ab"}, "data_hash": "cafe"}
    (tmp_path / "dsb2018-fields.json").write_text(json.dumps(report))
    (tmp_path / "dsb2018-fields.md").write_text("| table |")
    return {"json": tmp_path / "dsb2018-fields.json", "md": tmp_path / "dsb2018-fields.md"}


def test_no_tracking_uri_logs_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MICROSNOOP_MLFLOW_URI", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert report_to_sinks(_report(tmp_path)) == []


def test_report_is_logged_with_scores_and_artifacts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MICROSNOOP_MLFLOW_URI", uri)
    monkeypatch.setenv("MICROSNOOP_MLFLOW_ARTIFACTS", (tmp_path / "artifacts").as_uri())
    (note,) = report_to_sinks(_report(tmp_path))
    run_id = note.split(" run ")[1].split()[0]
    run = MlflowClient(tracking_uri=uri).get_run(run_id)
    assert run.data.metrics["scores.shipped/knn_1/accuracy"] == pytest.approx(0.75)
    assert run.info.run_name == "dsb2018-fields"
    names = {a.path for a in MlflowClient(tracking_uri=uri).list_artifacts(run_id)}
    assert {"dsb2018-fields.json", "dsb2018-fields.md"} <= names
