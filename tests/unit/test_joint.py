"""Joint multi-modal embeddings: PCA per modality, balanced, concatenated; scored against each modality alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from microsnoop.cli import app
from microsnoop.errors import ConfigError, ManifestError
from microsnoop.evaluate.clustering import cluster_scores, evaluate_joint, joint_markdown
from microsnoop.postprocess.joint import (
    JointConfig,
    JointEmbedding,
    blocks_from_tables,
    channel_blocks,
    joint_from_embeddings,
)


def _two_views(n_per: int = 40, seed: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Four classes; view 'a' only tells {0,1} from {2,3}, view 'b' only {0,2} from {1,3}: only both tell all."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(4), n_per)
    a = rng.normal(0, 1, (len(y), 24))
    b = rng.normal(0, 1, (len(y), 40)) * 5  # a larger spread: without balancing it would dominate
    a[:, 0] += np.where(y >= 2, 6.0, 0.0)
    b[:, 0] += np.where(y % 2 == 1, 30.0, 0.0)
    return {"a": a, "b": b}, y.astype(str)


def test_each_reduced_block_has_unit_variance_and_the_joint_concatenates_them() -> None:
    blocks, _ = _two_views()
    model = JointEmbedding(JointConfig(n_components=5)).fit(blocks)
    reduced = model.transform_blocks(blocks)
    assert {k: v.shape for k, v in reduced.items()} == {"a": (160, 5), "b": (160, 5)}
    for x in reduced.values():
        assert x.var(axis=0, ddof=1).sum() == pytest.approx(1.0, rel=1e-4)
    np.testing.assert_allclose(model.transform(blocks), np.concatenate([reduced["a"], reduced["b"]], axis=1))
    unbalanced = JointEmbedding(JointConfig(n_components=5, balance=False)).fit_transform(blocks)
    assert unbalanced[:, 5:].var() > 10 * unbalanced[:, :5].var()


def test_the_joint_finds_classes_no_single_modality_can() -> None:
    blocks, y = _two_views()
    scores = evaluate_joint(blocks, y, config=JointConfig(n_components=4), n_boot=50)
    alone = [s["ari"] for name, s in scores.items() if name.startswith(("a ", "b "))]
    joint = next(s for name, s in scores.items() if name.startswith("joint"))
    assert joint["ari"] > 0.9 and max(alone) < 0.6
    assert joint["silhouette"] > max(s["silhouette"] for name, s in scores.items() if name.startswith(("a ", "b ")))
    assert "| joint (2 x PCA 4) |" in joint_markdown({"toy": scores})


def test_bad_blocks_and_settings_say_what_to_change() -> None:
    blocks, y = _two_views(n_per=3)
    with pytest.raises(ConfigError, match="at most 12 components, not 20; lower --n-components"):
        JointEmbedding(JointConfig(n_components=20)).fit(blocks)
    with pytest.raises(ConfigError, match="same samples"):
        JointEmbedding().fit({"a": np.zeros((5, 3)), "b": np.zeros((6, 3))})
    with pytest.raises(ConfigError, match="not fitted"):
        JointEmbedding().transform(blocks)
    with pytest.raises(ConfigError, match="at least 2 labels"):
        cluster_scores(np.zeros((5, 2)), np.array(["x"] * 5))


def test_channel_blocks_and_tables_joined_on_ids() -> None:
    table = pd.DataFrame({"Metadata_ImageID": ["i", "j"], "ch0_000": [1, 2], "ch0_001": [3, 4], "ch1_000": [5, 6]})
    blocks = channel_blocks(table, ["dna", "bf"])
    assert list(blocks) == ["dna", "bf"] and blocks["dna"].shape == (2, 2) and blocks["bf"].tolist() == [[5], [6]]
    with pytest.raises(ConfigError, match="one per channel"):
        channel_blocks(table, ["dna"])
    with pytest.raises(ManifestError, match="no ch"):
        channel_blocks(table[["Metadata_ImageID"]])
    one = pd.DataFrame({"Metadata_ImageID": ["x", "y", "z"], "Metadata_Label": ["p", "q", "r"], "f": [1.0, 2.0, 3.0]})
    two = pd.DataFrame({"Metadata_ImageID": ["z", "x"], "g": [30.0, 10.0]})  # other order, one sample missing
    meta, joined = blocks_from_tables({"one": one, "two": two})
    assert list(meta["Metadata_ImageID"]) == ["x", "z"] and list(meta["Metadata_Label"]) == ["p", "r"]
    assert joined["one"].ravel().tolist() == [1.0, 3.0] and joined["two"].ravel().tolist() == [10.0, 30.0]
    with pytest.raises(ManifestError, match="repeats ids"):
        blocks_from_tables({"one": pd.concat([one, one])})


def test_cli_joint_writes_the_table_and_the_comparison(tmp_path: Path) -> None:
    blocks, y = _two_views(n_per=20)
    table = pd.DataFrame({"Metadata_ImageID": [f"c{i}" for i in range(len(y))], "Metadata_Label": y})
    for c, x in enumerate(blocks.values()):
        table = pd.concat([table, pd.DataFrame(x, columns=[f"ch{c}_{k:03d}" for k in range(x.shape[1])])], axis=1)
    table.to_parquet(tmp_path / "emb.parquet")
    args = ["joint", str(tmp_path / "emb.parquet"), "--out", str(tmp_path / "joint.parquet"), "--n-components", "3"]
    result = CliRunner().invoke(app, [*args, "--names", "x,y", "--label", "Metadata_Label", "--n-boot", "20"])
    assert result.exit_code == 0, result.output
    out = pd.read_parquet(tmp_path / "joint.parquet")
    assert out.shape == (80, 2 + 6) and list(out.columns[-6:]) == [f"joint_{k:03d}" for k in range(6)]
    assert "| joint | x (PCA 3) |" in (tmp_path / "joint.md").read_text()
    assert (tmp_path / "joint.json").is_file()
    bad = CliRunner().invoke(app, [*args, "--label", "Metadata_Nope"])
    assert bad.exit_code == 2 and "no column 'Metadata_Nope'" in bad.output


def test_joint_from_an_omezarr_style_table_names_modalities_by_channel() -> None:
    blocks, y = _two_views(n_per=10)
    table = pd.DataFrame({"Metadata_ImageID": [f"c{i}" for i in range(len(y))], "Metadata_Channels": "DAPI|Actin"})
    for c, x in enumerate(blocks.values()):
        table = pd.concat([table, pd.DataFrame(x, columns=[f"ch{c}_{k:03d}" for k in range(x.shape[1])])], axis=1)
    out = joint_from_embeddings(table, JointConfig(n_components=2))
    assert out.shape == (40, 2 + 4) and out["Metadata_ImageID"].tolist() == table["Metadata_ImageID"].tolist()
    expected = JointEmbedding(JointConfig(n_components=2)).fit_transform(channel_blocks(table, ["DAPI", "Actin"]))
    np.testing.assert_allclose(out.filter(like="joint_").to_numpy(), expected)
