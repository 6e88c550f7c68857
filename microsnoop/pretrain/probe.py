"""A cheap kNN probe of the representation during pretraining (never used for training or selection).

A probe set is an ``.npz`` with ``images`` (``N x C x H x W`` single cells) and ``labels`` (``N``),
built from cells that no benchmark suite scores (``scripts/make_probe_set.py``). Every few epochs the
current encoder embeds them (content-aware contract) and leave-one-out kNN accuracy is logged beside the
loss, so a recipe that lowers the loss while losing information shows up while it trains.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from microsnoop.config import PreprocessContract
from microsnoop.device import Runtime
from microsnoop.embed import embed_images
from microsnoop.errors import InvalidImageError
from microsnoop.evaluate.knn import knn_accuracy_loo
from microsnoop.models.unet import MicrosnoopEncoder, MicrosnoopUNet
from microsnoop.preprocess.normalize import with_intensity_levels
from microsnoop.protocol import with_embedding_options


@dataclass(frozen=True)
class ProbeSet:
    """Labelled single cells for the probe."""

    name: str
    images: np.ndarray
    labels: np.ndarray


def load_probe(path: Path) -> ProbeSet:
    """Read a probe ``.npz`` (``images`` N x C x H x W, ``labels`` N), with a one-line error when malformed."""
    try:
        with np.load(path, allow_pickle=False) as data:
            images, labels = np.asarray(data["images"]), np.asarray(data["labels"])
    except (OSError, KeyError, ValueError) as exc:
        raise InvalidImageError(
            f"{path}: not a probe set ({exc}); write one with scripts/make_probe_set.py (arrays 'images', 'labels')"
        ) from exc
    if images.ndim != 4 or len(images) != len(labels) or len(images) < 12:
        raise InvalidImageError(
            f"{path}: probe needs N x C x H x W images (N >= 12) and N labels; got {images.shape} and {labels.shape}"
        )
    return ProbeSet(name=path.stem, images=images, labels=labels.astype(str))


def zscore(features: np.ndarray) -> np.ndarray:
    """Standardise each feature over the rows (constant features become 0)."""
    sd = features.std(axis=0)
    return (features - features.mean(axis=0)) / np.where(sd > 1e-12, sd, 1.0)


def encoder_of(model: MicrosnoopUNet, contract: PreprocessContract) -> MicrosnoopEncoder:
    """A stand-alone encoder holding a copy of ``model``'s current encoder weights."""
    unwrapped: MicrosnoopUNet = getattr(model, "module", model)
    encoder = MicrosnoopEncoder(unwrapped.config, preprocess=contract)
    state = {k: v.detach().clone() for k, v in unwrapped.state_dict().items() if k.startswith("encoder.")}
    encoder.load_state_dict(state)
    return encoder.eval()


@torch.no_grad()
def probe_scores(
    encoder: MicrosnoopEncoder, probe: ProbeSet, contract: PreprocessContract, runtime: Runtime, *, k: int = 11
) -> dict[str, float]:
    """Leave-one-out kNN accuracy (cosine) on raw and on z-scored embeddings, and their median pairwise cosine:
    each crop on its own intensity scale, and (keys ending ``_dataset``) on one scale fitted on the probe cells
    (docs/intensity.md), the shipped contract's."""
    out = _scores(encoder, probe, with_embedding_options(contract, intensity="crop"), runtime, k)
    dataset = with_intensity_levels(with_embedding_options(contract, intensity="dataset"), probe.images)
    out.update({f"{key}_dataset": value for key, value in _scores(encoder, probe, dataset, runtime, k).items()})
    return out


def _scores(
    encoder: MicrosnoopEncoder, probe: ProbeSet, contract: PreprocessContract, runtime: Runtime, k: int
) -> dict[str, float]:
    feats = embed_images(encoder, probe.images, contract, runtime, batch_size=128)
    unit = feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)
    cos = unit @ unit.T
    upper = cos[np.triu_indices(len(cos), k=1)]
    return {
        "knn_raw": knn_accuracy_loo(feats, probe.labels, k),
        "knn_z": knn_accuracy_loo(zscore(feats), probe.labels, k),
        "median_cosine": float(np.median(upper)),
    }
