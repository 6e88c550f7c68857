"""The learning-rate schedule matches the paper's formula at the issue's epochs."""

from __future__ import annotations

import math

import pytest

from microsnoop.pretrain.schedule import learning_rate


@pytest.mark.parametrize(
    ("epoch", "expected"),
    [
        (0, 0.0),
        (20, 5e-4),
        (40, 1e-3),
        (520, 1e-3 * 0.5 * (1 + math.cos(math.pi * 480 / 960))),  # = 5e-4, the cosine midpoint
        (999, 1e-3 * 0.5 * (1 + math.cos(math.pi * 959 / 960))),
    ],
)
def test_learning_rate_against_formula(epoch: int, expected: float) -> None:
    assert learning_rate(epoch, base_lr=1e-3, warmup_epochs=40, nepoch=1000) == pytest.approx(expected, abs=1e-12)


def test_midpoint_and_end_values_by_hand() -> None:
    assert learning_rate(520, base_lr=1e-3, warmup_epochs=40, nepoch=1000) == pytest.approx(5e-4)
    assert 0 < learning_rate(999, base_lr=1e-3, warmup_epochs=40, nepoch=1000) < 3e-9
