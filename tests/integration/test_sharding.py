"""Sharded profiling: the compiled fan-out, and shard tasks run one by one equal the unsharded steps.

``kfp.local`` does run ``dsl.ParallelFor`` (the slow pipeline test runs the profiling pipeline with
``n_shards=2`` through it); here the shard steps are called one by one, in a shuffled order, on the same
staged demo fields as the unsharded segment and embed steps, so that the comparison is exact and fast.
The compiled IR is checked for the fan-out itself (loop over the shard plan, parallelism limit,
per-shard retries, the merge collecting every iteration).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from pipelines.runner import compile_pipelines
from services.settings import PlatformSettings
from services.sharding import (
    ShardError,
    embed_shard_step,
    merge_shards_step,
    plan_shards,
    segment_shard_step,
    shard_of,
    shard_step,
)
from services.staging import manifest_name, stage_source_step
from services.steps import embed_step, segment_step
from tests.integration._data import tiny_fields

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
MODEL = str(REPO / "models" / "microsnoop-cpu-v1.pt")


def test_compiled_profiling_fans_out_over_the_shard_plan(tmp_path: Path) -> None:
    settings = replace(PlatformSettings(), shard_parallelism=3, gpu_limit=1)
    (path,) = compile_pipelines(settings, tmp_path, ["profiling"])
    spec = next(yaml.safe_load_all(path.read_text()))
    root = spec["root"]["dag"]["tasks"]
    loops = [name for name, task in root.items() if name.startswith("for-loop")]
    assert len(loops) == 1, sorted(root)
    loop = root[loops[0]]
    assert loop["iteratorPolicy"] == {"parallelismLimit": 3}
    assert loop["parameterIterator"]["items"]["inputParameter"].endswith("shard-images-Output")
    assert loop["dependentTasks"] == ["shard-images", "stage-images"]
    body = spec["components"][loop["componentRef"]["name"]]["dag"]["tasks"]
    assert set(body) == {"segment", "embed"}
    for name in ("segment", "embed"):  # a failing shard is retried alone: the policy sits on the loop's tasks
        assert body[name]["retryPolicy"]["maxRetryCount"] == 2
    assert body["embed"]["dependentTasks"] == ["segment"]
    merge = root["merge-shards"]
    assert merge["dependentTasks"] == sorted([loops[0], "shard-images"])
    collected = merge["inputs"]["artifacts"]["shards"]["taskOutputArtifact"]
    assert collected == {"outputArtifactKey": "pipelinechannel--embed-embeddings", "producerTask": loops[0]}
    assert root["joint"]["inputs"]["artifacts"]["embeddings"]["taskOutputArtifact"]["producerTask"] == "merge-shards"
    assert root["sphere"]["inputs"]["artifacts"]["embeddings"]["taskOutputArtifact"]["producerTask"] == "joint"
    assert (
        root["publish-features"]["inputs"]["parameters"]["embedded"]["taskOutputParameter"]["producerTask"] == "joint"
    )
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert params["zarr_level"]["defaultValue"] == 0 and params["joint_components"]["defaultValue"] == 0
    assert params["intensity"]["defaultValue"] == "crop"
    for task in (root["shard-images"], body["embed"]):  # the plan fits dataset levels once; every shard uses them
        assert task["inputs"]["parameters"]["intensity"]["componentInputParameter"].endswith("intensity")
    stage = root["stage-images"]["inputs"]["parameters"]["zarr_level"]
    assert stage["componentInputParameter"] == "zarr_level"
    gpu = spec["deploymentSpec"]["executors"]["exec-embed"]["container"]["resources"]["accelerator"]
    assert (gpu["resourceType"], gpu["resourceCount"]) == ("nvidia.com/gpu", "1")
    assert "accelerator" not in str(spec["deploymentSpec"]["executors"]["exec-segment"])


@pytest.fixture(scope="module")
def staged(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, PlatformSettings]:
    """Six demo fields staged into a fresh file store (no PostgreSQL needed)."""
    root = tmp_path_factory.mktemp("shards")
    settings = PlatformSettings().with_data_dir(root / "platform")
    stage_source_step(str(tiny_fields(root, n=6)), str(root / "staged"), settings=settings)
    return root / "staged", settings


def test_the_split_is_content_keyed_and_order_free(staged: tuple[Path, PlatformSettings], tmp_path: Path) -> None:
    folder, _ = staged
    plan = plan_shards(str(folder), 3)
    assert sum(s["n_images"] for s in plan) == 6 and [s["index"] for s in plan] == sorted(s["index"] for s in plan)
    shuffled = tmp_path / "shuffled"
    shuffled.mkdir()
    (shuffled / "images").symlink_to(folder / "images")
    pd.read_csv(folder / "source.csv").iloc[::-1].to_csv(shuffled / "source.csv", index=False)
    assert plan_shards(str(shuffled), 3) == plan  # same rows in another order: same shards, same keys
    relabelled = pd.read_csv(folder / "source.csv")
    relabelled.loc[0, "Metadata_Label"] = "changed"
    relabelled.to_csv(shuffled / "source.csv", index=False)
    changed = {s["key"] for s in plan_shards(str(shuffled), 3)} ^ {s["key"] for s in plan}
    assert len(changed) == 2  # only the shard holding the changed row gets a new key
    assert shard_of("f" * 64, 7) == int("f" * 16, 16) % 7
    with pytest.raises(ShardError, match="n_shards must be between"):
        plan_shards(str(folder), 0)


def _sharded(
    folder: Path, out: Path, settings: PlatformSettings, mode: str, model: str = MODEL, intensity: str = "crop"
) -> tuple[list[dict], list[str], list]:
    plan = shard_step(str(folder), 3, intensity=intensity, model_ref=model, settings=settings)
    dirs, results = [], []
    for shard in reversed(plan):  # any order: the merge goes by key
        seg, emb = out / f"seg{shard['index']}", out / f"emb{shard['index']}"
        results.append(segment_shard_step(str(folder), str(seg), shard=shard, settings=settings))
        results.append(
            embed_shard_step(
                str(seg), str(emb), shard=shard, model_ref=model, mode=mode, intensity=intensity, settings=settings
            )
        )
        dirs.append(str(emb))
    return plan, dirs, results


def _features(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if not c.startswith("Metadata_") and c not in ("path", "mask_path")]


@pytest.mark.parametrize("mode", ["rescale", pytest.param("cell-region", marks=pytest.mark.slow)])
def test_sharded_result_equals_the_unsharded_one(
    staged: tuple[Path, PlatformSettings], tmp_path: Path, mode: str
) -> None:
    folder, settings = staged
    if mode == "cell-region":  # every cell is embedded: two fields (~90 cells) keep it to minutes on 2 cores
        two = tmp_path / "two"
        stage_source_step(str(tiny_fields(tmp_path, n=2)), str(two), settings=settings)
        folder = two
    segment_step(str(folder), str(tmp_path / "seg"), settings=settings)
    embed_step(str(tmp_path / "seg"), str(tmp_path / "whole"), model_ref=MODEL, mode=mode, settings=settings)
    plan, dirs, _ = _sharded(folder, tmp_path, settings, mode)
    summary = merge_shards_step(dirs, str(tmp_path / "merged"), plan=plan)
    assert summary["n_images"] == len(pd.read_csv(folder / "source.csv")) and summary["n_shards"] == len(plan)
    names = ["embeddings.parquet"] + (["cells.parquet"] if mode == "cell-region" else [])
    for name in names:
        whole = pd.read_parquet(tmp_path / "whole" / name)
        merged = pd.read_parquet(tmp_path / "merged" / name)
        keys = ["Metadata_ImageID"] + (["Metadata_CellLabel"] if name == "cells.parquet" else [])
        whole = whole.sort_values(keys).reset_index(drop=True)
        assert list(merged.columns) == list(whole.columns)
        meta = [c for c in whole.columns if c.startswith("Metadata_")]
        pd.testing.assert_frame_equal(merged[meta], whole[meta])
        feats = _features(whole)
        assert len(feats) >= 256
        # Same images through the same network; a shard's batches differ, so allow float32 round-off.
        np.testing.assert_allclose(merged[feats].to_numpy(), whole[feats].to_numpy(), rtol=0, atol=2e-5)
    assert (tmp_path / "merged" / "model_version.txt").read_text() == (
        tmp_path / "whole" / "model_version.txt"
    ).read_text()


def test_shards_agree_for_a_checkpoint_that_asks_for_a_dataset_scale(
    staged: tuple[Path, PlatformSettings], tmp_path: Path
) -> None:
    """v1.1 stores intensity='dataset'; the platform embeds per crop (EMBED_INTENSITY) until the levels are fitted
    before the fan-out and stored with the version, else every shard would fit levels of its own."""
    folder, settings = staged
    shipped = str(REPO / "models" / "microsnoop-cpu-v1.1.pt")
    segment_step(str(folder), str(tmp_path / "seg"), settings=settings)
    embed_step(str(tmp_path / "seg"), str(tmp_path / "whole"), model_ref=shipped, mode="rescale", settings=settings)
    assert json.loads((tmp_path / "whole" / "run.json").read_text())["contract"]["intensity"] == "crop"
    plan, dirs, _ = _sharded(folder, tmp_path, settings, "rescale", model=shipped)
    merge_shards_step(dirs, str(tmp_path / "merged"), plan=plan)
    whole = pd.read_parquet(tmp_path / "whole" / "embeddings.parquet").sort_values("Metadata_ImageID")
    merged = pd.read_parquet(tmp_path / "merged" / "embeddings.parquet")
    feats = _features(whole)
    np.testing.assert_allclose(merged[feats].to_numpy(), whole[feats].to_numpy(), rtol=0, atol=2e-5)


def test_sharded_embedding_on_one_dataset_scale_equals_the_unsharded_one(
    staged: tuple[Path, PlatformSettings], tmp_path: Path
) -> None:
    """intensity='dataset': the plan fits the levels once, every shard embeds with them, the merge keeps them
    (for publish) and the version names the scale; the result equals one run with the same levels."""
    from microsnoop.stream import levels_digest, read_embeddings

    folder, settings = staged
    plan, dirs, results = _sharded(folder, tmp_path, settings, "rescale", intensity="dataset")
    levels = plan[0]["intensity_levels"]
    assert levels and all(item["intensity_levels"] == levels for item in plan)
    summary = merge_shards_step(dirs, str(tmp_path / "merged"), plan=plan)
    assert summary["model_version"].endswith(f"+dataset-{levels_digest(levels)}")
    merged, run = read_embeddings(tmp_path / "merged" / "embeddings.parquet")
    assert run["contract"]["intensity"] == "dataset" and run["contract"]["intensity_levels"] == levels
    segment_step(str(folder), str(tmp_path / "seg"), settings=settings)
    whole = embed_step(
        str(tmp_path / "seg"), str(tmp_path / "whole"), model_ref=MODEL, mode="rescale", intensity="dataset",
        intensity_levels=levels, settings=settings,
    )  # fmt: skip
    assert whole["model_version"] == summary["model_version"]
    single = pd.read_parquet(tmp_path / "whole" / "embeddings.parquet").sort_values("Metadata_ImageID")
    feats = _features(single)
    np.testing.assert_allclose(merged[feats].to_numpy(), single[feats].to_numpy(), rtol=0, atol=2e-5)
    with pytest.raises(ShardError, match="no intensity levels"):
        embed_shard_step(str(tmp_path / "seg"), str(tmp_path / "x"), shard=plan_shards(str(folder), 3)[0],
                         model_ref=MODEL, mode="rescale", intensity="dataset", settings=settings)  # fmt: skip


def test_a_rerun_recomputes_only_the_missing_shard(staged: tuple[Path, PlatformSettings], tmp_path: Path) -> None:
    from services.storage import open_store

    folder, settings = staged
    plan, dirs, first = _sharded(folder, tmp_path / "a", settings, "rescale")
    merge_shards_step(dirs, str(tmp_path / "a" / "merged"), plan=plan)
    lost = plan[0]
    store = open_store(settings)
    version = first[1]["model_version"]
    for name in (f"shard-embeddings-{lost['key']}-{version}-rescale-rc1-g0",):
        path = Path(store.manifest_uri(manifest_name(name)).removeprefix("file://"))
        assert path.is_file(), path
        path.unlink()  # as if that shard's embed step had failed
    _, dirs2, second = _sharded(folder, tmp_path / "b", settings, "rescale")
    embeds = {r["shard"]: r["cached"] for r in second if "model_version" in r}
    segments = {r["shard"]: r["cached"] for r in second if "model_version" not in r}
    assert embeds == {s["index"]: s["key"] != lost["key"] for s in plan}
    assert all(segments.values())  # every segmentation was kept
    merge_shards_step(dirs2, str(tmp_path / "b" / "merged"), plan=plan)
    pd.testing.assert_frame_equal(
        pd.read_parquet(tmp_path / "a" / "merged" / "embeddings.parquet"),
        pd.read_parquet(tmp_path / "b" / "merged" / "embeddings.parquet"),
    )


def test_merge_refuses_missing_or_repeated_shards(staged: tuple[Path, PlatformSettings], tmp_path: Path) -> None:
    folder, settings = staged
    plan, dirs, _ = _sharded(folder, tmp_path, settings, "rescale")
    if len(plan) < 2:
        pytest.skip("the six demo fields fell into one shard")
    with pytest.raises(ShardError, match=rf"missing \['{plan[-1]['key']}'\].*re-run the missing shards"):
        merge_shards_step(dirs[1:], str(tmp_path / "m1"), plan=plan)
    with pytest.raises(ShardError, match="given twice"):
        merge_shards_step([*dirs, dirs[0]], str(tmp_path / "m2"), plan=plan)
