"""Benchmark scores per model (feature set) and suite: the committed results JSON plus MLflow benchmark runs."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd

from services.settings import PlatformSettings

log = logging.getLogger(__name__)
SUITES_DIR = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "suites"
BENCHMARK_EXPERIMENT = "microsnoop-benchmarks"
COLUMNS = ["suite", "feature_set", "kind", "score", "metric", "value", "ci_low", "ci_high", "source"]
# Feature sets that are not learned encoders: shown as baselines.
_BASELINE_HINTS = ("untrained", "cellprofiler", "cp_measure", "handcrafted", "random", "majority")


def feature_set_kind(name: str) -> str:
    """``baseline`` for untrained/hand-crafted feature sets, else ``model``."""
    return "baseline" if any(h in name.lower() for h in _BASELINE_HINTS) else "model"


def suite_scores(directory: Path = SUITES_DIR) -> pd.DataFrame:
    """Every row of every ``<suite>.json`` report: suite, feature set, score, metric, value, 95 % CI."""
    rows = []
    for path in sorted(Path(directory).glob("*.json")):
        try:
            report = json.loads(path.read_text())
        except (ValueError, OSError) as exc:
            log.warning("skipping unreadable benchmark report %s: %s", path, exc)
            continue
        if not isinstance(report, dict) or "rows" not in report:
            continue
        suite = str(report.get("suite", path.stem))
        for row in report["rows"]:
            ci = row.get("ci95") or [None, None]
            rows.append(
                {
                    "suite": suite,
                    "feature_set": str(row["feature_set"]),
                    "kind": feature_set_kind(str(row["feature_set"])),
                    "score": str(row.get("score", "-")),
                    "metric": str(row.get("metric", "")),
                    "value": float(row["value"]),
                    "ci_low": ci[0],
                    "ci_high": ci[1],
                    "source": path.name,
                }
            )
    return pd.DataFrame(rows, columns=COLUMNS)


def mlflow_scores(settings: PlatformSettings, *, experiment: str = BENCHMARK_EXPERIMENT) -> pd.DataFrame:
    """Metrics of the benchmark runs that ``log_benchmark`` wrote, one row per (run, metric)."""
    from services.tracking import tracking_client

    client = tracking_client(settings)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return pd.DataFrame(columns=COLUMNS)
    rows = []
    for run in client.search_runs([found.experiment_id], max_results=500):
        name = run.info.run_name or run.info.run_id
        for key, value in run.data.metrics.items():
            rows.append(
                {
                    "suite": run.data.params.get("suite", name),
                    "feature_set": run.data.tags.get("model_version", name),
                    "kind": "model",
                    "score": key.rsplit(".", 1)[0] if "." in key else "-",
                    "metric": key.rsplit(".", 1)[-1],
                    "value": float(value),
                    "ci_low": None,
                    "ci_high": None,
                    "source": f"mlflow:{run.info.run_id[:8]}",
                }
            )
    return pd.DataFrame(rows, columns=COLUMNS)


def registry_scores(settings: PlatformSettings) -> pd.DataFrame:
    """The primary score of each registered encoder version (the registration's evaluation)."""
    from services.registry import list_versions

    table = list_versions(settings)
    rows = [
        {
            "suite": "registry",
            "feature_set": f"v{r['version']}" + (f" ({r['aliases']})" if r.get("aliases") else ""),
            "kind": "model",
            "score": "primary",
            "metric": str(r["primary_metric"]),
            "value": float(r["primary_value"]),
            "ci_low": None,
            "ci_high": None,
            "source": "mlflow registry",
        }
        for r in table.to_dict("records")
        if r.get("primary_metric") and r.get("primary_value") is not None
    ]
    return pd.DataFrame(rows, columns=COLUMNS)


def all_scores(settings: PlatformSettings, *, directory: Path = SUITES_DIR) -> pd.DataFrame:
    """Results JSON, MLflow benchmark runs and registry scores in one table."""
    parts = [suite_scores(directory), mlflow_scores(settings), registry_scores(settings)]
    return pd.DataFrame([row for part in parts for row in part.to_dict("records")], columns=COLUMNS)
