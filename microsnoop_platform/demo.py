"""The platform demo: embedded services, the end_to_end pipeline on the demo data, scores and a search."""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from services.settings import PlatformSettings

log = logging.getLogger(__name__)


def demo_arguments(
    data: Path, baseline: Path, *, epochs: int, images_per_epoch: int, limit_per_class: int = 4
) -> dict[str, Any]:
    """end_to_end arguments for the repository's demo data (absolute paths: steps run elsewhere)."""
    data = data.resolve()
    for need in (data / "pool_types.csv", data / "dsb2018" / "fields_demo.csv"):
        if not need.is_file():
            raise FileNotFoundError(f"{need}: demo data missing; run from the repository root or pass --data")
    return {
        "types_table": str(data / "pool_types.csv"),
        "fields_dir": str(data / "dsb2018"),
        # 12 fields, 4 per image type: cell-region profiling embeds every cell, ~5 cells/s on 2 CPU cores.
        "source_table": str(data / "dsb2018" / "fields_demo.csv"),
        "baseline_checkpoint": str(baseline.resolve()) if baseline.is_file() else "",
        "epochs": epochs,
        "images_per_epoch": images_per_epoch,
        "limit_per_class": limit_per_class,
        "eval_untrained": False,  # the benchmark suites compare with the untrained network; the demo saves time
        "mode": "cell-region",
        "rc": 1.0,
        "gray_rgb": True,  # the demo mixes grey fluorescence with colour histology
        "label_column": "Metadata_Label",
    }


def latest_json(root: Path, name: str) -> dict[str, Any] | None:
    """The newest ``name`` file under a pipeline root, parsed (None when absent)."""
    found = sorted(root.rglob(name), key=lambda p: p.stat().st_mtime)
    return json.loads(found[-1].read_text()) if found else None


def run_platform_demo(
    settings: PlatformSettings,
    *,
    data: Path,
    baseline: Path,
    epochs: int = 2,
    images_per_epoch: int = 32,
    echo: Callable[[str], None] = log.info,
) -> dict[str, Any]:
    """Run the whole platform on the demo data and say what happened; returns the key numbers."""
    from pipelines.runner import run_local
    from services.featurestore import ensure_postgres
    from services.featurestore.centering import median_pair_cosine
    from services.featurestore.server import redact_dsn
    from services.featurestore.store import FeatureStore
    from services.registry import list_versions

    echo(f"[1/4] starting the embedded services under {settings.data_dir}")
    dsn = redact_dsn(ensure_postgres(settings))  # the password stays in DATA_DIR/postgres.password
    echo(f"      postgres+pgvector: {dsn}\n      mlflow: {settings.tracking_uri}\n      store: {settings.store_uri}")
    echo("[2/4] running the end_to_end pipeline locally (kfp.local; each step a subprocess)")
    started = time.perf_counter()
    root = settings.data_dir / "kfp"
    run_log = settings.data_dir / "end_to_end.log"
    echo(f"      step logs: {run_log}")
    arguments = demo_arguments(data, baseline, epochs=epochs, images_per_epoch=images_per_epoch)
    try:
        with run_log.open("w") as fh, contextlib.redirect_stdout(fh):
            run_local("end_to_end", arguments, settings, pipeline_root=root)
    except BaseException:
        echo("      the pipeline failed; the end of its log:\n" + "".join(run_log.read_text().splitlines(True)[-40:]))
        raise
    echo(f"      finished in {time.perf_counter() - started:.0f} s; artifacts under {root}")
    echo("[3/4] registry and scores")
    versions = list_versions(settings)
    echo("      candidate and shipped baseline scored on the same labelled fields (4 per image type; 1-NN,")
    echo("      cell-region); 'champion' moves only when the candidate is strictly better")
    for row in versions.to_dict("records"):
        echo(f"      {settings.model_name} v{row['version']} aliases={row.get('aliases') or '-'} {_scores(row)}")
    profile = latest_json(root, "scores.json")
    if profile is not None:
        lo, hi = profile["accuracy_ci95"]
        echo(f"      image-type 1-NN on the profiled demo fields: {profile['accuracy']:.3f} (95% CI {lo:.3f}-{hi:.3f})")
    echo("[4/4] feature store and one similarity query")
    with FeatureStore.from_settings(settings) as store:
        counts = store.counts()
        echo(f"      rows: {counts}")
        version = store.model_versions("image")[-1]
        query = store.page("image", model_version=version, limit=1).iloc[0]
        hits = store.search("image", model_version=version, entity_id=str(query["entity_id"]), k=5)
        spread = None
        if counts.get("cell", 0) >= 2:
            _, cell_vectors = store.vectors("cell", model_version=store.model_versions("cell")[-1], limit=5000)
            spread = median_pair_cosine(cell_vectors)
    echo(f"      5 nearest images to {query['entity_id']} ({query.get('label')}), model {version}:")
    for hit in hits:
        echo(f"        {hit.entity_id}  cosine distance {hit.distance:.3g}  label {hit.metadata.get('label')}")
    if spread is not None:
        echo(f"      published cell vectors (centred per model version): median pairwise cosine {spread:.3f}")
    echo(
        "next: 'microsnoop dashboard --data-dir "
        f"{settings.data_dir}' (Streamlit), 'mlflow ui --backend-store-uri {settings.tracking_uri}', "
        f"'microsnoop serve-search --data-dir {settings.data_dir}' (HTTP API); stop the database with "
        f"'microsnoop platform down --data-dir {settings.data_dir}'"
    )
    return {
        "counts": counts,
        "versions": versions.to_dict("records"),
        "profile": profile,
        "median_pair_cosine": spread,
    }


def _scores(row: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:.3f}" for k, v in row.items() if isinstance(v, float) and k not in ("version",))
