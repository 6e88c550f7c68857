"""Training reports: the loss curve of a run from its metrics.jsonl."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Per-epoch records of a run (one JSON object per line)."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_loss_curve(metrics: Path, out: Path) -> Path:
    """Train and validation MSE against images seen, with the learning rate on a second axis."""
    rows = read_metrics(metrics)
    if not rows:
        raise ValueError(f"{metrics}: no epochs recorded yet; run 'microsnoop pretrain' first")
    seen: list[float] = []
    total = 0.0
    for r in rows:
        total += r["images"]
        seen.append(total)
    probe_rows = read_metrics(metrics.parent / "probe.jsonl") if (metrics.parent / "probe.jsonl").is_file() else []
    fig = Figure(figsize=(11, 4) if probe_rows else (7, 4))
    axes = fig.subplots(1, 2 if probe_rows else 1, squeeze=False)[0]
    ax = axes[0]
    if probe_rows:
        _plot_probe(axes[1], probe_rows, per_epoch=rows[0]["images"])
    ax.plot(seen, [r["train_loss"] for r in rows], label="train MSE", marker=".")
    if rows[0].get("val_loss") is not None:
        ax.plot(seen, [r["val_loss"] for r in rows], label="validation MSE (fixed crops and masks)", marker=".")
    ax.set_xlabel("images seen")
    ax.set_ylabel("MSE (percentile-normalised pixels)")
    ax.set_yscale("log")
    lr_ax = ax.twinx()
    lr_ax.plot(seen, [r["lr"] for r in rows], color="grey", alpha=0.4, label="learning rate")
    lr_ax.set_ylabel("learning rate")
    ax.legend(loc="upper right")
    ax.set_title(f"{metrics.parent.name}: {len(rows)} epochs, {total} images")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    return out


def _plot_probe(ax: Any, rows: list[dict[str, Any]], *, per_epoch: float) -> None:
    """kNN probe accuracy (raw and z-scored) against images seen; epoch -1 is the untrained start."""
    seen = [(r["epoch"] + 1) * per_epoch for r in rows]
    ax.plot(seen, [r["knn_raw"] for r in rows], marker=".", label="kNN, cosine on raw vectors")
    ax.plot(seen, [r["knn_z"] for r in rows], marker=".", label="kNN, cosine on z-scored vectors")
    ax.axhline(rows[0]["knn_z"], color="grey", ls=":", label="untrained start (z-scored)")
    ax.set_xlabel("images seen")
    ax.set_ylabel(f"leave-one-out kNN accuracy ({rows[0].get('probe', 'probe')})")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("probe (watching only; never selects checkpoints)")
