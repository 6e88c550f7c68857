"""Sphering and aggregation: the formula, identity on controls, bad batches, save/load, real data."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from microsnoop.postprocess.aggregate import aggregate, drop_empty, per_treatment, per_well
from microsnoop.postprocess.sphere import (
    FewControlsWarning,
    NoControlsError,
    SphereConfig,
    ZCACorr,
    apply_sphering,
    fit_sphering,
    knee_value,
    load_sphering,
    save_sphering,
)


def _table(
    rng: np.random.Generator, n_ctrl: int = 200, d: int = 6, plates: tuple[str, ...] = ("P1", "P2")
) -> pd.DataFrame:
    rows = []
    for p, plate in enumerate(plates):
        mix = rng.normal(size=(d, d))
        for comp, n in (("DMSO", n_ctrl), ("drug", 20)):
            x = rng.normal(size=(n, d)) @ mix + 3 * p + (2.0 if comp == "drug" else 0.0)
            for v in x:
                rows.append(
                    {
                        "Metadata_Plate": plate,
                        "Metadata_Compound": comp,
                        "Metadata_Concentration": 1.0,
                        **{f"f{i}": v[i] for i in range(d)},
                    }
                )
    return pd.DataFrame(rows)


def test_formula_against_direct_numpy() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 4)) @ rng.normal(size=(4, 4))
    t = ZCACorr.fit(x, reg=0.01)
    mu, var = x.mean(0), x.var(0, ddof=1)
    ev, g = np.linalg.eigh(np.corrcoef(x, rowvar=False))
    w = g @ np.diag(1 / np.sqrt(np.maximum(ev, 0.01))) @ g.T @ np.diag(1 / np.sqrt(np.maximum(var, 1e-3)))
    assert np.allclose(t.transform(x), (x - mu) @ w.T)


def test_controls_become_identity_per_plate() -> None:
    df = _table(np.random.default_rng(1))
    out = apply_sphering(df, fit_sphering(df, SphereConfig(reg=1e-6)))
    for _, rows in out[out.Metadata_Compound == "DMSO"].groupby("Metadata_Plate"):
        cov = np.cov(rows.filter(like="f").to_numpy(), rowvar=False)
        assert np.allclose(cov, np.eye(6), atol=1e-6)  # exact when controls >> features and reg is tiny
        assert np.allclose(rows.filter(like="f").mean(), 0, atol=1e-9)


def test_knee_regulariser_on_a_hand_made_spectrum() -> None:
    spectrum = np.array([10.0, 5.0, 1.0, 0.5, 0.4, 0.3, 0.2, 0.1])
    assert knee_value(spectrum) == 1.0  # farthest point from the chord of the normalised curve
    assert knee_value(np.r_[spectrum, np.zeros(20)], spectrum="nonzero") == 1.0  # null space left out
    assert knee_value(np.r_[spectrum, np.zeros(20)]) == 0.5  # reference: zeros are part of the curve


def test_few_controls_warn_and_stay_finite() -> None:
    df = _table(np.random.default_rng(2), n_ctrl=4, d=10)
    with pytest.warns(FewControlsWarning) as caught:
        fitted = fit_sphering(df, SphereConfig(scope="batch"))
    assert any("batch 'P1': 4 controls for 10 features" in str(w.message) for w in caught)
    assert np.isfinite(apply_sphering(df, fitted).filter(like="f").to_numpy()).all()


def test_batch_without_controls() -> None:
    df = _table(np.random.default_rng(3))
    df = df[~((df.Metadata_Plate == "P2") & (df.Metadata_Compound == "DMSO"))]
    with pytest.raises(NoControlsError, match="batch 'P2': 0 control rows .*scope='global'"):
        fit_sphering(df, SphereConfig(scope="batch"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fitted = fit_sphering(df, SphereConfig(scope="batch", missing_controls="global"))
    assert fitted.fallbacks == ["P2"] and any("no controls" in str(w.message) for w in caught)
    assert np.isfinite(apply_sphering(df, fitted).filter(like="f").to_numpy()).all()


def test_save_load_round_trip(tmp_path: Path) -> None:
    df = _table(np.random.default_rng(4))
    fitted = fit_sphering(df, SphereConfig())
    loaded = load_sphering(save_sphering(tmp_path / "s.npz", fitted))
    pd.testing.assert_frame_equal(apply_sphering(df, fitted), apply_sphering(df, loaded))
    assert loaded.config == fitted.config


def test_aggregation_counts_means_and_empty_images() -> None:
    df = pd.DataFrame(
        {
            "Metadata_Well": ["A", "A", "B", "B", "B"],
            "Metadata_Compound": ["x", "x", "y", "y", "y"],
            "Metadata_Concentration": [1, 1, 2, 2, 2],
            "Metadata_n_cells": [3, 5, 0, 2, 4],
            "f0": [1.0, 3.0, np.nan, 4.0, 8.0],
        }
    )
    kept, n_dropped = drop_empty(df)
    assert n_dropped == 1 and len(kept) == 4
    wells = aggregate(kept, ["Metadata_Well"], features=["f0"])
    assert wells["Metadata_n"].tolist() == [2, 2] and wells["f0"].tolist() == [2.0, 6.0]
    zeroed, n = drop_empty(df, empty="zero")
    assert n == 1 and zeroed.loc[2, "f0"] == 0.0
    assert per_treatment(kept)[["Metadata_Compound", "Metadata_n"]].values.tolist() == [["x", 2], ["y", 2]]


@pytest.mark.shared_data
@pytest.mark.slow
def test_bbbc021_profiles_controls_sphere_to_identity_on_their_span(shared_data: Path) -> None:
    df = pd.read_csv(shared_data / "bbbc021_profiles" / "bbbc021_well_profiles_annotated.csv.gz")
    feats = [c for c in df.columns if not c.startswith("Metadata_")]
    # Raw CellProfiler features have variances down to 1e-8, so the embedding-scale floor (1e-3) is off here.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FewControlsWarning)
        fitted = fit_sphering(df, SphereConfig(batch_column="Metadata_Batch", scope="batch", variance_floor=1e-12))
    out = apply_sphering(df, fitted)
    assert len(fitted.transforms) == 10
    raw = df[df.Metadata_Compound == "DMSO"]
    for batch, rows in out[out.Metadata_Compound == "DMSO"].groupby("Metadata_Batch"):
        n = len(rows)  # 18-36 controls for 516 features: the covariance has rank <= n - 1, never identity
        ev = np.sort(np.linalg.eigvalsh(np.cov(rows[feats].to_numpy(), rowvar=False)))[::-1]
        corr = np.nan_to_num(np.corrcoef(raw[raw.Metadata_Batch == batch][feats].to_numpy(), rowvar=False))
        t = np.sort(np.clip(np.linalg.eigvalsh(corr), 0, None))[::-1][: n - 1]
        expected = np.minimum(t / fitted.transforms[batch].reg, 1.0)
        # On the controls' span: whitened (eigenvalue 1) above the knee regulariser, shrunk by T/reg below it.
        assert np.allclose(ev[: n - 1], expected, atol=1e-6), batch
        assert (ev[: n - 1] >= 0.99).mean() >= 0.3, batch  # measured: 34-91 % of the span per batch
        assert np.all(ev[n:] < 1e-6), batch


@pytest.mark.shared_data
@pytest.mark.slow
def test_bbbc021_cells_per_plate_sphering_and_aggregation(shared_data: Path) -> None:
    from microsnoop.config import EncoderConfig, PreprocessContract
    from microsnoop.device import init_runtime
    from microsnoop.embed import embed_images
    from microsnoop.models.unet import MicrosnoopEncoder

    meta = pd.read_csv(shared_data / "bbbc021_cells" / "cells_small_200perwell.csv")
    rng = np.random.default_rng(0)
    picks = np.sort(
        np.concatenate(
            [
                rng.choice(idx, size=min(len(idx), 40 if comp == "DMSO" else 6), replace=False)
                for (_, _, comp), idx in meta.groupby(["plate", "well", "compound"]).indices.items()
            ]
        )
    )
    with np.load(shared_data / "bbbc021_cells" / "bbbc021_singlecell_small_200perwell.npz") as z:
        images = np.moveaxis(z["images"][picks], -1, 1)
    sub = meta.iloc[picks].reset_index(drop=True)
    encoder = MicrosnoopEncoder(EncoderConfig(depths=(8, 16, 32)))  # tiny: the pipeline, not the scores
    feats = embed_images(encoder, images, PreprocessContract(input_size=64), init_runtime(device="cpu"))
    df = pd.concat(
        [
            sub[["plate", "well", "compound", "concentration"]].set_axis(
                ["Metadata_Plate", "Metadata_Well", "Metadata_Compound", "Metadata_Concentration"], axis=1
            ),
            pd.DataFrame(feats, columns=[f"f{i}" for i in range(feats.shape[1])]),
        ],
        axis=1,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FewControlsWarning)
        fitted = fit_sphering(df, SphereConfig(scope="batch"))
    assert sorted(fitted.transforms) == sorted(df.Metadata_Plate.unique()) and len(fitted.transforms) == 6
    sphered = apply_sphering(df, fitted)
    wells, treatments = per_well(sphered), per_treatment(sphered)
    assert len(wells) == meta.groupby(["plate", "well"]).ngroups == 14
    assert len(treatments) == meta.groupby(["compound", "concentration"]).ngroups == 4
    assert treatments["Metadata_n"].sum() == len(df)
    dmso = sphered[sphered.Metadata_Compound == "DMSO"].filter(like="f").to_numpy()
    assert np.allclose(dmso.mean(0), 0, atol=1e-6)
