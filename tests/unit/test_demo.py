"""The demo job end to end on the shipped demo data (shortened), and the kNN report on real cells."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from microsnoop.demo import knn_report, run_demo


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path: Path, demo_data: Path) -> None:
    lines: list[str] = []
    summary = run_demo(
        out=tmp_path,
        data=demo_data,
        shipped=tmp_path / "no-shipped.pt",
        epochs=1,
        images_per_epoch=16,
        echo=lines.append,
    )
    assert set(summary["scores"]) == {"untrained", "demo (brief)"}
    for s in summary["scores"].values():
        assert s["n_cells"] == 244 and s["n_classes"] == 7 and 0.0 <= s["knn_accuracy"] <= 1.0
    assert Path(summary["figures"]["demo"]).stat().st_size > 10_000
    assert json.loads((tmp_path / "scores.json").read_text())["scores"].keys() == summary["scores"].keys()
    assert any("leave-one-out 11-NN accuracy" in line for line in lines)


@pytest.mark.slow
def test_untrained_encoder_is_above_chance_on_cell_cycle(demo_data: Path) -> None:
    cells = demo_data / "cellcycle"
    report = knn_report(cells / "cells.npz", cells / "cells.csv", k=11, device="cpu")
    majority_share = 40 / 244
    assert report["knn_accuracy"] > majority_share + 0.1
