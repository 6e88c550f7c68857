"""The full-field suite on the demo DSB2018 fields (gray and colour images, ground-truth masks)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from microsnoop.evaluate.suites import SuiteConfig, suites


@pytest.mark.slow
def test_dsb2018_fields_suite_on_demo_fields(demo_data: Path) -> None:
    config = SuiteConfig(limit_per_class=3, n_boot=20, device="cpu", handcrafted=True)
    result = suites()["dsb2018-fields"](demo_data / "dsb2018", {"untrained": None}, config)
    assert result["n"] == 9 and set(result["classes"]) == {"fluorescence_gray", "stained_color", "brightfield_gray"}
    assert 0.0 <= result["scores"]["untrained"]["knn_1"]["accuracy"] <= 1.0
    # The cp-measure baseline is scored on the same fields: one finite row per field.
    baseline = result["embeddings"]["cellprofiler_cp_measure"]
    assert baseline.shape[0] == 9 and np.isfinite(baseline).all() and baseline.std(axis=0).max() > 0
    assert 0.0 <= result["scores"]["cellprofiler_cp_measure"]["knn_1"]["accuracy"] <= 1.0
    assert "not ground truth" in result["labels_note"]
