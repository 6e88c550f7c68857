"""The demo job end to end on the shipped demo data (a tiny network), and the kNN report on real cells."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from microsnoop.config import EncoderConfig, PreprocessContract, PretrainConfig
from microsnoop.demo import DemoConfig, knn_report, run_demo
from microsnoop.models.checkpoint import load_encoder
from microsnoop.models.factory import untrained_encoder

TINY = EncoderConfig(depths=(8, 16, 32))
SMALL = PreprocessContract(input_size=64)


def test_demo_runs_end_to_end_on_a_tiny_network(tmp_path: Path, demo_data: Path) -> None:
    train = PretrainConfig(nepoch=1, warmup_epochs=0, images_per_epoch=16, amp="off", encoder=TINY, preprocess=SMALL)
    lines: list[str] = []
    summary = run_demo(
        out=tmp_path,
        data=demo_data,
        shipped=tmp_path / "no-shipped.pt",
        config=DemoConfig(pretrain=train),
        echo=lines.append,
    )
    scores = summary["scores"]
    assert set(scores) == {"untrained", "demo (brief)"}
    assert scores["untrained"]["encoder"] == "untrained(seed=0,depths=8-16-32,input=64)"
    for s in scores.values():
        assert s["n_cells"] == 244 and s["n_classes"] == 7 and s["k"] == 11
    # The brief pretraining really trained: the demo encoder's weights moved away from the seeded start.
    trained = load_encoder(Path(summary["run"]) / "encoder.pt")
    start = untrained_encoder(0, TINY).state_dict()
    assert trained.config == TINY and trained.preprocess == SMALL
    assert any(not torch.equal(v, start[k]) for k, v in trained.state_dict().items() if v.is_floating_point())
    # The printed accuracies are the reported ones, and a re-run of the same encoder reproduces them.
    cells = demo_data / "cellcycle"
    again = knn_report(
        cells / "cells.npz", cells / "cells.csv", checkpoint=Path(summary["run"]) / "encoder.pt", amp="off"
    )
    assert again["knn_accuracy"] == scores["demo (brief)"]["knn_accuracy"]
    assert any(f"{scores['untrained']['knn_accuracy']:.3f}" in line and "untrained" in line for line in lines)
    assert any("leave-one-out 11-NN accuracy" in line for line in lines)
    assert any("3 channels -> 96 numbers per cell" in line for line in lines)
    assert Path(summary["figures"]["demo"]).stat().st_size > 10_000
    assert json.loads((tmp_path / "scores.json").read_text())["scores"] == scores


@pytest.mark.slow
def test_untrained_encoder_is_above_chance_on_cell_cycle(demo_data: Path) -> None:
    """The one full-size network of this file: the paper's architecture, untrained, on real cells."""
    cells = demo_data / "cellcycle"
    report = knn_report(cells / "cells.npz", cells / "cells.csv", k=11, device="cpu", amp="off")
    majority_share = 40 / 244
    assert report["encoder"] == "untrained(seed=0)"
    assert report["knn_accuracy"] > majority_share + 0.1
