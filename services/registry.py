"""The encoder registry on MLflow: register checkpoints with lineage, keep a ``champion``, resolve and log.

Locally the tracking store is SQLite under ``data_dir`` with artifacts under ``data_dir/mlartifacts``; in a
cluster ``MICROSNOOP_MLFLOW_URI`` names a tracking server and ``MICROSNOOP_MLFLOW_ARTIFACTS`` an ``s3://``
root. Every function builds its own :class:`~mlflow.MlflowClient` from the settings it is given, so no
global tracking URI is set.

A registered version is a pyfunc model (``loader_module=services.registry``) whose ``data/`` folder holds
the raw checkpoint file; :func:`resolve_encoder` downloads only that file and checks its SHA-256.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import shutil
import tempfile
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from mlflow import MlflowClient
from mlflow.entities import Metric, Param
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from microsnoop import __version__
from microsnoop.models.checkpoint import Checkpoint, file_sha256, load_checkpoint, load_encoder
from services.settings import PlatformSettings
from services.tracking import (
    artifact_env,
    clean_key,
    code_revision,
    experiment_id,
    flatten,
    is_number,
    log_batches,
    log_benchmark,
    param_text,
    tracking_client,
)

log = logging.getLogger(__name__)

CHAMPION = "champion"
ENCODER_EXPERIMENT = "microsnoop-encoders"
MODEL_DIR = "encoder"  # run artifact folder of the pyfunc model
SHA_TAG = "checkpoint_sha256"
FILE_TAG = "checkpoint_artifact"  # path of the checkpoint inside the model folder
METRIC_TAG = "primary_metric"
__all__ = [
    "CHAMPION",
    "EncoderPyfunc",
    "Registration",
    "RegistryError",
    "list_versions",
    "log_benchmark",
    "register_encoder",
    "resolve_encoder",
]


class RegistryError(RuntimeError):
    """A registry operation failed; the message says what to do."""


@dataclass(frozen=True)
class Registration:
    """The outcome of :func:`register_encoder`."""

    name: str
    version: str
    run_id: str
    promoted: bool
    previous_champion: str | None


# -- the pyfunc flavour: MLflow imports this module and calls _load_pyfunc(data_path) ----------------
class EncoderPyfunc:
    """Embeds ``N x C x H x W`` raw images (prepared by the stored contract) into ``N x (C * D)`` floats."""

    def __init__(self, checkpoint: Path) -> None:
        self.encoder = load_encoder(checkpoint)

    def predict(self, model_input: Any, params: dict[str, Any] | None = None) -> np.ndarray:
        """Embed a float array of images; ``params`` is unused."""
        from microsnoop.device import init_runtime
        from microsnoop.embed import embed_images

        del params
        images = np.asarray(model_input, dtype=np.float32)
        runtime = init_runtime(device="cpu", amp="off", channels_last=False)
        return embed_images(self.encoder, images, self.encoder.preprocess, runtime)


def _load_pyfunc(data_path: str) -> EncoderPyfunc:
    """MLflow's loader hook: ``data_path`` is the stored checkpoint file."""
    return EncoderPyfunc(Path(data_path))


def _ensure_model(client: MlflowClient, name: str) -> None:
    try:
        client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        with contextlib.suppress(MlflowException):
            client.create_registered_model(name, description="Microsnoop image encoder checkpoints")


# -- registration ----------------------------------------------------------------------------------------
def _save_pyfunc(checkpoint: Path, out: Path) -> None:
    """Write the pyfunc model folder with the checkpoint under ``data/`` and a tensor signature."""
    import mlflow.pyfunc
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    # N images x C channels x H x W of any size in; N x (C * D) embeddings out (D from the checkpoint).
    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, -1, -1, -1))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, -1))]),
    )

    with warnings.catch_warnings():  # no input example on purpose: the signature says it all
        warnings.filterwarnings("ignore", message=".*input example was not provided.*")
        mlflow.pyfunc.save_model(
            str(out),
            loader_module=__name__,
            data_path=str(checkpoint),
            signature=signature,
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", f"numpy=={np.__version__}"],
            metadata={"checkpoint_format": "microsnoop-checkpoint/1", "microsnoop_version": __version__},
        )


def _lineage_record(ckpt: Checkpoint, file_name: str, sha: str, lineage: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "checkpoint": {"sha256": sha, "file": file_name, "kind": ckpt.kind, "provenance": ckpt.provenance},
        "encoder": ckpt.encoder.to_dict(),
        "preprocess": ckpt.preprocess.to_dict(),
        "code_revision": lineage.get("code_revision") or code_revision(),
        "lineage": dict(lineage),
    }


