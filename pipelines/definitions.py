"""The three pipelines, built for one settings object (image tag and GPU policy are compile-time)."""

# No `from __future__ import annotations`: KFP reads the pipeline signatures as real types.

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from components import Components, build_components, stage_of
from pipelines.tasks import configure_task
from services.settings import PlatformSettings

PIPELINE_VERSION = "6"  # bump when a pipeline's wiring or signature changes


def _step(component: Any, settings: PlatformSettings, **kwargs: Any) -> Any:
    """Call a component with explicit arguments and apply its stage's scheduling policy."""
    return configure_task(component(**kwargs), stage_of(component), settings)


def build_pretraining(settings: PlatformSettings) -> Callable[..., Any]:
    """curate -> pretrain (in the step, or N workers x G GPUs through the Training Operator) -> evaluate -> register."""
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
        workers: int = 0,
        gpus_per_worker: int = 1,
    ) -> None:
        pool = _step(c.curate_pool, settings, types_table=types_table)
        trained = _step(
            c.pretrain,
            settings,
            pool=pool.outputs["pool"],
            epochs=epochs,
            images_per_epoch=images_per_epoch,
            workers=workers,
            gpus_per_worker=gpus_per_worker,
        )
        evaluation = _step(
            c.evaluate_models,
            settings,
            model=trained.outputs["model"],
            trained=trained.outputs["Output"],
            fields_dir=fields_dir,
            baseline_checkpoint=baseline_checkpoint,
            limit_per_class=limit_per_class,
            eval_mode=eval_mode,
            eval_untrained=eval_untrained,
        )
        _step(
            c.register_model,
            settings,
            model=trained.outputs["model"],
            trained=trained.outputs["Output"],
            evaluation=evaluation.outputs["Output"],
            pool_info=pool.outputs["Output"],
            baseline_checkpoint=baseline_checkpoint,
        )

    return pretraining  # type: ignore[no-any-return]


@dataclass(frozen=True)
class ProfilingArgs:
    """The profiling pipeline's parameters (pipeline channels at compile time), passed explicitly."""

    source_table: Any
    model_ref: Any
    mode: Any
    rc: Any
    gray_rgb: Any
    channel: Any
    n_shards: Any
    control_column: Any
    control_value: Any
    batch_column: Any
    label_column: Any
    publish_replace: Any
    zarr_level: Any
    joint_components: Any
    intensity: Any


def _profiling_tasks(c: Components, settings: PlatformSettings, args: ProfilingArgs, after: Any = None) -> Any:
    """stage -> shard -> ParallelFor(segment -> embed) -> merge by key -> joint -> sphere -> evaluate -> publish."""
    from kfp import dsl

    staged = _step(c.stage_images, settings, source_table=args.source_table, zarr_level=args.zarr_level)
    if after is not None:
        staged.after(after)  # e.g. embed with the champion only once registration has decided it
    plan = _step(
        c.shard_images,
        settings,
        staged=staged.outputs["staged"],
        n_shards=args.n_shards,
        intensity=args.intensity,
        model_ref=args.model_ref,
        gray_rgb=args.gray_rgb,
    )
    with dsl.ParallelFor(plan.output, parallelism=settings.shard_parallelism) as shard:
        seg = _step(
            c.segment, settings, staged=staged.outputs["staged"], shard=shard, channel=args.channel, segmenter="auto"
        )
        emb = _step(
            c.embed,
            settings,
            segmented=seg.outputs["segmented"],
            shard=shard,
            model_ref=args.model_ref,
            mode=args.mode,
            rc=args.rc,
            gray_rgb=args.gray_rgb,
            intensity=args.intensity,
        )
    merged = _step(c.merge_shards, settings, shards=dsl.Collected(emb.outputs["embeddings"]), plan=plan.output)
    joined = _step(
        c.joint,
        settings,
        embeddings=merged.outputs["embeddings"],
        embedded=merged.outputs["Output"],
        n_components=args.joint_components,
    )
    sph = _step(
        c.sphere,
        settings,
        embeddings=joined.outputs["joint_embeddings"],
        control_column=args.control_column,
        control_value=args.control_value,
        batch_column=args.batch_column,
    )
    _step(c.evaluate, settings, sphered=sph.outputs["sphered"], label_column=args.label_column)
    return _step(
        c.publish_features,
        settings,
        embeddings=joined.outputs["joint_embeddings"],
        sphered=sph.outputs["sphered"],
        embedded=joined.outputs["Output"],
        replace=args.publish_replace,
    )


def build_profiling(settings: PlatformSettings) -> Callable[..., Any]:
    """stage -> shard -> segment/embed per shard in parallel -> merge -> sphere -> evaluate -> publish."""
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
        n_shards: int = 1,
        control_column: str = "Metadata_Compound",
        control_value: str = "DMSO",
        batch_column: str = "Metadata_Plate",
        label_column: str = "Metadata_Label",
        publish_replace: bool = False,
        zarr_level: int = 0,
        joint_components: int = 0,
        intensity: str = "crop",
    ) -> None:
        args = ProfilingArgs(
            source_table=source_table,
            model_ref=model_ref,
            mode=mode,
            rc=rc,
            gray_rgb=gray_rgb,
            channel=channel,
            n_shards=n_shards,
            control_column=control_column,
            control_value=control_value,
            batch_column=batch_column,
            label_column=label_column,
            publish_replace=publish_replace,
            zarr_level=zarr_level,
            joint_components=joint_components,
            intensity=intensity,
        )
        _profiling_tasks(c, settings, args)

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
        workers: int = 0,
        gpus_per_worker: int = 1,
        mode: str = "cell-region",
        rc: float = 1.0,
        gray_rgb: bool = False,
        channel: int = 0,
        n_shards: int = 1,
        control_column: str = "Metadata_Compound",
        control_value: str = "DMSO",
        batch_column: str = "Metadata_Plate",
        label_column: str = "Metadata_Label",
        publish_replace: bool = False,
        zarr_level: int = 0,
        joint_components: int = 0,
        intensity: str = "crop",
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
            workers=workers,
            gpus_per_worker=gpus_per_worker,
        )
        args = ProfilingArgs(
            source_table=source_table,
            model_ref="champion",
            mode=mode,
            rc=rc,
            gray_rgb=gray_rgb,
            channel=channel,
            n_shards=n_shards,
            control_column=control_column,
            control_value=control_value,
            batch_column=batch_column,
            label_column=label_column,
            publish_replace=publish_replace,
            zarr_level=zarr_level,
            joint_components=joint_components,
            intensity=intensity,
        )
        _profiling_tasks(c, settings, args, after=trained)

    return end_to_end  # type: ignore[no-any-return]


PIPELINES: dict[str, Callable[[PlatformSettings], Callable[..., Any]]] = {
    "pretraining": build_pretraining,
    "profiling": build_profiling,
    "end_to_end": build_end_to_end,
}
