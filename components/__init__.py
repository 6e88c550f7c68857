"""KFP v2 components: one typed function per stage, each a single call into ``services.steps`` or ``services.staging``.

Functions are plain until :func:`build_components` wraps them for a given container image, so the
image tag is chosen when a pipeline is compiled, never at import.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

STAGES = (
    "curate_pool",
    "pretrain",
    "evaluate_models",
    "register_model",
    "stage_images",
    "segment",
    "embed",
    "sphere",
    "evaluate",
    "publish_features",
)
GPU_STAGES = frozenset({"pretrain", "embed"})


@dataclass(frozen=True)
class Components:
    """The stage components built for one container image."""

    image: str
    by_name: dict[str, Any]

    def __getattr__(self, name: str) -> Any:
        try:
            return self.by_name[name]
        except KeyError as exc:
            raise AttributeError(name) from exc


def stage_function(name: str) -> Callable[..., Any]:
    """The plain Python function of one stage."""
    import importlib

    if name not in STAGES:
        raise KeyError(f"unknown stage {name!r}; stages are {STAGES}")
    return getattr(importlib.import_module(f"components.{name}"), name)  # type: ignore[no-any-return]


def build_components(image: str) -> Components:
    """Wrap every stage as a KFP component running in ``image`` (no packages installed at start)."""
    from kfp import dsl

    # kfp and every dependency are baked into the image: nothing is pip-installed when a step starts.
    return Components(
        image,
        {name: dsl.component(stage_function(name), base_image=image, install_kfp_package=False) for name in STAGES},
    )
