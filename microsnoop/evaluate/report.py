"""Suite reports: JSON of every score, a markdown table, and PNG plots (scores with intervals, a map)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from microsnoop import __version__  # noqa: E402


def score_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Flatten a suite result to rows: feature set, task, protocol, metric, value, interval."""
    rows = []
    for feature_set, tasks in result["scores"].items():
        for task, protocols in tasks.items():
            if "accuracy" in protocols:  # a single-protocol entry (e.g. knn_1)
                protocols = {task: protocols}
                task = "-"
            for protocol, s in protocols.items():
                for metric in ("accuracy", "macro_f1"):
                    lo, hi = s[f"{metric}_ci95"]
                    rows.append(
                        {
                            "feature_set": feature_set,
                            "task": task,
                            "protocol": protocol,
                            "metric": metric,
                            "value": s[metric],
                            "ci95": [lo, hi],
                        }
                    )
    return rows


def markdown_table(result: dict[str, Any]) -> str:
    """A markdown table of the suite's scores with 95 % bootstrap intervals."""
    lines = [
        f"### {result['suite']} (n = {result['n']})",
        "",
        "| features | task | protocol | accuracy [95% CI] | macro-F1 [95% CI] |",
        "|---|---|---|---|---|",
    ]
    rows = score_rows(result)
    for r in rows[::2]:
        f1 = next(
            x
            for x in rows
            if x["metric"] == "macro_f1"
            and x["feature_set"] == r["feature_set"]
            and x["task"] == r["task"]
            and x["protocol"] == r["protocol"]
        )
        lines.append(
            f"| {r['feature_set']} | {r['task']} | {r['protocol']} | {r['value']:.3f} "
            f"[{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}] | {f1['value']:.3f} "
            f"[{f1['ci95'][0]:.3f}, {f1['ci95'][1]:.3f}] |"
        )
    return "\n".join(lines) + "\n"


def plot_scores(result: dict[str, Any], out: Path) -> Path:
    """Horizontal bars of accuracy with 95 % intervals, one per feature set and protocol."""
    rows = [r for r in score_rows(result) if r["metric"] == "accuracy"]
    labels = [f"{r['feature_set']} | {r['task']} | {r['protocol']}" for r in rows]
    values = np.array([r["value"] for r in rows])
    err = np.array([[r["value"] - r["ci95"][0], r["ci95"][1] - r["value"]] for r in rows]).T
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(rows) + 1.2))
    ax.barh(range(len(rows)), values, xerr=err, color="tab:blue", alpha=0.7, capsize=3)
    ax.set_yticks(range(len(rows)), labels, fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_xlabel("accuracy (95% bootstrap interval)")
    ax.set_title(f"{result['suite']} (n = {result['n']})")
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def plot_map(features: np.ndarray, labels: np.ndarray, out: Path, *, title: str, seed: int = 0) -> Path:
    """2-D map of embeddings coloured by label: UMAP when umap-learn is installed, else PCA."""
    try:
        import umap  # lazy: optional dependency

        xy = umap.UMAP(random_state=seed, n_neighbors=min(15, len(features) - 1)).fit_transform(features)
        method = "UMAP"
    except ImportError:
        centred = features - features.mean(0)
        xy = centred @ np.linalg.svd(centred, full_matrices=False)[2][:2].T
        method = "PCA"
    fig, ax = plt.subplots(figsize=(6, 5))
    for lab in sorted(set(labels.tolist())):
        sel = labels == lab
        ax.scatter(xy[sel, 0], xy[sel, 1], s=6, label=f"{lab} ({sel.sum()})")
    ax.legend(fontsize=7, markerscale=2)
    ax.set_title(f"{title} ({method})")
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def write_report(result: dict[str, Any], out_dir: Path, *, command: str) -> dict[str, Path]:
    """Write ``<suite>.json``, ``<suite>.md`` and the plots; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    name = result["suite"]
    paths = {"scores_png": plot_scores(result, out_dir / f"{name}_scores.png")}
    for feature_set, feats in result["embeddings"].items():
        paths[f"map_{feature_set}"] = plot_map(
            feats,
            np.asarray(result["labels"]),
            out_dir / f"{name}_map_{feature_set}.png",
            title=f"{name}: {feature_set}",
        )
    public = {k: v for k, v in result.items() if k not in ("embeddings", "labels")}
    public.update(
        {
            "code_version": __version__,
            "command": command,
            "rows": score_rows(result),
            "classes": {str(k): int(v) for k, v in result["classes"].items()},
        }
    )
    paths["json"] = out_dir / f"{name}.json"
    paths["json"].write_text(json.dumps(public, indent=2, default=_jsonable))
    paths["md"] = out_dir / f"{name}.md"
    paths["md"].write_text(markdown_table(result) + f"\nReproduce: `{command}`\n")
    return paths


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj)}")