def _log_encoder_run(
    client: MlflowClient,
    settings: PlatformSettings,
    checkpoint: Path,
    sha: str,
    record: dict[str, Any],
    scores: Mapping[str, float],
) -> tuple[str, str]:
    """One run with params, score metrics, lineage JSON and the pyfunc model; returns (run_id, model URI)."""
    run = client.create_run(
        experiment_id(client, settings, ENCODER_EXPERIMENT),
        run_name=f"{checkpoint.stem}-{sha[:12]}",
        tags={SHA_TAG: sha, "code_revision": record["code_revision"]},
    )
    run_id = run.info.run_id
    try:
        flat = {k: v for k, v in flatten(record).items() if k != "checkpoint.provenance"}
        params = [Param(clean_key(k), param_text(v)) for k, v in flat.items() if v is not None]
        stamp = run.info.start_time or 0
        metrics = [Metric(clean_key(k), float(v), stamp, 0) for k, v in scores.items()]
        log_batches(client, run_id, metrics=metrics, params=params)
        client.log_text(run_id, json.dumps(record, indent=1, default=str), "lineage.json")
        with tempfile.TemporaryDirectory() as tmp:
            _save_pyfunc(checkpoint, Path(tmp) / MODEL_DIR)
            client.log_artifacts(run_id, str(Path(tmp) / MODEL_DIR), MODEL_DIR)
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id)
    return run_id, f"{run.info.artifact_uri.rstrip('/')}/{MODEL_DIR}"


def _champion(client: MlflowClient, name: str, alias: str = CHAMPION) -> ModelVersion | None:
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


def _promote(
    client: MlflowClient, mv: ModelVersion, value: float, primary_metric: str, higher_is_better: bool
) -> tuple[bool, str | None]:
    """Move ``champion`` to ``mv`` when it beats the current champion; returns (moved, previous champion)."""
    current = _champion(client, mv.name)
    if current is not None and str(current.version) == str(mv.version):
        return False, str(current.version)
    if current is not None:
        theirs = client.get_run(current.run_id).data.metrics.get(primary_metric) if current.run_id else None
        if theirs is None:
            log.warning(
                "champion %s v%s has no %r score; not moving it. Set the alias by hand if v%s should win "
                "(MlflowClient.set_registered_model_alias)",
                mv.name,
                current.version,
                primary_metric,
                mv.version,
            )
            return False, str(current.version)
        better = value > theirs if higher_is_better else value < theirs
        if not better:
            log.info(
                "v%s %s=%.4g does not beat champion v%s (%.4g)",
                mv.version,
                primary_metric,
                value,
                current.version,
                theirs,
            )
            return False, str(current.version)
    client.set_registered_model_alias(mv.name, CHAMPION, mv.version)
    log.info("%s champion -> v%s (%s=%.4g)", mv.name, mv.version, primary_metric, value)
    return True, None if current is None else str(current.version)


def register_encoder(
    settings: PlatformSettings,
    checkpoint: Path,
    *,
    lineage: dict[str, Any],
    scores: dict[str, float],
    primary_metric: str,
    higher_is_better: bool = True,
) -> Registration:
    """Log and register a checkpoint with lineage and scores; move ``champion`` only on improvement."""
    checkpoint = Path(checkpoint)
    ckpt = load_checkpoint(checkpoint)  # a clear error for a missing or foreign file
    if primary_metric not in scores:
        raise ValueError(
            f"primary_metric {primary_metric!r} is not among the scores {sorted(scores)}; pass it in scores"
        )
    bad = [k for k, v in scores.items() if not is_number(v) or not math.isfinite(float(v))]
    if bad:
        raise ValueError(f"scores {bad} are not finite numbers; drop them or fix the benchmark")
    sha = file_sha256(checkpoint)
    client = tracking_client(settings)
    name = settings.model_name
    with artifact_env(settings):
        _ensure_model(client, name)
        found = client.search_model_versions(f"name = '{name}' and tags.{SHA_TAG} = '{sha}'")
        if found:
            mv = min(found, key=lambda m: int(m.version))
            log.info("%s already registered as %s v%s", checkpoint, name, mv.version)
            stored = client.get_run(mv.run_id).data.metrics if mv.run_id else {}
            value = float(stored.get(primary_metric, scores[primary_metric]))
        else:
            record = _lineage_record(ckpt, checkpoint.name, sha, lineage)
            run_id, source = _log_encoder_run(client, settings, checkpoint, sha, record, scores)
            tags = {
                SHA_TAG: sha,
                FILE_TAG: f"data/{checkpoint.name}",
                METRIC_TAG: primary_metric,
                "higher_is_better": str(higher_is_better).lower(),
                "code_revision": record["code_revision"],
            }
            mv = client.create_model_version(name, source, run_id=run_id, tags=tags)
            value = float(scores[primary_metric])
        promoted, previous = _promote(client, mv, value, primary_metric, higher_is_better)
    return Registration(name, str(mv.version), mv.run_id or "", promoted, previous)


