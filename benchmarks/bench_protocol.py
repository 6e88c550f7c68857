"""Effect of the reference preprocessing protocol on full-field embeddings; writes benchmarks/results/protocol.json.

Usage: python benchmarks/bench_protocol.py [--shared ../shared/data] [--checkpoint models/microsnoop-cpu-v1.pt]
       [--per-class 12] [--modes cell-region,rescale]

The dsb2018-fields sample (12 fields per heuristic image type, seed 0, as the suite draws it) is embedded
under ``--protocol default`` and ``--protocol reference`` in each mode. Reported per mode: 1-NN image-type
accuracy (leave-one-out, cosine) under each protocol, the cosine similarity between the two protocols'
embeddings of the same field, and (cell-region) the cells kept per protocol. In cell-region mode the
reference differs by its normalisation order (after zero-padding) and border rule (top/left cells
skipped); in rescale mode by its resize (no anti-aliasing). Tiles differ only for fields narrower than
224 pixels, which DSB2018 has none of.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from microsnoop.device import init_runtime
from microsnoop.evaluate.knn import knn_accuracy_loo
from microsnoop.io.images import read_image, read_raw
from microsnoop.models.checkpoint import file_sha256, load_encoder
from microsnoop.profile import ProfileConfig, profile_images
from microsnoop.protocol import PROTOCOLS, contract_for_protocol, protocol_defaults

REPO = Path(__file__).resolve().parents[1]


def sample_fields(manifest: pd.DataFrame, per_class: int, seed: int = 0) -> pd.DataFrame:
    """At most ``per_class`` fields per heuristic type, seeded, in manifest order (as the suite samples)."""
    rng = np.random.default_rng(seed)
    groups = manifest["heuristic_modality"].reset_index(drop=True).groupby(manifest["heuristic_modality"].values)
    keep = [rng.choice(idx, size=min(per_class, len(idx)), replace=False) for idx in groups.indices.values()]
    return manifest.iloc[np.sort(np.concatenate(keep))].reset_index(drop=True)


def measure(shared: Path, checkpoint: Path, per_class: int, modes: list[str]) -> dict[str, Any]:
    """Embed the sample under both protocols in every mode and compare."""
    data = shared / "dsb2018"
    man = sample_fields(pd.read_csv(data / "manifest.csv"), per_class)
    fields = [read_image(data / "images" / f"{i}.png", gray_rgb=True) for i in man.image_id]
    masks = [read_raw(data / "labels" / f"{i}.png")[0].astype(np.int32) for i in man.image_id]
    labels = man["heuristic_modality"].to_numpy()
    encoder = load_encoder(checkpoint)
    runtime = init_runtime(device="cpu")
    out: dict[str, Any] = {}
    for mode in modes:
        emb: dict[str, np.ndarray] = {}
        row: dict[str, Any] = {}
        for protocol in PROTOCOLS:
            implied = protocol_defaults(protocol)
            profile = ProfileConfig(mode=mode, rc=1.0, skip_border=implied.skip_border, border_rule=implied.border_rule)
            start = time.perf_counter()
            profs = profile_images(
                encoder, fields, contract_for_protocol(encoder.preprocess, protocol), runtime, profile, masks=masks
            )
            dim = encoder.config.embedding_dim * fields[0].shape[0]
            emb[protocol] = np.stack([p.embedding if p.embedding is not None else np.zeros(dim) for p in profs])
            row[f"{protocol}_knn1_accuracy"] = float(knn_accuracy_loo(emb[protocol], labels, k=1))
            row[f"{protocol}_seconds"] = round(time.perf_counter() - start, 1)
            if mode == "cell-region":
                row[f"{protocol}_cells"] = int(sum(len(p.cells) for p in profs))
        a, b = emb["default"], emb["reference"]
        cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        row["cosine_default_vs_reference"] = {"mean": float(cos.mean()), "min": float(cos.min())}
        out[mode] = row
    return {
        "checkpoint": f"{checkpoint.name}@sha256:{file_sha256(checkpoint)[:16]}",
        "fields": len(labels),
        "classes": {str(k): int(v) for k, v in pd.Series(labels).value_counts().items()},
        "cpu": platform.processor() or platform.machine(),
        "modes": out,
    }


def main() -> None:
    """Parse arguments, measure, write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--checkpoint", type=Path, default=REPO / "models" / "microsnoop-cpu-v1.pt")
    parser.add_argument("--per-class", type=int, default=12)
    parser.add_argument("--modes", default="cell-region,rescale")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "protocol.json")
    args = parser.parse_args()
    result = measure(args.shared, args.checkpoint, args.per_class, args.modes.split(","))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
