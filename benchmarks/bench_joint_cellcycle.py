"""Joint multi-modal embedding on the cell-cycle set: each channel alone vs the PCA-joint of all three.

Usage: python benchmarks/bench_joint_cellcycle.py [--data ../shared/data/cellcycle] [--limit-per-class 100]

The cells are those of the cell-cycle suite (Experiment_1, at most ``--limit-per-class`` per class,
the same seeded draw). Every cell is embedded once per encoder (the shipped model and an untrained
network of the same architecture), per channel: brightfield, DNA and darkfield are the three
modalities. The 40 px cells are padded to a ``--input-size`` canvas (default 64, not the contract's 224:
12x less compute on 2 shared CPU cores; the comparison between feature sets is what this measures).
Each is reduced by PCA to ``--n-components`` and the blocks concatenated
(``microsnoop.postprocess.joint``); silhouette, KMeans ARI (k = number of classes) and kNN accuracy
are scored for each channel alone, the joint and the raw 768-d concatenation, for 7 and 5 classes.
Writes benchmarks/results/joint_cellcycle.json and .md.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from microsnoop.device import init_runtime
from microsnoop.embed import embed_images
from microsnoop.evaluate.clustering import evaluate_joint, joint_markdown
from microsnoop.models.factory import load_named
from microsnoop.postprocess.joint import JointConfig

REPO = Path(__file__).resolve().parents[1]
MODALITIES = ("brightfield", "DNA", "darkfield")  # Ch3, Ch4, Ch6 of the packed set (see its SOURCE.md)
INTERPHASE = {"G1": "Interphase", "S_phase": "Interphase", "G2": "Interphase"}


def sample_cells(data: Path, limit: int | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The suite's draw: Experiment_1, at most ``limit`` cells per class (seeded), in file order."""
    table = pd.read_csv(data / "cells.csv")
    table = table[table.experiment == "Experiment_1"]
    labels = table["label"].reset_index(drop=True)
    if limit is None:
        keep = np.arange(len(labels))
    else:
        rng = np.random.default_rng(seed)
        picks = [
            rng.choice(idx, size=min(limit, len(idx)), replace=False) for idx in labels.groupby(labels).indices.values()
        ]
        keep = np.sort(np.concatenate(picks))
    rows = table.index.to_numpy()[keep]
    with np.load(next(iter(sorted(data.glob("*.npz"))))) as z:
        images = np.asarray(z["images"][rows])
    return images, table.loc[rows, "label"].to_numpy()


def main() -> None:
    """Embed, reduce, score, write."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "cellcycle")
    ap.add_argument("--checkpoint", type=Path, default=REPO / "models" / "microsnoop-cpu-v1.pt")
    ap.add_argument("--limit-per-class", type=int, default=100)
    ap.add_argument("--n-components", type=int, default=32, help="PCA latent size per modality")
    ap.add_argument(
        "--input-size", type=int, default=64, help="canvas the 40 px cells are padded to (the contract's is 224)"
    )
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "joint_cellcycle")
    args = ap.parse_args()
    images, labels7 = sample_cells(args.data, args.limit_per_class, args.seed)
    labels5 = np.asarray([INTERPHASE.get(lab, lab) for lab in labels7])
    runtime = init_runtime(device="cpu")
    config = JointConfig(n_components=args.n_components, seed=args.seed)
    scores: dict[str, dict[str, Any]] = {"7_class": {}, "5_class": {}}
    models = {}
    t0 = time.perf_counter()
    for name, ref in (("microsnoop-cpu-v1", args.checkpoint), ("untrained", "untrained")):
        encoder, model_id = load_named(ref, seed=args.seed)
        models[name] = model_id
        contract = replace(encoder.preprocess, input_size=args.input_size)
        emb = embed_images(encoder, images, contract, runtime, progress=True)
        dim = encoder.config.embedding_dim
        blocks = {m: emb[:, c * dim : (c + 1) * dim] for c, m in enumerate(MODALITIES)}
        for task, labels in (("7_class", labels7), ("5_class", labels5)):
            scores[task][name] = evaluate_joint(blocks, labels, config=config, n_boot=args.n_boot)
    result = {
        "suite": "joint cell-cycle (per-channel modalities)",
        "n": len(labels7),
        "classes": {str(k): int(v) for k, v in pd.Series(labels7).value_counts().items()},
        "modalities": list(MODALITIES),
        "n_components": args.n_components,
        "input_size": args.input_size,
        "balance": config.balance,
        "models": models,
        "runtime": {"device": str(runtime.device), "amp": str(runtime.amp_dtype), "threads": torch.get_num_threads()},
        "seconds": round(time.perf_counter() - t0, 1),
        "command": "python benchmarks/bench_joint_cellcycle.py "
        f"--limit-per-class {args.limit_per_class} --n-components {args.n_components} --n-boot {args.n_boot} "
        f"--input-size {args.input_size}",
        "scores": scores,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2, default=float) + "\n")
    md = [
        f"#### joint cell-cycle (n = {len(labels7)}, PCA {args.n_components} per channel, "
        f"{args.input_size} px canvas)\n"
    ]
    for task in ("7_class", "5_class"):
        md += [f"\n{task.replace('_', ' ')}:\n\n", joint_markdown(scores[task])]
    md.append(f"\nModels: {', '.join(f'`{k}` = {v}' for k, v in models.items())}. Reproduce: `{result['command']}`\n")
    args.out.with_suffix(".md").write_text("".join(md))
    print("".join(md))  # the report


if __name__ == "__main__":
    main()
