"""Cluster quality against known labels, and the joint-vs-single-modality comparison built on it.

``silhouette`` is the mean silhouette of the *known labels* in the feature space (Euclidean; how well
the classes separate, -1..1), with a 95 % bootstrap interval over the per-sample silhouettes. ``ari``
is the adjusted Rand index between KMeans clusters (k = number of labels, 10 restarts) and the labels
(0 = chance, 1 = identical); its spread is the range over 10 KMeans seeds (a bootstrap of a pair-counting
index is biased upward by the duplicated samples, so none is given).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score, silhouette_samples

from microsnoop.errors import ConfigError
from microsnoop.evaluate.classification import bootstrap_ci, knn_loo_scores
from microsnoop.postprocess.joint import JointConfig, JointEmbedding

N_SEEDS = 10  # KMeans seeds whose ARI range is reported


def cluster_scores(
    features: np.ndarray, labels: np.ndarray, *, n_boot: int = 1000, seed: int = 0, knn_k: int | None = 11
) -> dict[str, Any]:
    """Silhouette of the labels, ARI of KMeans clusters vs the labels (and kNN accuracy), with 95 % intervals."""
    x = np.asarray(features, np.float64)
    y = np.asarray(labels).astype(str)
    classes = np.unique(y)
    if len(classes) < 2 or len(x) != len(y) or len(x) <= len(classes):
        raise ConfigError(
            f"clustering scores need more samples than labels and at least 2 labels; got {len(x)} samples, "
            f"{len(y)} labels of {len(classes)} classes"
        )
    aris = [
        float(adjusted_rand_score(y, KMeans(n_clusters=len(classes), n_init=10, random_state=s).fit_predict(x)))
        for s in range(seed, seed + N_SEEDS)
    ]
    per_sample = silhouette_samples(x, y)
    out: dict[str, Any] = {
        "n": len(y),
        "k": len(classes),
        "dim": x.shape[1],
        "silhouette": float(per_sample.mean()),
        "silhouette_ci95": bootstrap_ci(
            per_sample, per_sample, lambda a, _b: float(a.mean()), n_boot=n_boot, seed=seed
        ),
        "ari": aris[0],
        "ari_seed_range": (min(aris), max(aris)),
    }
    if knn_k is not None:
        knn = knn_loo_scores(x, y, k=knn_k, n_boot=n_boot)
        out["knn_accuracy"], out["knn_accuracy_ci95"] = knn["accuracy"], knn["accuracy_ci95"]
    return out


def evaluate_joint(
    blocks: Mapping[str, np.ndarray],
    labels: np.ndarray,
    *,
    config: JointConfig | None = None,
    n_boot: int = 1000,
    knn_k: int | None = 11,
) -> dict[str, dict[str, Any]]:
    """Scores of each modality alone (PCA-reduced like in the joint), the joint embedding and the raw concatenation."""
    config = config or JointConfig()
    model = JointEmbedding(config).fit(blocks)
    reduced = model.transform_blocks(blocks)
    sets = {f"{name} (PCA {config.n_components})": x for name, x in reduced.items()}
    sets[f"joint ({len(reduced)} x PCA {config.n_components})"] = np.concatenate(list(reduced.values()), axis=1)
    raw = np.concatenate([np.asarray(b, np.float64) for b in blocks.values()], axis=1)
    sets[f"all channels raw ({raw.shape[1]}-d)"] = raw
    return {name: cluster_scores(x, labels, n_boot=n_boot, seed=config.seed, knn_k=knn_k) for name, x in sets.items()}


def _fmt(value: float, ci: tuple[float, float]) -> str:
    return f"{value:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"


def joint_markdown(results: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> str:
    """A markdown table: one row per (encoder or table, feature set) with silhouette, ARI and kNN accuracy."""
    lines = [
        "| features | modality | silhouette [95% CI] | ARI of KMeans [range, 10 seeds] | kNN accuracy [95% CI] |",
        "|---|---|---|---|---|",
    ]
    for source, sets in results.items():
        for name, s in sets.items():
            knn = _fmt(s["knn_accuracy"], s["knn_accuracy_ci95"]) if "knn_accuracy" in s else "-"
            lines.append(
                f"| {source} | {name} | {_fmt(s['silhouette'], s['silhouette_ci95'])} | "
                f"{_fmt(s['ari'], s['ari_seed_range'])} | {knn} |"
            )
    return "\n".join(lines) + "\n"
