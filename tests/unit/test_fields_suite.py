"""The full-field suite on the demo DSB2018 fields (gray and colour images, ground-truth masks)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from microsnoop.config import EncoderConfig, PreprocessContract
from microsnoop.evaluate.knn import knn_accuracy_loo
from microsnoop.evaluate.suites import SuiteConfig, get_suite

TINY = dict(untrained=EncoderConfig(depths=(8, 16, 32)), untrained_preprocess=PreprocessContract(input_size=64))
CLASSES = {"fluorescence_gray", "stained_color", "brightfield_gray"}


def test_fields_suite_scores_one_embedding_per_field_in_either_mode(demo_data: Path) -> None:
    embeddings = {}
    for mode in ("cell-region", "rescale"):
        config = SuiteConfig(
            limit_per_class=2, n_boot=20, device="cpu", amp="off", handcrafted=False, field_mode=mode, **TINY
        )
        result = get_suite("dsb2018-fields")(demo_data / "dsb2018", {"untrained": None}, config)
        assert result.n == 6 and result.classes == {name: 2 for name in CLASSES}
        assert result.details["field_mode"] == mode and "not ground truth" in str(result.details["labels_note"])
        emb, labels = result.embeddings["untrained"], result.labels
        assert emb.shape == (6, 32) and np.isfinite(emb).all() and labels is not None
        knn = result.scores["untrained"]["knn_1"]
        assert knn["k"] == 1 and knn["accuracy"] == knn_accuracy_loo(emb, labels, 1)
        assert sum(map(sum, knn["confusion"])) == 6 and set(knn["classes"]) <= CLASSES
        embeddings[mode] = emb
    # rescale embeds each whole field (unit vectors); cell-region averages the unit vectors of its cells
    assert np.allclose(np.linalg.norm(embeddings["rescale"], axis=1), 1.0, atol=1e-4)
    norms = np.linalg.norm(embeddings["cell-region"], axis=1)
    assert (norms <= 1.0 + 1e-5).all() and norms.min() < 0.999
    assert not np.allclose(embeddings["cell-region"], embeddings["rescale"], atol=1e-3)


@pytest.mark.slow
def test_fields_suite_handcrafted_baseline(demo_data: Path) -> None:
    config = SuiteConfig(limit_per_class=3, n_boot=20, device="cpu", amp="off", handcrafted=True, **TINY)
    result = get_suite("dsb2018-fields")(demo_data / "dsb2018", {"untrained": None}, config)
    # The cp-measure baseline is scored on the same fields: one finite row per field.
    baseline = result.embeddings["cellprofiler_cp_measure"]
    assert baseline.shape[0] == 9 and np.isfinite(baseline).all() and baseline.std(axis=0).max() > 0
    knn = result.scores["cellprofiler_cp_measure"]["knn_1"]
    assert knn["accuracy"] == knn_accuracy_loo(baseline, result.labels, 1)  # type: ignore[arg-type]
