"""Rebuild demo_data/ from ../shared/data (run once by maintainers; the result is committed).

Only clearly licensed parts are copied (CC0, BSD-3, MIT, Apache-2.0); see DATA_LICENSES.md.
Usage: python scripts/make_demo_data.py [--shared ../shared/data] [--out demo_data]
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

DSB_PER_TYPE = {"fluorescence_gray": 36, "stained_color": 12, "brightfield_gray": 4}
DSB_TYPE = {"fluorescence_gray": "fluorescence", "stained_color": "histology", "brightfield_gray": "brightfield"}
CELLS_PER_CLASS = 40
SAMPLES = {  # path under shared/data/samples -> image type
    "stardist/img2d.tif": "fluorescence",
    "stardist/histo.jpg": "histology",
    "instanseg/Fluorescence_example.tif": "fluorescence",
    "instanseg/HE_example.tif": "histology",
    "skimage/ihc.png": "histology",
    "skimage/cell.png": "brightfield",
    "mahotas/nuclear.png": "fluorescence",
}


def main() -> None:
    """Copy the demo subset and write its type table."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--shared", type=Path, default=Path("../shared/data"))
    ap.add_argument("--out", type=Path, default=Path("demo_data"))
    args = ap.parse_args()
    out: Path = args.out
    rng = np.random.default_rng(0)
    types = []
    man = pd.read_csv(args.shared / "dsb2018/manifest.csv")
    man = man[((man.height <= 520) & (man.width <= 696)) | (man.heuristic_modality == "brightfield_gray")]
    picked = []
    for mod, n in DSB_PER_TYPE.items():
        rows = man[man.heuristic_modality == mod]
        picked.append(rows.iloc[rng.choice(len(rows), size=min(n, len(rows)), replace=False)])
    dsb = pd.concat(picked).sort_values("image_id")
    for sub in ("images", "labels"):
        (out / "dsb2018" / sub).mkdir(parents=True, exist_ok=True)
    for row in dsb.itertuples():
        for sub in ("images", "labels"):
            shutil.copy(args.shared / "dsb2018" / sub / f"{row.image_id}.png", out / "dsb2018" / sub)
        types.append(
            {
                "path": f"dsb2018/images/{row.image_id}.png",
                "type": DSB_TYPE[row.heuristic_modality],
                "source": "dsb2018",
            }
        )
    dsb.to_csv(out / "dsb2018" / "manifest.csv", index=False)
    (out / "samples").mkdir(parents=True, exist_ok=True)
    for rel, kind in SAMPLES.items():
        dst = out / "samples" / rel.replace("/", "_")
        shutil.copy(args.shared / "samples" / rel, dst)
        types.append({"path": f"samples/{dst.name}", "type": kind, "source": "samples"})
    (out / "samples_masks").mkdir(parents=True, exist_ok=True)
    shutil.copy(args.shared / "samples/stardist/mask2d.tif", out / "samples_masks" / "stardist_mask2d.tif")
    human = args.shared / "cellprofiler_examples/ExampleHuman/images"
    (out / "cellprofiler_human").mkdir(parents=True, exist_ok=True)
    for f in sorted(human.glob("*.tif")):
        shutil.copy(f, out / "cellprofiler_human")
        types.append({"path": f"cellprofiler_human/{f.name}", "type": "fluorescence", "source": "cellprofiler_human"})
    pd.DataFrame(types).to_csv(out / "pool_types.csv", index=False)

    cells = pd.read_csv(args.shared / "cellcycle/cells.csv")
    data = np.load(args.shared / "cellcycle/bbbc048like_cellcycle_40x40x3.npz")
    exp1 = cells[cells.experiment == "Experiment_1"]
    keep = []
    for _, rows in exp1.groupby("label"):
        keep.extend(rng.choice(rows["index"].to_numpy(), size=min(CELLS_PER_CLASS, len(rows)), replace=False))
    keep = np.sort(np.array(keep))
    sub = cells.set_index("index").loc[keep].reset_index()
    (out / "cellcycle").mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        out / "cellcycle" / "cells.npz", images=data["images"][keep], channel_names=data["channel_names"]
    )
    sub.to_csv(out / "cellcycle" / "cells.csv", index=False)


if __name__ == "__main__":
    main()
