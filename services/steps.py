"""One function per pipeline stage: plain paths and strings in, files and a small summary out.

The KFP components in ``components/`` are typed signatures that call exactly one of these; the same
functions run from a laptop, a test or a cluster step. Settings are read at call time.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from services.settings import PlatformSettings, settings_or_env
from services.staging import archive_files, content_digest, local_input

log = logging.getLogger(__name__)


# How the platform embeds cells (the profiling step and dashboard uploads must agree): content-aware, each
# crop on its own intensity scale unless a run asks for intensity="dataset" (levels fitted once before the
# shard fan-out and stored with the published version; docs/intensity.md).
EMBED_CANVAS = "crop"
EMBED_POOLING = "valid"
EMBED_INTENSITY = "crop"


def curate_step(inputs: list[str], out_dir: str, *, types_table: str = "") -> dict[str, Any]:
    """Curate a pretraining pool from image folders or a path/type table (local or ``s3://``)."""
    import tempfile

    from microsnoop.curate import curate_pool
    from microsnoop.models.checkpoint import file_sha256

    out = Path(out_dir)
    with tempfile.TemporaryDirectory(prefix="curate-") as tmp:
        folders = [local_input(p, Path(tmp) / f"in{i}") for i, p in enumerate(inputs)]
        table = local_input(types_table, Path(tmp) / "types", table=True) if types_table else None
        _, report = curate_pool(folders, out, types_table=table, progress=False)
    if report.n_planes == 0:
        raise ValueError(f"curate: no usable planes from {inputs or types_table}; see the skipped files: {report}")
    return {"n_planes": report.n_planes, "manifest_sha256": file_sha256(out / "manifest.parquet")}


def pretrain_step(
    pool_dir: str, out_dir: str, *, epochs: int, images_per_epoch: int, warmup_epochs: int = 0, device: str = "auto"
) -> dict[str, Any]:
    """Masked-reconstruction pretraining; returns the encoder checkpoint path and the parameters."""
    from microsnoop.config import PretrainConfig
    from microsnoop.pretrain.train import pretrain

    config = PretrainConfig(
        nepoch=epochs, warmup_epochs=warmup_epochs, images_per_epoch=images_per_epoch, amp=settings_or_env(None).amp
    )
    result = pretrain(Path(pool_dir), Path(out_dir), config, device=device, resume=True, progress=False)
    params = {"nepoch": epochs, "warmup_epochs": warmup_epochs, "images_per_epoch": images_per_epoch}
    # Relative to the model folder: the next step sees the artifact under another path (another pod).
    name = str(result.encoder_checkpoint.relative_to(Path(out_dir)))
    return {"checkpoint_name": name, "epochs_done": result.epochs_done, "params": params}


def evaluate_models_step(
    candidate: str,
    data_dir: str,
    out_dir: str,
    *,
    baseline: str = "",
    limit_per_class: int = 4,
    mode: str = "cell-region",
    untrained: bool = True,
    n_boot: int = 200,
) -> dict[str, Any]:
    """Score a candidate encoder, an optional baseline and the untrained network on the full-field suite.

    ``data_dir`` (local or ``s3://``) holds ``manifest.csv``, ``images/`` and ``labels/`` as in DSB2018.
    ``mode`` cell-region is the paper's protocol (every cell embedded, ~10 s per field and encoder on
    2 CPU cores); rescale embeds each field once but image type is then too easy to rank encoders.
    """
    import tempfile

    from microsnoop.evaluate.report import write_report
    from microsnoop.evaluate.suites import SuiteConfig, suites

    checkpoints: dict[str, Path | None] = {"candidate": Path(candidate)}
    if untrained:
        checkpoints["untrained"] = None
    if baseline:
        checkpoints["baseline"] = Path(baseline)
    config = SuiteConfig(
        limit_per_class=limit_per_class or None,
        n_boot=n_boot,
        handcrafted=False,
        mlp=False,
        field_mode=mode,
        amp=settings_or_env(None).amp,
    )
    with tempfile.TemporaryDirectory(prefix="fields-") as tmp:
        result = suites()["dsb2018-fields"](local_input(data_dir, Path(tmp)), checkpoints, config)
    paths = write_report(result, Path(out_dir), command=f"evaluate_models_step({candidate!r}, {data_dir!r})")
    scores = {name: float(s["knn_1"]["accuracy"]) for name, s in result.scores.items()}
    return {
        "metric": f"dsb2018_fields_{mode.replace('-', '_')}_knn1_accuracy",
        "scores": scores,
        "models": result.models,
        "markdown": paths["md"].read_text(),
        "report_json": str(paths["json"]),
    }


def register_step(
    checkpoint: str,
    evaluation: dict[str, Any],
    *,
    pool: dict[str, Any] | None = None,
    params: dict[str, Any] | None = None,
    baseline: str = "",
    settings: PlatformSettings | None = None,
) -> dict[str, Any]:
    """Register the candidate (and the baseline, once) in MLflow; ``champion`` moves only on improvement."""
    from services.registry import register_encoder

    settings = settings_or_env(settings)
    metric = evaluation["metric"]
    lineage = {
        "pool_manifest_sha256": (pool or {}).get("manifest_sha256", "n/a"),
        "training": json.dumps(params or {}, sort_keys=True),
        "evaluation_models": json.dumps(evaluation.get("models", {}), sort_keys=True),
    }
    out: dict[str, Any] = {}
    if baseline:
        base = register_encoder(
            settings,
            Path(baseline),
            lineage={**lineage, "pool_manifest_sha256": "shipped", "training": "shipped model"},
            scores={metric: evaluation["scores"]["baseline"]},
            primary_metric=metric,
        )
        out["baseline_version"] = base.version
    reg = register_encoder(
        settings,
        Path(checkpoint),
        lineage=lineage,
        scores={metric: evaluation["scores"]["candidate"]},
        primary_metric=metric,
    )
    out.update(
        {
            "name": reg.name,
            "version": reg.version,
            "promoted": reg.promoted,
            "model_uri": f"models:/{reg.name}/{reg.version}",
        }
    )
    return out


def segment_step(
    source_dir: str,
    out_dir: str,
    *,
    channel: int = 0,
    segmenter: str = "auto",
    settings: PlatformSettings | None = None,
) -> dict[str, Any]:
    """Segment every image of a staged folder into a new self-contained folder with ``mask_path`` added."""
    import shutil

    from microsnoop.segment import make_segmenter, segment_files

    src, out = Path(source_dir), Path(out_dir)
    table = pd.read_csv(src / "source.csv")
    shutil.copytree(src / "images", out / "images", dirs_exist_ok=True)
    files = [str(out / p) for p in table["path"]]
    masks = segment_files(files, out / "masks", make_segmenter(segmenter, None), channel=channel, progress=False)
    failed = masks[masks["error"] != ""]
    if len(failed):
        log.warning("segment: %d images failed: %s", len(failed), failed[["path", "error"]].to_dict("records"))
    ok = masks[masks["error"] == ""].set_index("path")
    table = table[[f in ok.index for f in files]].copy()
    kept = [str(out / p) for p in table["path"]]
    table["mask_path"] = [str(Path(ok.loc[f, "mask_path"]).relative_to(out)) for f in kept]
    table["Metadata_SegmentedCells"] = [int(ok.loc[f, "n_cells"]) for f in kept]
    table.to_csv(out / "source.csv", index=False)
    masks_manifest = archive_files(
        [out / p for p in table["mask_path"]],
        kind="masks",
        manifest=f"masks-{content_digest(table)}",
        settings=settings,
    )
    return {
        "n_images": len(table),
        "n_cells": int(table["Metadata_SegmentedCells"].sum()),
        "failed": len(failed),
        "manifest": masks_manifest,
    }


def model_version_of(checkpoint: Path, settings: PlatformSettings) -> str:
    """``<name>/<version>`` when the checkpoint is registered, else ``sha256:<first 16 hex>``."""
    from microsnoop.models.checkpoint import file_sha256
    from services.registry import list_versions

    sha = file_sha256(checkpoint)
    try:
        versions = list_versions(settings)
    except Exception as exc:  # noqa: BLE001 - a registry that is down must not stop embedding
        log.warning("registry unavailable (%s): versioning embeddings by checkpoint hash", exc)
        versions = pd.DataFrame()
    if "checkpoint_sha256" in versions.columns:
        hit = versions[versions["checkpoint_sha256"] == sha]
        if len(hit):
            return f"{settings.model_name}/{hit['version'].iloc[0]}"
    return f"sha256:{sha[:16]}"


def embed_step(
    source_dir: str,
    out_dir: str,
    *,
    model_ref: str = "champion",
    mode: str = "cell-region",
    rc: float = 1.0,
    gray_rgb: bool = False,
    device: str = "auto",
    canvas: str = EMBED_CANVAS,
    pooling: str = EMBED_POOLING,
    intensity: str = EMBED_INTENSITY,
    intensity_levels: Sequence[Sequence[float]] = (),
    settings: PlatformSettings | None = None,
) -> dict[str, Any]:
    """Embed a (segmented) source table with a registered or local encoder, resumably.

    Cells are embedded content-aware by default (``canvas="crop"``, ``pooling="valid"``: better on every
    suite for the shipped and the untrained network, see docs/method-fidelity.md); pass ``"fixed"`` and
    ``"all"`` for the paper's 224 canvas. ``intensity="dataset"`` scales every crop with one set of levels
    (docs/intensity.md): the given ``intensity_levels`` (a sharded run fits them once, before the fan-out),
    else levels fitted on this source. Such a run is versioned ``<model>+dataset-<levels digest>``, a search
    space of its own.
    """
    from dataclasses import replace

    from microsnoop.device import init_runtime
    from microsnoop.io.sources import source_from_table
    from microsnoop.models.checkpoint import load_encoder
    from microsnoop.profile import ProfileConfig
    from microsnoop.protocol import with_embedding_options
    from microsnoop.stream import StreamConfig, fit_source_levels, levels_digest, run_embedding
    from services.registry import resolve_encoder

    settings = settings_or_env(settings)
    checkpoint = resolve_encoder(settings, model_ref)
    version = model_version_of(checkpoint, settings)
    encoder = load_encoder(checkpoint)
    source = source_from_table(Path(source_dir) / "source.csv")
    contract = with_embedding_options(encoder.preprocess, canvas=canvas, pooling=pooling, intensity=intensity)
    if intensity_levels:  # the contract itself refuses levels under the per-crop scale
        contract = replace(contract, intensity_levels=tuple((lo, hi) for lo, hi in intensity_levels))
    contract = fit_source_levels(source.to_dict("records"), contract, gray_rgb=gray_rgb)
    if contract.intensity_levels:
        version = f"{version}+dataset-{levels_digest(contract.intensity_levels)}"
    result = run_embedding(
        source,
        Path(out_dir),
        encoder,
        contract,
        init_runtime(device=device, amp=settings.amp),
        model_id=version,
        profile=ProfileConfig(mode=mode, rc=rc),
        stream=StreamConfig(gray_rgb=gray_rgb),
        progress=False,
    )
    (Path(out_dir) / "model_version.txt").write_text(version)
    tables = [Path(out_dir) / name for name in ("embeddings.parquet", "cells.parquet", "skipped.parquet")]
    manifest = archive_files(
        tables,
        kind="embeddings",
        manifest=f"embeddings-{content_digest(source)}-{version.replace('/', '-')}",
        settings=settings,
    )
    return {"model_version": version, "n_images": result.n_images, "n_skipped": result.n_skipped, "manifest": manifest}


def joint_step(embeddings_dir: str, out_dir: str, *, embedded: dict[str, Any], n_components: int = 0) -> dict[str, Any]:
    """The paper's multi-modal joint use: each channel block reduced by PCA to ``n_components``, concatenated.

    ``n_components`` 0 passes the embeddings through unchanged. Otherwise the image (and cell) tables
    become ``joint_*`` features and the returned summary names a model version of their own,
    ``<model>+joint<k>-<fit digest>``: a joint space is fitted on the data it profiles, so vectors of two
    fits are never published as comparable.
    """
    import hashlib
    import shutil

    from microsnoop.postprocess.joint import JointConfig, JointEmbedding, channel_blocks, joint_table

    src, out = Path(embeddings_dir), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if n_components < 0:
        raise ValueError(f"joint_components must be 0 (off) or a latent size per channel, got {n_components}")
    if n_components == 0:
        for name in ("embeddings.parquet", "cells.parquet", "skipped.parquet"):
            if (src / name).is_file():
                shutil.copyfile(src / name, out / name)
        return {**embedded, "joint": False}
    digest = hashlib.sha256()
    summary: dict[str, Any] = {}
    for name in ("embeddings.parquet", "cells.parquet"):
        if not (src / name).is_file():
            continue
        table = pd.read_parquet(src / name)
        if not len(table):
            continue
        names = None
        if "Metadata_Channels" in table.columns and table["Metadata_Channels"].nunique() == 1:
            names = str(table["Metadata_Channels"].iloc[0]).split("|")
        blocks = channel_blocks(table, names)
        if len(blocks) < 2:
            raise ValueError(
                f"{name}: joint_components={n_components} needs two or more channels (modalities), found "
                f"{list(blocks)}; embed a multi-channel source or set joint_components=0"
            )
        model = JointEmbedding(JointConfig(n_components=n_components)).fit(blocks)
        for modality, pca in model.pcas.items():
            digest.update(modality.encode())
            digest.update(np.ascontiguousarray(pca.components_, dtype=np.float64).tobytes())
            digest.update(np.ascontiguousarray(pca.mean_, dtype=np.float64).tobytes())
        meta = table[[c for c in table.columns if str(c).startswith("Metadata_")]]
        joint_table(meta, model.transform(blocks)).to_parquet(out / name, index=False)
        summary[name] = {"modalities": list(blocks), "n_rows": len(table)}
    if (src / "skipped.parquet").is_file():
        shutil.copyfile(src / "skipped.parquet", out / "skipped.parquet")
    version = f"{embedded['model_version']}+joint{n_components}-{digest.hexdigest()[:8]}"
    (out / "model_version.txt").write_text(version)
    log.info("joint embedding (%d per modality): %s -> model version %s", n_components, summary, version)
    return {**embedded, "model_version": version, "joint": True, "joint_tables": summary}


def sphere_step(
    embeddings_dir: str,
    out_dir: str,
    *,
    control_column: str = "Metadata_Compound",
    control_value: str = "DMSO",
    batch_column: str = "Metadata_Plate",
) -> dict[str, Any]:
    """Sphere image profiles on negative controls per batch; without controls, on all images (stated)."""
    from microsnoop.postprocess.sphere import SphereConfig, apply_sphering, fit_sphering

    df = pd.read_parquet(Path(embeddings_dir) / "embeddings.parquet")
    fit_on = "controls per batch"
    if control_column not in df.columns or not (df[control_column].astype(str) == control_value).any():
        df, control_column, control_value, fit_on = (
            df.assign(Metadata_SphereFit="all"),
            "Metadata_SphereFit",
            "all",
            "all rows",
        )
    per_batch = batch_column in df.columns
    config = SphereConfig(
        control_column=control_column,
        control_value=control_value,
        batch_column=batch_column if per_batch else None,
        scope="auto" if per_batch else "global",  # auto: per batch, centred per batch, or global by control counts
        missing_controls="global",
    )
    fitted = fit_sphering(df, config)
    sphered = apply_sphering(df, fitted).drop(columns=["Metadata_SphereFit"], errors="ignore")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sphered.to_parquet(out / "embeddings.parquet", index=False)
    return {"fit_on": fit_on, "scope": fitted.config.scope, "scope_reason": fitted.scope_reason, "n_rows": len(sphered)}


def evaluate_profiles_step(
    profiles_dir: str,
    out_dir: str,
    *,
    label_column: str = "Metadata_Label",
    k: int = 1,
    settings: PlatformSettings | None = None,
) -> dict[str, Any]:
    """Leave-one-out kNN accuracy (cosine) of a label column with its 95 % interval; archived and logged."""
    from microsnoop.evaluate.classification import knn_loo_scores
    from microsnoop.postprocess.sphere import feature_columns

    settings = settings_or_env(settings)
    df = pd.read_parquet(Path(profiles_dir) / "embeddings.parquet")
    if label_column not in df.columns:
        raise ValueError(
            f"evaluate: no column {label_column!r} in {profiles_dir}; give --label-column one of "
            f"{[c for c in df.columns if c.startswith('Metadata_')]}"
        )
    x = df[feature_columns(df)].to_numpy(np.float64)
    scores = knn_loo_scores(x, df[label_column].astype(str).to_numpy(), k=k, n_boot=200)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "scores.json").write_text(json.dumps(scores, indent=2, default=str))
    archive_files([out / "scores.json"], kind="reports", manifest=f"scores-{content_digest(df)}", settings=settings)
    _log_scores(settings, {"label_column": label_column, "source": profiles_dir, "scores": scores})
    return {
        "knn_accuracy": float(scores["accuracy"]),
        "ci95": list(scores["accuracy_ci95"]),
        "majority_share": float(df[label_column].value_counts(normalize=True).iloc[0]),
        "n": len(df),
    }


