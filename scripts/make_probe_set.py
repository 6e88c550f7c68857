"""Write the pretraining probe set: cell-cycle cells that the cell-cycle suite never scores.

The suite samples at most 100 cells per class of Experiment_1 (seed 0); the probe takes up to
``--per-class`` of the remaining Experiment_1 cells per class (the rare mitotic classes are used up by
the suite, so the probe has G1, S, G2 and prophase). It watches training; it never selects checkpoints.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from microsnoop.evaluate.suites.base import sample_per_class
from microsnoop.io.images import read_raw


def main() -> None:
    """Build ``--out`` from ``--data`` (the shared cellcycle folder)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/cellcycle"))
    parser.add_argument("--out", type=Path, default=Path("runs/probe/cellcycle_probe.npz"))
    parser.add_argument("--per-class", type=int, default=60)
    parser.add_argument("--suite-limit", type=int, default=100, help="limit_per_class the suite uses")
    args = parser.parse_args()
    table = pd.read_csv(args.data / "cells.csv")
    table = table[table.experiment == "Experiment_1"]
    suite_rows = set(
        table.index.to_numpy()[sample_per_class(table["label"].reset_index(drop=True), args.suite_limit, 0)]
    )
    rest = table[~table.index.isin(suite_rows)]
    picks = rest.index.to_numpy()[sample_per_class(rest["label"].reset_index(drop=True), args.per_class, 1)]
    images, _ = read_raw(next(iter(sorted(args.data.glob("*.npz")))))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        args.out, images=np.asarray(images[picks]), labels=table.loc[picks, "label"].to_numpy().astype(str)
    )
    print(f"{args.out}: {len(picks)} cells, classes {rest.loc[picks, 'label'].value_counts().to_dict()}")


if __name__ == "__main__":
    main()
