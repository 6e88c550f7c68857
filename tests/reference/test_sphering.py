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
        (6, 516, "global"),  # the BBBC021 profiles: 6 DMSO wells per plate for 516 features
        (7, 4, "global"),  # 7 < 2 x 4
        (8, 4, "batch"),  # exactly 2 controls per feature in every batch
    ],
)
def test_auto_scope_rule(controls: int, features: int, expected: str) -> None:
    df = _plates(controls, features)
    scope, reason = choose_scope(df, SphereConfig(), [c for c in df if c.startswith("f")])
    assert scope == expected
    assert reason.startswith(f"auto -> {expected}")


def test_auto_is_the_default_and_the_choice_is_reported() -> None:
    df = _plates(6, 20)
    with pytest.warns(FewControlsWarning):  # 12 controls for 20 features even globally
        fitted = fit_sphering(df, SphereConfig())
    assert fitted.config.scope == "global" and list(fitted.transforms) == ["__global__"]
    assert "batch 'P1' has 6 controls, fewer than 2 x 20 features" in fitted.scope_reason
    with pytest.warns(FewControlsWarning) as caught:
        both = fit_sphering(df, SphereConfig(scope="batch"))  # per batch stays reachable
    assert any("knee of the full spectrum lies in the null space" in str(w.message) for w in caught)
    assert sorted(both.transforms) == ["P1", "P2"] and both.scope_reason == "batch (as asked)"
