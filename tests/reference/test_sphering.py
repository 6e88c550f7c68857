"""Issue 12, items 2 and 3: the sphering scope is chosen by rule, and the knee regulariser is the reference's.

Hand-worked from the method (ZCA-corr sphering, ``reg = knee eigenvalue / 10``; the knee by kneedle with
S = 1 on the convex, decreasing spectrum, as ``kneed`` computes it) and from the count of controls.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from microsnoop.postprocess.sphere import (
    FewControlsWarning,
    SphereConfig,
    ZCACorr,
    apply_sphering,
    choose_scope,
    fit_sphering,
    knee_value,
)

SPECTRUM = np.array([10.0, 5.0, 1.0, 0.5, 0.4, 0.3, 0.2, 0.1])


def test_knee_of_a_hand_worked_spectrum() -> None:
    # Kneedle: x_i = i / 7, y_i = (T_i - 0.1) / 9.9, difference d_i = (1 - y_i) - x_i:
    # d = 0, 0.362, 0.623, 0.531, 0.398, ... -> maximum at i = 2; threshold 0.623 - 1/7 = 0.480 is crossed
    # at i = 4 before any higher maximum, so the knee is i = 2: T = 1.0.
    assert knee_value(SPECTRUM) == 1.0


def test_reference_knee_counts_the_null_space() -> None:
    # The reference passes every eigenvalue, zeros of a rank-deficient matrix included. With 20 zeros:
    # x_i = i / 27, y_i = T_i / 10, d_i = 1 - T_i / 10 - i / 27: 0, 0.463, 0.826, 0.839, 0.812, 0.785, ...
    # maximum at i = 3 (T = 0.5); threshold 0.839 - 1/27 = 0.802 is crossed at i = 5: the knee is 0.5.
    padded = np.r_[SPECTRUM, np.zeros(20)]
    assert knee_value(padded) == 0.5
    assert knee_value(padded, spectrum="nonzero") == 1.0  # the option: leave the null space out


def test_flat_spectrum_has_no_knee_and_whitens_the_span() -> None:
    assert knee_value(np.ones(5)) == 1.0  # no knee: the smallest non-zero eigenvalue (exact whitening)
    assert knee_value(np.array([3.0, 0.0])) == 3.0


def test_fitted_reg_is_knee_over_ten() -> None:
    # Orthogonal, zero-mean columns: R = I exactly, eigenvalues (1, 1), flat -> no knee -> reg = 1 / 10.
    x = np.array([[1.0, 1.0], [-1.0, -1.0], [1.0, -1.0], [-1.0, 1.0]])
    assert ZCACorr.fit(x).reg == pytest.approx(0.1)


def _plates(controls_per_plate: int, n_features: int) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    rows = []
    for plate in ("P1", "P2"):
        for compound, n in (("DMSO", controls_per_plate), ("drug", 3)):
            for v in rng.normal(size=(n, n_features)):
                rows.append(
                    {
                        "Metadata_Plate": plate,
                        "Metadata_Compound": compound,
                        **{f"f{i}": v[i] for i in range(n_features)},
                    }
                )
    return pd.DataFrame(rows)


@pytest.mark.parametrize(
    ("controls", "features", "expected"),
    [
        (6, 516, "centred"),  # the BBBC021 profiles: 6 DMSO wells per plate for 516 features
        (7, 4, "centred"),  # 7 < 2 x 4, but enough to centre each plate on
        (8, 4, "batch"),  # exactly 2 controls per feature in every batch
        (2, 4, "global"),  # too few to centre a plate on
    ],
)
def test_auto_scope_rule(controls: int, features: int, expected: str) -> None:
    df = _plates(controls, features)
    scope, reason = choose_scope(df, SphereConfig(), [c for c in df if c.startswith("f")])
    assert scope == expected
    assert reason.startswith(f"auto -> {expected}")


def test_auto_is_the_default_and_the_choice_is_reported() -> None:
    df = _plates(6, 20)
    with pytest.warns(FewControlsWarning):  # 12 controls for 20 features even pooled
        fitted = fit_sphering(df, SphereConfig())
    assert fitted.config.scope == "centred" and sorted(fitted.transforms) == ["P1", "P2"]
    assert "batch 'P1' has 6 controls, fewer than 2 x 20 features" in fitted.scope_reason
    with pytest.warns(FewControlsWarning):
        assert list(fit_sphering(df, SphereConfig(scope="global")).transforms) == ["__global__"]
    with pytest.warns(FewControlsWarning) as caught:
        both = fit_sphering(df, SphereConfig(scope="batch"))  # per batch stays reachable
    assert any("knee of the full spectrum lies in the null space" in str(w.message) for w in caught)
    assert sorted(both.transforms) == ["P1", "P2"] and both.scope_reason == "batch (as asked)"


def test_centred_scope_removes_plate_offsets_and_whitens_the_pooled_controls() -> None:
    rng = np.random.default_rng(3)
    mix = rng.normal(size=(4, 4))
    frames = []
    for p, offset in enumerate((0.0, 50.0, -20.0)):
        x = rng.normal(size=(30, 4)) @ mix + offset  # correlated features, a large plate effect
        frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(4)])
        frame.insert(0, "Metadata_Plate", f"P{p}")
        frame.insert(1, "Metadata_Compound", ["DMSO"] * 10 + ["drug"] * 20)
        frames.append(frame)
    df = pd.concat(frames, ignore_index=True)
    fitted = fit_sphering(df, SphereConfig(scope="centred", reg=1e-9))
    assert sorted(fitted.transforms) == ["P0", "P1", "P2"]
    out = apply_sphering(df, fitted)
    controls = out[out["Metadata_Compound"] == "DMSO"]
    feats = [f"f{i}" for i in range(4)]
    for _, plate in controls.groupby("Metadata_Plate"):
        np.testing.assert_allclose(plate[feats].mean().to_numpy(), 0.0, atol=1e-8)  # each plate on its controls
    np.testing.assert_allclose(np.corrcoef(controls[feats].to_numpy(), rowvar=False), np.eye(4), atol=1e-6)
    global_fit = apply_sphering(df, fit_sphering(df, SphereConfig(scope="global", reg=1e-9)))
    spread = global_fit[global_fit["Metadata_Compound"] == "DMSO"].groupby("Metadata_Plate")[feats].mean()
    assert spread.abs().to_numpy().max() > 0.5, "a global fit leaves the plate offsets in place"