# -- resolution ------------------------------------------------------------------------------------------
def _parse_ref(settings: PlatformSettings, ref: str) -> tuple[str, str | None, str | None] | Path:
    """(model name, version, alias) for registry refs, or a local Path."""
    if ref.startswith("models:/"):
        rest = ref.removeprefix("models:/")
        if "@" in rest:
            name, alias = rest.split("@", 1)
            return name, None, alias
        name, _, version = rest.rpartition("/")
        if name and version.isdigit():
            return name, version, None
        raise RegistryError(f"{ref!r}: use models:/NAME@ALIAS or models:/NAME/VERSION")
    if ref.isdigit():
        return settings.model_name, ref, None
    path = Path(ref).expanduser()
    if path.is_file():
        return path
    if "/" in ref or "\\" in ref or path.suffix in (".pt", ".pth"):
        raise RegistryError(
            f"{ref}: no such checkpoint file; pass an existing .pt, a version, an alias or models:/ URI"
        )
    return settings.model_name, None, ref


def _model_version(
    client: MlflowClient, settings: PlatformSettings, name: str, version: str | None, alias: str | None
) -> ModelVersion:
    where = f"at {settings.tracking_uri}"
    if alias is not None:
        mv = _champion(client, name, alias)
        if mv is None:
            hint = (
                "register one with services.registry.register_encoder(settings, checkpoint, ...); "
                "the first registered version becomes champion"
                if alias == CHAMPION
                else f"set it with MlflowClient.set_registered_model_alias({name!r}, {alias!r}, VERSION)"
            )
            raise RegistryError(f"model {name!r} has no {alias!r} alias {where}; {hint}")
        return mv
    try:
        return client.get_model_version(name, str(version))
    except MlflowException as exc:
        raise RegistryError(f"model {name!r} has no version {version} {where}; see list_versions(settings)") from exc


def resolve_encoder(settings: PlatformSettings, ref: str = CHAMPION, *, dest: Path | None = None) -> Path:
    """A local checkpoint for an alias, a version, a ``models:/`` URI or a file path (downloaded and verified).

    ``dest`` is the folder to download into (default ``data_dir/models/NAME/VERSION``); a checkpoint
    already there with the registered SHA-256 is reused.
    """
    parsed = _parse_ref(settings, ref)
    if isinstance(parsed, Path):
        return parsed
    name, version, alias = parsed
    client = tracking_client(settings)
    mv = _model_version(client, settings, name, version, alias)
    tags = mv.tags or {}
    sha, inner = tags.get(SHA_TAG), tags.get(FILE_TAG)
    if not sha or not inner or not mv.source:
        raise RegistryError(
            f"{name} v{mv.version} was not registered by register_encoder (no {SHA_TAG}/{FILE_TAG} tags); "
            "register the checkpoint with services.registry.register_encoder"
        )
    folder = Path(dest) if dest is not None else settings.data_dir / "models" / name / str(mv.version)
    target = folder / Path(inner).name
    if target.is_file() and file_sha256(target) == sha:
        return target
    folder.mkdir(parents=True, exist_ok=True)
    import mlflow.artifacts

    with artifact_env(settings), tempfile.TemporaryDirectory(dir=folder) as tmp:
        got = Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=f"{mv.source.rstrip('/')}/{inner}", dst_path=tmp, tracking_uri=settings.tracking_uri
            )
        )
        actual = file_sha256(got)
        if actual != sha:
            raise RegistryError(
                f"{name} v{mv.version}: downloaded checkpoint has SHA-256 {actual}, registered {sha}; "
                "the artifact store copy is corrupt, register the checkpoint again"
            )
        shutil.move(got, target)  # same filesystem: an atomic rename
    log.info("resolved %s to %s v%s at %s", ref, name, mv.version, target)
    return target


_COLUMNS = ["version", "aliases", "run_id", "created", "checkpoint_sha256", "primary_metric", "primary_value"]


def list_versions(settings: PlatformSettings) -> pd.DataFrame:
    """One row per registered version: aliases, run, creation time, checkpoint hash and every score metric."""
    client = tracking_client(settings)
    name = settings.model_name
    try:
        aliases = client.get_registered_model(name).aliases or {}
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return pd.DataFrame(columns=_COLUMNS)
        raise
    by_version: dict[str, list[str]] = {}
    for alias, version in aliases.items():
        by_version.setdefault(str(version), []).append(alias)
    rows = []
    token = None
    while True:
        page = client.search_model_versions(f"name = '{name}'", page_token=token)
        for mv in page:
            tags = mv.tags or {}
            metrics = client.get_run(mv.run_id).data.metrics if mv.run_id else {}
            primary = tags.get(METRIC_TAG)
            row: dict[str, Any] = {
                "version": int(mv.version),
                "aliases": ",".join(sorted(by_version.get(str(mv.version), []))),
                "run_id": mv.run_id,
                "created": pd.Timestamp(mv.creation_timestamp, unit="ms", tz="UTC"),
                "checkpoint_sha256": tags.get(SHA_TAG),
                "primary_metric": primary,
                "primary_value": metrics.get(primary) if primary else None,
            }
            row.update({k if k not in row else f"metric.{k}": v for k, v in metrics.items()})
            rows.append(row)
        token = page.token
        if not token:
            break
    return (
        pd.DataFrame(rows, columns=None).sort_values("version").reset_index(drop=True)
        if rows
        else pd.DataFrame(columns=_COLUMNS)
    )
