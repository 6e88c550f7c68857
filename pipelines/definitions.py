"""The three pipelines, built for one settings object (image tag and GPU policy are compile-time)."""

# No `from __future__ import annotations`: KFP reads the pipeline signatures as real types.

from collections.abc import Callable
from typing import Any

from components import build_components
from pipelines.tasks import configure_task
from services.settings import PlatformSettings

PIPELINE_VERSION = "3"  # bump when a pipeline's wiring or signature changes


def _task(components: Any, stage: str, settings: PlatformSettings, **kwargs: Any) -> Any:
    return configure_task(getattr(components, stage)(**kwargs), stage, settings)


def build_pretraining(settings: PlatformSettings) -> Callable[..., Any]:
    """curate -> pretrain -> evaluate (vs baseline and untrained) -> register (champion on improvement)."""
    from kfp import dsl

    c = build_components(settings.image)

    @dsl.pipeline(name="microsnoop-pretraining", description="Pretrain, evaluate and register a Microsnoop encoder.")
    def pretraining(
        types_table: str,
        fields_dir: str,
        baseline_checkpoint: str = "",
        epochs: int = 2,
        images_per_epoch: int = 32,
        limit_per_class: int = 4,
        eval_mode: str = "cell-region",
        eval_untrained: bool = True,
    ) -> None:
        pool = _task(c, "curate_pool", settings, types_table=types_table)
        trained = _task(
            c, "pretrain", settings, pool=pool.outputs["pool"], epochs=epochs, images_per_epoch=images_per_epoch
        )
        evaluation = _task(
            c,
            "evaluate_models",
            settings,
            model=trained.outputs["model"],
            trained=trained.outputs["Output"],
            fields_dir=fields_dir,
            baseline_checkpoint=baseline_checkpoint,
            limit_per_class=limit_per_class,
            eval_mode=eval_mode,
            eval_untrained=eval_untrained,
        )
        _task(
            c,
            "register_model",
            settings,
            model=trained.outputs["model"],
            trained=trained.outputs["Output"],
            evaluation=evaluation.outputs["Output"],
            pool_info=pool.outputs["Output"],
            baseline_checkpoint=baseline_checkpoint,
        )

    return pretraining  # type: ignore[no-any-return]


def _profiling_tasks(c: Any, settings: PlatformSettings, args: dict[str, Any], after: Any = None) -> Any:
    staged = _task(c, "stage_images", settings, source_table=args["source_table"])
    if after is not None:
        staged.after(after)  # e.g. embed with the champion only once registration has decided it
    seg = _task(c, "segment", settings, staged=staged.outputs["staged"], channel=args["channel"], segmenter="auto")
    emb = _task(
        c,
        "embed",
        settings,
        segmented=seg.outputs["segmented"],
        model_ref=args["model_ref"],
        mode=args["mode"],
        rc=args["rc"],
        gray_rgb=args["gray_rgb"],
    )
    sph = _task(
        c,
        "sphere",
        settings,
        embeddings=emb.outputs["embeddings"],
        control_column=args["control_column"],
        control_value=args["control_value"],
        batch_column=args["batch_column"],
    )
    _task(c, "evaluate", settings, sphered=sph.outputs["sphered"], label_column=args["label_column"])
    return _task(
        c,
        "publish_features",
        settings,
        embeddings=emb.outputs["embeddings"],
        sphered=sph.outputs["sphered"],
        embedded=emb.outputs["Output"],
    )


def build_profiling(settings: PlatformSettings) -> Callable[..., Any]:
    """stage -> segment -> embed (registered model) -> sphere -> evaluate -> publish to the feature store."""
    from kfp import dsl

    c = build_components(settings.image)

    @dsl.pipeline(name="microsnoop-profiling", description="Segment, embed, sphere, evaluate and publish images.")
    def profiling(
        source_table: str,
        model_ref: str = "champion",
        mode: str = "cell-region",
        rc: float = 1.0,
        gray_rgb: bool = False,
        channel: int = 0,
        control_column: str = "Metadata_Compound",
        control_value: str = "DMSO",
        batch_column: str = "Metadata_Plate",
        label_column: str = "Metadata_Label",
    ) -> None:
        _profiling_tasks(c, settings, locals())

    return profiling  # type: ignore[no-any-return]


def build_end_to_end(settings: PlatformSettings) -> Callable[..., Any]:
    """Pretraining then profiling with the champion the pretraining run leaves behind."""
    from kfp import dsl

    c = build_components(settings.image)
    pretraining = build_pretraining(settings)

    @dsl.pipeline(name="microsnoop-end-to-end", description="Pretrain and register, then profile and publish.")
    def end_to_end(
        types_table: str,
        fields_dir: str,
        source_table: str,
        baseline_checkpoint: str = "",
        epochs: int = 2,
        images_per_epoch: int = 32,
        limit_per_class: int = 4,
        eval_mode: str = "cell-region",
        eval_untrained: bool = True,
        mode: str = "cell-region",
        rc: float = 1.0,
        gray_rgb: bool = False,
        channel: int = 0,
        control_column: str = "Metadata_Compound",
        control_value: str = "DMSO",
        batch_column: str = "Metadata_Plate",
        label_column: str = "Metadata_Label",
    ) -> None:
        trained = pretraining(
            types_table=types_table,
            fields_dir=fields_dir,
            baseline_checkpoint=baseline_checkpoint,
            epochs=epochs,
            images_per_epoch=images_per_epoch,
            limit_per_class=limit_per_class,
            eval_mode=eval_mode,
            eval_untrained=eval_untrained,
        )
        args = {**locals(), "model_ref": "champion"}
        _profiling_tasks(c, settings, args, after=trained)

    return end_to_end  # type: ignore[no-any-return]


PIPELINES: dict[str, Callable[[PlatformSettings], Callable[..., Any]]] = {
    "pretraining": build_pretraining,
    "profiling": build_profiling,
    "end_to_end": build_end_to_end,
}
