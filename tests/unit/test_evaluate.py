"""Evaluation protocols on hand-worked examples and against scikit-learn."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score

from microsnoop.evaluate.classification import (
    bootstrap_ci,
    classification_scores,
    knn_predict_split,
    mlp_predict_cv,
    scores_with_intervals,
)
from microsnoop.evaluate.moa import moa_accuracy, treatment_batch
from microsnoop.evaluate.retrieval import mean_ci95, retrieval_map


def test_classification_scores_by_hand() -> None:
    y_true = np.array(["a", "a", "b", "b", "c"])
    y_pred = np.array(["a", "b", "b", "b", "a"])
    s = classification_scores(y_true, y_pred)
    assert s["accuracy"] == pytest.approx(3 / 5)
    # F1: a = 2*1*0.5/(1.5) = 2/3 (precision 1/2, recall 1/2 -> 1/2); b = 2*(2/3)*1/(5/3) = 0.8; c = 0
    assert s["per_class_f1"] == pytest.approx({"a": 0.5, "b": 0.8, "c": 0.0})
    assert s["macro_f1"] == pytest.approx((0.5 + 0.8) / 3)
    assert s["macro_f1"] == pytest.approx(f1_score(y_true, y_pred, average="macro"))
    assert s["confusion"] == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]


def test_bootstrap_interval_brackets_the_score() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    pred = np.where(rng.random(300) < 0.7, y, (y + 1) % 3)
    lo, hi = bootstrap_ci(y, pred, lambda a, b: float(np.mean(a == b)), n_boot=500)
    acc = float(np.mean(y == pred))
    assert lo < acc < hi and hi - lo < 0.15
    assert bootstrap_ci(y, y, lambda a, b: float(np.mean(a == b)), n_boot=50) == (1.0, 1.0)
    assert set(scores_with_intervals(y, pred, n_boot=50)) >= {"accuracy_ci95", "macro_f1_ci95"}


def test_knn_split_and_mlp_cv() -> None:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 8)) * 3
    y = np.repeat([0, 1, 2], 30)
    x = centres[y] + rng.normal(size=(90, 8)) * 0.5
    assert (knn_predict_split(x[::2], y[::2], x[1::2], k=3) == y[1::2]).mean() > 0.95
    assert (mlp_predict_cv(x, y, folds=5) == y).mean() > 0.9


def _treatments() -> pd.DataFrame:
    # Two MoAs; compound c3 is the only other compound of M1 and sits in batch B2.
    rows = [
        ("c1", "M1", "B1", [1.0, 0.0]),
        ("c1", "M1", "B1", [0.99, 0.05]),  # same compound: excluded by NSC
        ("c2", "M2", "B1", [0.9, 0.1]),  # nearest other compound of c1, same batch, wrong MoA
        ("c3", "M1", "B2", [0.7, 0.3]),  # right MoA, other batch
        ("c4", "M2", "B2", [0.0, 1.0]),
        ("c5", "M3", "B1", [-1.0, 0.0]),
        ("c6", "M3", "B1", [-1.0, 0.1]),
    ]
    return pd.DataFrame(
        {
            "Metadata_Compound": [r[0] for r in rows],
            "Metadata_MoA": [r[1] for r in rows],
            "Metadata_Batch": [r[2] for r in rows],
            "f0": [r[3][0] for r in rows],
            "f1": [r[3][1] for r in rows],
        }
    )


def test_nsc_and_nscb_exclusion_rules_on_a_constructed_table() -> None:
    out = moa_accuracy(_treatments(), ["f0", "f1"])
    # NSC: c1 rows -> c2 (M2, wrong); c2 -> c1 (M1, wrong); c3 -> c2 (wrong); c4 -> c3 (wrong);
    # c5 -> c6 (right); c6 -> c5 (right).
    assert out["nsc_hits"] == [False, False, False, False, False, True, True]
    assert out["nsc"] == pytest.approx(2 / 7)
    # NSCB drops M3 (one batch only). c1 rows -> c3 (other batch, M1: right); c2 -> c3 (wrong);
    # c3 -> c2 (wrong); c4 -> c2 (right).
    assert out["nscb_dropped_moas"] == ["M3"] and out["nscb_queries"] == 5
    assert out["nscb_hits"] == [True, True, False, False, True]
    assert out["nscb"] == pytest.approx(3 / 5)


def test_treatment_batch_is_the_most_common() -> None:
    wells = pd.DataFrame({"c": ["x", "x", "x", "y"], "b": ["W1", "W2", "W2", "W3"]})
    assert treatment_batch(wells, by=["c"], batch="b").to_dict() == {"x": "W2", "y": "W3"}


def test_replicate_map_with_copairs_by_hand() -> None:
    # Two compounds with 2 replicates each and 2 controls; perfect separation gives AP = 1 for each.
    df = pd.DataFrame(
        {
            "Metadata_Compound": ["a", "a", "b", "b", "DMSO", "DMSO"],
            "f0": [1.0, 0.95, 0.0, 0.05, 0.7, 0.6],
            "f1": [0.0, 0.05, 1.0, 0.95, 0.7, 0.8],
        }
    )
    treated = df[df.Metadata_Compound != "DMSO"].reset_index(drop=True)
    out = retrieval_map(
        treated, ["f0", "f1"], pos_sameby=["Metadata_Compound"], neg_diffby=["Metadata_Compound"], null_size=100
    )
    assert out["mean_ap"] == pytest.approx(1.0) and out["n_queries"] == 4
    swapped = treated.assign(f0=[1.0, 0.0, 0.95, 0.05], f1=[0.0, 1.0, 0.05, 0.95])
    # a1=[1,0], a2=[0,1]: each a's replicate (cosine 0) ranks after both b's -> AP 1/3.
    # b1, b2 (cosine 0.105 to each other) rank one a above and one below their replicate -> AP 1/2.
    mixed = retrieval_map(
        swapped, ["f0", "f1"], pos_sameby=["Metadata_Compound"], neg_diffby=["Metadata_Compound"], null_size=100
    )
    assert mixed["mean_ap"] == pytest.approx(5 / 12)
    # Query APs are 1/3, 1/3, 1/2, 1/2: the bootstrap interval of their mean lies within [1/3, 1/2] and is not a point.
    lo, hi = mixed["mean_ap_ci95"]
    assert 1 / 3 - 1e-9 <= lo < 5 / 12 < hi <= 1 / 2 + 1e-9


def test_mean_ci95_matches_a_direct_bootstrap() -> None:
    values = np.array([0.0, 1.0, 0.5, 0.25, 0.75])
    rng = np.random.default_rng(3)
    means = [values[rng.integers(0, 5, 5)].mean() for _ in range(400)]
    assert mean_ci95(values, n_boot=400, seed=3) == pytest.approx(tuple(np.quantile(means, [0.025, 0.975])))
    with pytest.raises(ValueError, match="no values"):
        mean_ci95(np.array([]))


@pytest.mark.parametrize("n", [1, 3, pytest.param(12, marks=pytest.mark.slow)])  # 12 points: UMAP, a numba JIT
def test_plot_map_handles_a_handful_of_points(n: int, tmp_path: Path) -> None:
    from microsnoop.evaluate.report import plot_map

    rng = np.random.default_rng(0)
    out = plot_map(rng.random((n, 8)), np.array(["a", "b"] * 6)[:n], tmp_path / "map.png", title="t")
    assert out.stat().st_size > 0
