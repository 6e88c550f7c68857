"""Benchmark suites: the registry, the typed result, cell-cycle on the demo subset, BBBC021 profiles."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from microsnoop.config import EncoderConfig, PreprocessContract
from microsnoop.device import init_runtime
from microsnoop.embed import embed_images
from microsnoop.errors import ConfigError
from microsnoop.evaluate.knn import knn_accuracy_loo
from microsnoop.evaluate.report import markdown_table, write_report
from microsnoop.evaluate.suites import SuiteConfig, SuiteResult, get_suite, suites
from microsnoop.evaluate.suites.cell_cycle import INTERPHASE
from microsnoop.models.factory import untrained_encoder

TINY = EncoderConfig(depths=(8, 16, 32))  # the same architecture, small: the wiring, not the scores
SMALL = PreprocessContract(input_size=64)  # 40-pixel demo cells padded to 64, not 224


def tiny_suite_config(**overrides: object) -> SuiteConfig:
    """Suite knobs for tests: the tiny untrained network in fp32 on the CPU, few bootstrap draws."""
    base: dict[str, object] = dict(n_boot=50, device="cpu", amp="off", untrained=TINY, untrained_preprocess=SMALL)
    base.update(overrides)
    return SuiteConfig(**base)  # type: ignore[arg-type]


def test_registry_lists_every_suite_and_a_typo_names_the_choices() -> None:
    assert set(suites()) == {"cell-cycle", "dsb2018-fields", "bbbc021-profiles", "bbbc021-cells"}
    assert get_suite("cell-cycle") is suites()["cell-cycle"]
    with pytest.raises(ConfigError, match="unknown suite 'cellcycle'; choose from bbbc021-cells, "):
        get_suite("cellcycle")


def test_suite_config_rejects_an_unknown_field_mode() -> None:
    with pytest.raises(ConfigError, match="field_mode must be one of"):
        SuiteConfig(field_mode="tiles")


def test_result_report_round_trip(tmp_path: Path) -> None:
    result = SuiteResult(
        suite="toy",
        n=4,
        classes={"a": 2, "b": 2},
        data_hash="0" * 64,
        models={"enc": "enc.pt@sha256:ab"},
        scores={"enc": {"knn": {"accuracy": 0.75, "accuracy_ci95": [0.5, 1.0], "per_class_f1": {"a": 1.0}}}},
        details={"labels_note": "toy labels"},
        embeddings={"enc": np.eye(4, dtype=np.float32)},
        labels=np.array(["a", "a", "b", "b"]),
    )
    paths = write_report(result, tmp_path, command="test", precision="fp32 on cpu AVX2")
    saved = json.loads(paths["json"].read_text())
    assert saved["labels_note"] == "toy labels" and saved["command"] == "test" and "embeddings" not in saved
    assert saved["precision"] == "fp32 on cpu AVX2" and "Encoders ran in fp32 on cpu AVX2." in paths["md"].read_text()
    assert saved["rows"] == [
        {"feature_set": "enc", "score": "knn", "metric": "accuracy", "value": 0.75, "ci95": [0.5, 1.0]}
    ]
    assert SuiteResult.from_dict(saved).to_dict() == result.to_dict()
    assert "| enc | knn | accuracy | 0.750 [0.500, 1.000] |" in markdown_table(SuiteResult.from_dict(saved))
    assert paths["map_enc"].stat().st_size > 1000
    with pytest.raises(ConfigError, match=r"keys \['data_hash'\] are missing"):
        SuiteResult.from_dict({k: v for k, v in saved.items() if k != "data_hash"})


def test_cell_cycle_suite_scores_the_cells_it_embeds(demo_data: Path) -> None:
    cells = demo_data / "cellcycle"
    config = tiny_suite_config(limit_per_class=8, handcrafted=False, mlp=False)
    result = get_suite("cell-cycle")(cells, {"untrained": None}, config)
    assert result.models == {"untrained": "untrained(seed=0,depths=8-16-32,input=64)"}
    assert result.n == 56 and result.classes == {label: 8 for label in result.classes} and len(result.classes) == 7
    emb, labels = result.embeddings["untrained"], result.labels
    assert emb.shape == (56, 3 * 32) and labels is not None
    # Each embedding row is the embedding of a demo cell carrying that row's label (images and labels stay aligned).
    runtime = init_runtime(device="cpu", amp="off", channels_last=False)
    every = embed_images(untrained_encoder(0, TINY, SMALL), np.load(cells / "cells.npz")["images"], SMALL, runtime)
    all_labels = pd.read_csv(cells / "cells.csv")["label"].to_numpy()
    distance = np.linalg.norm(emb[:, None] - every[None], axis=2)
    nearest = distance.argmin(axis=1)
    assert distance.min(axis=1).max() < 1e-4 and len(set(nearest)) == 56
    assert (all_labels[nearest] == labels).all()
    # The scores are leave-one-out kNN over exactly these rows, 7 classes and 5 (G1/S/G2 merged).
    seven, five = result.scores["untrained"]["7_class"]["knn"], result.scores["untrained"]["5_class"]["knn"]
    assert seven["accuracy"] == knn_accuracy_loo(emb, labels, config.k)
    merged = np.asarray([INTERPHASE.get(lab, lab) for lab in labels])
    assert five["accuracy"] == knn_accuracy_loo(emb, merged, config.k)
    assert set(five["classes"]) == {"Interphase", "Prophase", "Metaphase", "Anaphase", "Telophase"}
    assert set(result.scores["untrained"]["7_class"]) == {"knn"}  # mlp=False really skips the MLP


@pytest.mark.slow
def test_cell_cycle_suite_with_baselines_writes_a_report(demo_data: Path, tmp_path: Path) -> None:
    config = tiny_suite_config(limit_per_class=8)
    result = get_suite("cell-cycle")(demo_data / "cellcycle", {"untrained": None}, config)
    assert set(result.scores) == {"untrained", "cellprofiler_cp_measure"}
    handcrafted = result.embeddings["cellprofiler_cp_measure"]
    assert handcrafted.shape[0] == 56 and np.isfinite(handcrafted).all()
    # Hand-crafted features separate the cell-cycle stages well above chance (1/7) even on 56 cells.
    assert result.scores["cellprofiler_cp_measure"]["7_class"]["knn"]["accuracy"] > 0.2  # chance: 1/7 = 0.14
    mlp = result.scores["untrained"]["7_class"]["mlp_5fold"]
    assert (
        sum(map(sum, mlp["confusion"])) == 56 and mlp["accuracy_ci95"][0] <= mlp["accuracy"] <= mlp["accuracy_ci95"][1]
    )
    paths = write_report(result, tmp_path, command="microsnoop benchmark --suite cell-cycle")
    saved = json.loads(paths["json"].read_text())
    assert saved["models"]["untrained"].startswith("untrained") and len(saved["data_hash"]) == 64
    assert "| untrained | 7_class/knn | accuracy |" in paths["md"].read_text()
    assert paths["scores_png"].stat().st_size > 5000


@pytest.mark.shared_data
@pytest.mark.slow
def test_bbbc021_profiles_protocol(shared_data: Path) -> None:
    result = get_suite("bbbc021-profiles")(shared_data / "bbbc021_profiles", {}, SuiteConfig(n_boot=50))
    raw, sph = result.scores["cellprofiler_raw"], result.scores["reference_protocol"]
    assert raw["n_treatments"] == 103
    assert sph["nsc"]["accuracy"] > raw["nsc"]["accuracy"] + 0.2  # sphering on DMSO is what makes MoA work
    assert sph["nsc"]["n"] == 103 and 0 < sph["nscb_week"]["n"] < 103
    # The reference NSCB rule drops exactly the two named single-batch mechanisms (11 treatments).
    assert sph["nscb_plate"]["dropped_moas"] == ["Cholesterol-lowering", "Kinase inhibitors"]
    assert sph["nscb_plate"]["n"] == 92
    # 6 DMSO wells per plate for 516 features: the default protocol centres each plate and whitens once.
    assert result.scores["default_protocol"]["sphering"].startswith("auto -> centred")
    assert result.scores["sphered_per_plate"]["sphering"] == "batch (as asked)"


def test_a_missing_data_folder_names_the_files_needed(tmp_path: Path) -> None:
    for name in suites():
        with pytest.raises(FileNotFoundError, match=f"{tmp_path}: the {name} suite needs"):
            get_suite(name)(tmp_path, {}, SuiteConfig())
