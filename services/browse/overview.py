"""What the platform holds: rows per level, model versions with aliases, datasets and pipeline runs."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from services.featurestore import LEVELS, FeatureStore
from services.settings import PlatformSettings

log = logging.getLogger(__name__)
_RUN_DIR = re.compile(r"^(?P<pipeline>.+?)-(?P<stamp>\d{4}-\d{2}-\d{2}-\d{2}-\d{2}-\d{2}-\d+)$")


@dataclass(frozen=True)
class StoreSummary:
    """Rows per level and the model versions published at each level (oldest first)."""

    counts: dict[str, int]
    versions: dict[str, list[str]]

    @property
    def empty(self) -> bool:
        """True when no level holds a row."""
        return not any(self.counts.values())

    def all_versions(self) -> list[str]:
        """Every published model version, oldest first, without repeats."""
        seen: dict[str, None] = {}
        for level in LEVELS:
            seen.update(dict.fromkeys(self.versions.get(level, [])))
        return list(seen)


def summarize_store(store: FeatureStore) -> StoreSummary:
    """Row counts and published model versions of every level."""
    return StoreSummary(store.counts(), {level: store.model_versions(level) for level in LEVELS})


def model_versions(settings: PlatformSettings, summary: StoreSummary | None = None) -> pd.DataFrame:
    """Registered encoder versions (aliases, primary score) and whether the store holds their embeddings."""
    from services.registry import list_versions

    table = list_versions(settings)
    keep = [c for c in ("version", "aliases", "primary_metric", "primary_value", "created", "checkpoint_sha256")]
    table = table[[c for c in keep if c in table.columns]].copy()
    if summary is not None and len(table):
        for level in LEVELS:
            published = set(summary.versions.get(level, []))
            table[f"{level}_published"] = [f"{settings.model_name}/{v}" in published for v in table["version"]]
    return table.sort_values("version").reset_index(drop=True) if len(table) else table


def datasets(settings: PlatformSettings) -> pd.DataFrame:
    """Data sets staged into the object store (its manifests): name, creation time, objects, source."""
    from services.storage import open_store

    store = open_store(settings)
    rows = []
    for uri in store.list_uris("manifests/"):
        try:
            body = store.read_manifest(uri)
        except (ValueError, OSError) as exc:
            log.warning("skipping unreadable manifest %s: %s", uri, exc)
            continue
        objects = body.get("objects", [])
        rows.append(
            {
                "dataset": body.get("name", uri.rsplit("/", 1)[-1]),
                "created": body.get("created"),
                "objects": len(objects),
                "bytes": sum(int(o.get("size", 0)) for o in objects),
                "source": (body.get("extra") or {}).get("source", ""),
            }
        )
    return pd.DataFrame(rows, columns=["dataset", "created", "objects", "bytes", "source"])


def _local_runs(root: Path) -> list[dict[str, Any]]:
    rows = []
    for run in sorted(p for p in root.glob("*") if p.is_dir()):
        match = _RUN_DIR.match(run.name)
        if match is None:
            continue
        steps = sorted(p.parent.name for p in run.glob("*/executor_output.json"))
        stamp = match["stamp"].rsplit("-", 1)[0]
        rows.append(
            {
                "source": "kfp.local",
                "pipeline": match["pipeline"],
                "run": run.name,
                "started": pd.to_datetime(stamp, format="%Y-%m-%d-%H-%M-%S", utc=True),
                "status": f"{len(steps)} steps done",
                "detail": ", ".join(steps),
            }
        )
    return rows


def _mlflow_runs(settings: PlatformSettings, limit: int) -> list[dict[str, Any]]:
    from services.tracking import tracking_client

    client = tracking_client(settings)
    experiments = {e.experiment_id: e.name for e in client.search_experiments()}
    if not experiments:
        return []
    runs = client.search_runs(list(experiments), max_results=limit, order_by=["attributes.start_time DESC"])
    return [
        {
            "source": "mlflow",
            "pipeline": experiments.get(r.info.experiment_id, r.info.experiment_id),
            "run": r.info.run_name or r.info.run_id,
            "started": pd.Timestamp(r.info.start_time or 0, unit="ms", tz="UTC"),
            "status": r.info.status,
            "detail": ", ".join(f"{k}={v:.3g}" for k, v in list(r.data.metrics.items())[:4]),
        }
        for r in runs
    ]


def pipeline_runs(settings: PlatformSettings, *, limit: int = 100) -> pd.DataFrame:
    """Local pipeline runs (``data_dir/kfp``) and MLflow runs (registrations, benchmarks), newest first."""
    rows = _local_runs(settings.data_dir / "kfp") + _mlflow_runs(settings, limit)
    frame = pd.DataFrame(rows, columns=["source", "pipeline", "run", "started", "status", "detail"])
    return frame.sort_values("started", ascending=False).head(limit).reset_index(drop=True)
