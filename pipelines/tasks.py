"""How each stage's task is scheduled: GPU requests, node placement, retries and caching."""

from __future__ import annotations

from typing import Any

from components import GPU_STAGES
from services.settings import PlatformSettings, SettingsError

# What a step in a cluster needs to reach the services; each key of the Secret becomes that variable.
STEP_ENV = (
    "MICROSNOOP_PG_DSN",
    "MICROSNOOP_MLFLOW_URI",
    "MICROSNOOP_MLFLOW_ARTIFACTS",
    "MICROSNOOP_STORAGE_URI",
    "MICROSNOOP_S3_ENDPOINT",
    "MICROSNOOP_S3_ACCESS_KEY",
    "MICROSNOOP_S3_SECRET_KEY",
    "MICROSNOOP_S3_SECURE",
)
SIDE_EFFECTS = frozenset({"register_model", "publish_features", "stage_images"})
RETRIED = frozenset({"stage_images", "shard_images", "segment", "embed", "merge_shards", "publish_features"})


def _key_value(text: str, what: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise SettingsError(f"{what} must look like key=value, got {text!r}")
    return key, value


def configure_task(task: Any, stage: str, settings: PlatformSettings) -> Any:
    """Apply GPU, placement, retry and caching policy for ``stage`` to a pipeline task."""
    from kfp import kubernetes

    task.set_display_name(stage.replace("_", "-"))
    if stage in SIDE_EFFECTS:
        task.set_caching_options(False)  # registry and feature-store writes must really happen
    if stage in RETRIED:
        task.set_retry(num_retries=2, backoff_duration="30s", backoff_factor=2.0)
    if settings.steps_secret_name:
        # optional=True: a key the Secret lacks leaves the setting at its default instead of failing the pod.
        kubernetes.use_secret_as_env(task, settings.steps_secret_name, {key: key for key in STEP_ENV}, optional=True)
    if stage in GPU_STAGES and settings.gpu_limit > 0:
        task.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(settings.gpu_limit)
        if settings.gpu_node_selector:
            key, value = _key_value(settings.gpu_node_selector, "MICROSNOOP_GPU_NODE_SELECTOR")
            kubernetes.add_node_selector(task, label_key=key, label_value=value)
        if settings.gpu_toleration:
            pair, _, effect = settings.gpu_toleration.partition(":")
            key, value = _key_value(pair, "MICROSNOOP_GPU_TOLERATION")
            kubernetes.add_toleration(
                task,
                key=key,
                operator="Equal",
                value=value,
                effect=effect or "NoSchedule",  # type: ignore[arg-type]
            )
    return task
