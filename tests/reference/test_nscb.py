"""Issue 12, item 7: the reference NSCB rule on BBBC021, and the general rule kept as an option.

Reference: the treatments of the two mechanisms found in a single batch ("Cholesterol-lowering",
"Kinase inhibitors") are removed from the queries and from the candidates, and a treatment's batch is
the string of its plates joined (a treatment on plates P1 and P2 is in batch "P1,P2", not "P1").
General: mechanisms found in one batch are dropped from the queries only.

Hand-worked table (angles of the 2-D profiles, so cosine neighbours can be read off):
cA1 0 deg (P1), cA2 36.9 deg (P2), cK1 18.1 deg (P2), cK2 25.5 deg (P2), cB1 90 deg (P1), cB2 84.2 deg (P1,P2).
"""

from __future__ import annotations

import pandas as pd
import pytest

from microsnoop.evaluate.moa import BBBC021_SINGLE_BATCH_MOAS, moa_accuracy, treatment_batch

KINASE = "Kinase inhibitors"


def _table() -> pd.DataFrame:
    rows = [
        ("cA1", "A", "P1", 1.0, 0.0),
        ("cA2", "A", "P2", 0.8, 0.6),
        ("cK1", KINASE, "P2", 0.95, 0.31),
        ("cK2", KINASE, "P2", 0.9, 0.43),
        ("cB1", "B", "P1", 0.0, 1.0),
        ("cB2", "B", "P1,P2", 0.1, 0.99),
    ]
    return pd.DataFrame(rows, columns=["Metadata_Compound", "Metadata_MoA", "Metadata_Batch", "f0", "f1"])


def test_reference_rule_removes_named_moas_from_queries_and_candidates() -> None:
    out = moa_accuracy(_table(), ["f0", "f1"], exclude_moas=BBBC021_SINGLE_BATCH_MOAS)
    # cA1 -> cA2 (cK1 is nearer but excluded as a candidate); cA2 -> cA1; cB1 -> cB2 ("P1,P2" != "P1");
    # cB2 -> cB1. The kinase treatments are not queries.
    assert out["nscb_rule"] == "reference" and out["nscb_queries"] == 4
    assert out["nscb_hits"] == [True, True, True, True] and out["nscb"] == 1.0
    assert out["nscb_dropped_moas"] == [KINASE]


def test_general_rule_drops_single_batch_moas_from_queries_only() -> None:
    out = moa_accuracy(_table(), ["f0", "f1"])
    # The kinase MoA is in one batch (P2): not a query, but cK1 (P2) is still cA1's nearest candidate.
    assert out["nscb_rule"] == "general" and out["nscb_queries"] == 4
    assert out["nscb_hits"] == [False, True, True, True] and out["nscb"] == pytest.approx(0.75)
    assert out["nscb_dropped_moas"] == [KINASE]


def test_nsc_is_the_same_under_both_rules() -> None:
    ref = moa_accuracy(_table(), ["f0", "f1"], exclude_moas=BBBC021_SINGLE_BATCH_MOAS)
    gen = moa_accuracy(_table(), ["f0", "f1"])
    # cA1 -> cK1 (wrong), cA2 -> cK2 (wrong), cK1 -> cK2, cK2 -> cK1, cB1 -> cB2, cB2 -> cB1.
    assert ref["nsc_hits"] == gen["nsc_hits"] == [False, False, True, True, True, True]


def test_treatment_batch_joined_versus_majority() -> None:
    wells = pd.DataFrame({"c": ["x", "x", "x", "y"], "plate": ["P2", "P1", "P1", "P3"]})
    assert treatment_batch(wells, by=["c"], batch="plate", how="joined").to_dict() == {"x": "P1,P2", "y": "P3"}
    assert treatment_batch(wells, by=["c"], batch="plate").to_dict() == {"x": "P1", "y": "P3"}
