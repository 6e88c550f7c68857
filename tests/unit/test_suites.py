"""Benchmark suites end to end: cell-cycle on the demo subset, BBBC021 profiles on the shared data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from microsnoop.evaluate.report import write_report
from microsnoop.evaluate.suites import SuiteConfig, suites


@pytest.mark.slow
def test_cell_cycle_suite_on_demo_subset(demo_data: Path, tmp_path: Path) -> None:
    config = SuiteConfig(limit_per_class=8, n_boot=50, device="cpu")
    result = suites()["cell-cycle"](demo_data / "cellcycle", {"untrained": None}, config)
    assert set(result["scores"]) == {"untrained", "cellprofiler_cp_measure"}
    assert result["n"] == 56 and set(result["classes"]) >= {"Anaphase", "G1"}
    for scores in result["scores"].values():
        for task in ("7_class", "5_class"):
            for protocol in ("knn", "mlp_5fold"):
                s = scores[task][protocol]
                lo, hi = s["accuracy_ci95"]
                assert 0 <= lo <= s["accuracy"] <= hi <= 1
    paths = write_report(result, tmp_path, command="microsnoop benchmark --suite cell-cycle")
    saved = json.loads(paths["json"].read_text())
    assert saved["models"]["untrained"].startswith("untrained") and len(saved["data_hash"]) == 64
    assert "| untrained | 7_class/knn | accuracy |" in paths["md"].read_text()
    assert paths["scores_png"].stat().st_size > 5000


@pytest.mark.shared_data
@pytest.mark.slow
def test_bbbc021_profiles_protocol(shared_data: Path) -> None:
    result = suites()["bbbc021-profiles"](shared_data / "bbbc021_profiles", {}, SuiteConfig(n_boot=50))
    raw, sph = result["scores"]["cellprofiler_raw"], result["scores"]["cellprofiler_sphered_global"]
    assert raw["n_treatments"] == 103
    assert sph["nsc"]["accuracy"] > raw["nsc"]["accuracy"] + 0.2  # sphering on DMSO is what makes MoA work
    assert sph["nsc"]["n"] == 103 and 0 < sph["nscb_week"]["n"] < 103