def _log_scores(settings: PlatformSettings, report: dict[str, Any]) -> None:
    """Profiling scores to MLflow (experiment microsnoop-profiling); a registry outage only warns."""
    from services.tracking import log_benchmark

    try:
        log_benchmark(settings, report, experiment="microsnoop-profiling", run_name=f"knn {report['label_column']}")
    except Exception as exc:  # noqa: BLE001 - scores are already on disk; tracking is best effort here
        log.warning("profiling scores not logged to MLflow: %s", exc)


def publish_step(
    embeddings_dir: str,
    *,
    model_version: str,
    sphered_dir: str = "",
    replace: bool = False,
    centre: bool = True,
    settings: PlatformSettings | None = None,
) -> dict[str, Any]:
    """Upsert (or with replace, swap in) image, cell and treatment embeddings of a model version, then apply Feast.

    With ``centre`` (the default) image and cell vectors are published centred on their model version's
    centre (fitted on its first publish, refitted with ``replace``) so distances are readable; the raw
    vectors stay in ``embeddings_dir``. Treatment profiles are sphered already and go in as they are.
    """
    from microsnoop.postprocess.aggregate import per_treatment
    from microsnoop.stream import read_embeddings
    from services.featurestore.centering import centre_table
    from services.featurestore.feast_repo import apply_feature_repo
    from services.featurestore.schema import feature_columns_of
    from services.featurestore.store import FeatureStore

    settings = settings_or_env(settings)
    out: dict[str, Any] = {}
    images, run = read_embeddings(Path(embeddings_dir) / "embeddings.parquet")
    levels = (run.get("contract") or {}).get("intensity_levels") or ()  # a dataset intensity scale, if embedded on one
    cells_path = Path(embeddings_dir) / "cells.parquet"
    sphered = pd.read_parquet(Path(sphered_dir) / "embeddings.parquet") if sphered_dir else None
    with FeatureStore.from_settings(settings) as store:

        def readable(level: str, table: pd.DataFrame) -> pd.DataFrame:
            if not centre:
                return table
            cols = feature_columns_of(table, None)
            fitted = store.centre(level, model_version, table[cols].to_numpy(), refit=replace)
            return centre_table(table, cols, fitted) if fitted is not None else table

        out["image"] = store.publish(
            "image", readable("image", images), model_version=model_version, replace=replace, intensity_levels=levels
        ).total
        if cells_path.is_file():
            cells = pd.read_parquet(cells_path)
            if len(cells):
                out["cell"] = store.publish(
                    "cell",
                    readable("cell", cells),
                    model_version=model_version,
                    replace=replace,
                    intensity_levels=levels,
                ).total
        if sphered is not None and {"Metadata_Compound", "Metadata_Concentration"} <= set(sphered.columns):
            treatments = per_treatment(sphered)
            out["treatment"] = store.publish(
                "treatment", treatments, model_version=model_version, replace=replace
            ).total
        out["counts"] = store.counts()
    out["feast_repo"] = str(apply_feature_repo(settings))  # definitions applied, online store materialised
    return out
