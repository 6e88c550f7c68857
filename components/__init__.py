"""KFP v2 components: one typed function per stage, each a single call into ``services.steps``, ``services.staging``,
``services.sharding`` or ``services.trainjob``.

Functions are plain until :func:`build_components` wraps them for a given container image, so the
image tag is chosen when a pipeline is compiled, never at import.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kfp.dsl.python_component import PythonComponent

STAGES = (
    "curate_pool",
    "pretrain",
    "evaluate_models",
    "register_model",
    "stage_images",
    "shard_images",
    "segment",
    "embed",
    "merge_shards",
    "joint",
    "sphere",
    "evaluate",
    "publish_features",
)
GPU_STAGES = frozenset({"pretrain", "embed"})


@dataclass(frozen=True)
class Components:
    """The stage components built for one container image, one field per stage."""

    image: str
    curate_pool: PythonComponent
    pretrain: PythonComponent
    evaluate_models: PythonComponent
    register_model: PythonComponent
    stage_images: PythonComponent
    shard_images: PythonComponent
    segment: PythonComponent
    embed: PythonComponent
    merge_shards: PythonComponent
    joint: PythonComponent
    sphere: PythonComponent
    evaluate: PythonComponent
    publish_features: PythonComponent


def stage_function(name: str) -> Callable[..., Any]:
    """The plain Python function of one stage."""
    if name not in STAGES:
        raise KeyError(f"unknown stage {name!r}; stages are {STAGES}")
    return getattr(importlib.import_module(f"components.{name}"), name)  # type: ignore[no-any-return]


def build_components(image: str) -> Components:
    """Wrap every stage as a KFP component running in ``image`` (no packages installed at start)."""
    from kfp import dsl

    # kfp and every dependency are baked into the image: nothing is pip-installed when a step starts.
    built = {name: dsl.component(stage_function(name), base_image=image, install_kfp_package=False) for name in STAGES}
    return Components(image=image, **built)


def stage_of(component: PythonComponent) -> str:
    """The stage name of a built component (its function's name)."""
    return str(component.python_func.__name__)
