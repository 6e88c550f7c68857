"""Small inputs for pipeline runs, taken from the repository's demo data."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[2]


def tiny_fields(folder: Path, n: int = 3) -> Path:
    """A source table of ``n`` grey fluorescence DSB2018 demo fields (absolute paths) written to ``folder``."""
    table = pd.read_csv(REPO / "demo_data" / "dsb2018" / "fields.csv")
    table = table[table.Metadata_Label == "fluorescence_gray"].head(n).copy()
    table["path"] = [str(REPO / "demo_data" / "dsb2018" / p) for p in table["path"]]
    out = folder / "fields.csv"
    table.to_csv(out, index=False)
    return out
