"""Suite reports: JSON of every score, a markdown table, and PNG plots (scores with intervals, a map)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from microsnoop import __version__
from microsnoop.evaluate.suites.base import SuiteResult


def score_rows(result: SuiteResult) -> list[dict[str, Any]]:
    """Flatten a suite result to rows: feature set, score path, metric, value and (when known) 95 % interval.

    Per-class F1 and confusion matrices stay in the JSON only.
    """
    rows: list[dict[str, Any]] = []

    def walk(feature_set: str, path: list[str], node: dict[str, Any]) -> None:
        for key, child in node.items():
            if key == "per_class_f1" or key.endswith(("ci95", "iou")):
                continue
            if isinstance(child, float):
                ci = node.get(f"{key}_ci95")
                rows.append(
                    {
                        "feature_set": feature_set,
                        "score": "/".join(path) or "-",
                        "metric": key,
                        "value": child,
                        "ci95": list(ci) if ci is not None else None,
                    }
                )
            elif isinstance(child, dict):
                walk(feature_set, [*path, key], child)

    for feature_set, tree in result.scores.items():
        walk(feature_set, [], tree)
    return rows


def markdown_table(result: SuiteResult) -> str:
    """A markdown table of the suite's scores with 95 % bootstrap intervals where computed."""
    lines = [
        f"### {result.suite} (n = {result.n})",
        "",
        "| features | score | metric | value [95% CI] |",
        "|---|---|---|---|",
    ]
    for r in score_rows(result):
        ci = f" [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}]" if r["ci95"] else ""
        lines.append(f"| {r['feature_set']} | {r['score']} | {r['metric']} | {r['value']:.3f}{ci} |")
    return "\n".join(lines) + "\n"


def plot_scores(result: SuiteResult, out: Path) -> Path:
    """Horizontal bars of accuracy with 95 % intervals, one per feature set and protocol."""
    rows = [r for r in score_rows(result) if r["metric"] != "macro_f1"]
    labels = [f"{r['feature_set']} | {r['score']} | {r['metric']}" for r in rows]
    values = np.array([r["value"] for r in rows])
    err = np.array(
        [[r["value"] - r["ci95"][0], r["ci95"][1] - r["value"]] if r["ci95"] else [0.0, 0.0] for r in rows]
    ).T
    fig = Figure(figsize=(8, 0.35 * len(rows) + 1.2))
    ax = fig.subplots()
    ax.barh(range(len(rows)), values, xerr=err, color="tab:blue", alpha=0.7, capsize=3)
    ax.set_yticks(range(len(rows)), labels, fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_xlabel("score (accuracy or mAP; 95% bootstrap interval where computed)")
    ax.set_title(f"{result.suite} (n = {result.n})")
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    return out


def _pca_2d(features: np.ndarray) -> np.ndarray:
    centred = features - features.mean(0)
    xy = centred @ np.linalg.svd(centred, full_matrices=False)[2][:2].T
    return np.pad(xy, ((0, 0), (0, 2 - xy.shape[1])))  # one point or one component: pad to 2-D


def plot_map(features: np.ndarray, labels: np.ndarray, out: Path, *, title: str, seed: int = 0) -> Path:
    """2-D map of embeddings coloured by label: UMAP when umap-learn is installed and n > 10, else PCA."""
    xy, method = None, "PCA"
    if len(features) > 10:  # UMAP's spectral layout fails on a handful of points
        try:
            import umap  # lazy: optional dependency

            xy = umap.UMAP(random_state=seed, n_neighbors=min(15, len(features) - 1)).fit_transform(features)
            method = "UMAP"
        except ImportError:
            pass
    if xy is None:
        xy = _pca_2d(features)
    fig = Figure(figsize=(6, 5))
    ax = fig.subplots()
    for lab in sorted(set(labels.tolist())):
        sel = labels == lab
        ax.scatter(xy[sel, 0], xy[sel, 1], s=6, label=f"{lab} ({sel.sum()})")
    ax.legend(fontsize=7, markerscale=2)
    ax.set_title(f"{title} ({method})")
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    return out


def write_report(result: SuiteResult, out_dir: Path, *, command: str, precision: str | None = None) -> dict[str, Path]:
    """Write ``<suite>.json``, ``<suite>.md`` and the plots; returns their paths.

    ``precision`` (e.g. ``fp32 + channels-last on cpu AVX512 (...)``) says how the encoders ran: scores
    can move with it, so it is kept beside them.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    name = result.suite
    paths = {"scores_png": plot_scores(result, out_dir / f"{name}_scores.png")}
    for feature_set, feats in result.embeddings.items():
        if result.labels is None:
            break
        paths[f"map_{feature_set}"] = plot_map(
            feats,
            np.asarray(result.labels),
            out_dir / f"{name}_map_{feature_set}.png",
            title=f"{name}: {feature_set}",
        )
    public = {**result.to_dict(), "code_version": __version__, "command": command, "rows": score_rows(result)}
    if precision is not None:
        public["precision"] = precision
    paths["json"] = out_dir / f"{name}.json"
    paths["json"].write_text(json.dumps(public, indent=2, default=_jsonable))
    paths["md"] = out_dir / f"{name}.md"
    ran = f" Encoders ran in {precision}." if precision else ""
    paths["md"].write_text(markdown_table(result) + f"\nReproduce: `{command}`.{ran}\n")
    return paths


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj)}")
