"""What every suite shares: its knobs, its typed result, the encoders it scores and the sampling."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from microsnoop.config import EncoderConfig, PreprocessContract
from microsnoop.errors import ConfigError
from microsnoop.models.factory import load_named
from microsnoop.models.unet import MicrosnoopEncoder
from microsnoop.protocol import check_protocol, contract_for_protocol, with_embedding_options

FIELD_MODES = ("cell-region", "rescale")

# One feature set's scores: protocol -> metric -> value, with ``<metric>_ci95`` = [low, high] beside a value,
# nested as deep as the suite needs (e.g. cell-cycle: "7_class" -> "knn" -> "accuracy").
ScoreTree = dict[str, Any]


@dataclass(frozen=True)
class SuiteConfig:
    """Shared knobs of every suite."""

    limit_per_class: int | None = None
    k: int = 11
    n_boot: int = 1000
    seed: int = 0
    batch_size: int = 64
    device: str = "auto"
    amp: str = "auto"
    handcrafted: bool = True
    mlp: bool = True
    field_mode: str = "cell-region"  # dsb2018-fields: cell-region (the paper's) or rescale (one pass per field, fast)
    untrained: EncoderConfig = field(default_factory=EncoderConfig)  # architecture of the untrained baseline
    untrained_preprocess: PreprocessContract = field(default_factory=PreprocessContract)  # and its contract
    protocol: str | None = None  # None: each checkpoint's own contract; else "reference" or "default" for all
    canvas: str | None = None  # None: each checkpoint's own; else "fixed" or "crop" for every encoder
    pooling: str | None = None  # None: each checkpoint's own; else "all" or "valid" for every encoder
    intensity: str | None = None  # None: each checkpoint's own; else "crop" or "dataset" (levels fitted per suite)

    def __post_init__(self) -> None:
        if self.limit_per_class is not None and self.limit_per_class <= 0:
            raise ConfigError(f"limit_per_class must be positive (or None for all), got {self.limit_per_class}")
        if self.k <= 0 or self.n_boot <= 0 or self.batch_size <= 0:
            raise ConfigError(
                f"k, n_boot and batch_size must be positive, got {self.k}, {self.n_boot}, {self.batch_size}"
            )
        if self.field_mode not in FIELD_MODES:
            raise ConfigError(f"field_mode must be one of {FIELD_MODES}, got {self.field_mode!r}")
        if self.protocol is not None:
            check_protocol(self.protocol)


@dataclass(frozen=True)
class SuiteResult:
    """What a suite returns: scores per feature set, provenance and the embeddings behind them.

    ``embeddings`` and ``labels`` feed the plots only; :meth:`to_dict` is what a report saves.
    """

    suite: str
    n: int
    classes: dict[str, int]
    data_hash: str
    models: dict[str, str]
    scores: dict[str, ScoreTree]
    details: dict[str, str | int] = field(default_factory=dict)  # suite-specific facts, saved at the top level
    embeddings: dict[str, np.ndarray] = field(default_factory=dict)
    labels: np.ndarray | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON-able part: suite, n, details, classes, data hash, models and scores."""
        return {
            "suite": self.suite,
            "n": self.n,
            **self.details,
            "classes": dict(self.classes),
            "data_hash": self.data_hash,
            "models": dict(self.models),
            "scores": self.scores,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SuiteResult:
        """Rebuild the scores part from :meth:`to_dict` or a saved report (embeddings are not saved)."""
        known = {"suite", "n", "classes", "data_hash", "models", "scores"}
        missing = sorted(known - set(data))
        if missing:
            raise ConfigError(f"not a suite result: keys {missing} are missing; pass a <suite>.json from a report")
        report_only = {"code_version", "command", "rows", "precision"}
        return cls(
            suite=str(data["suite"]),
            n=int(data["n"]),
            classes={str(k): int(v) for k, v in data["classes"].items()},
            data_hash=str(data["data_hash"]),
            models=dict(data["models"]),
            scores=dict(data["scores"]),
            details={k: v for k, v in data.items() if k not in known | report_only},
        )


# (data folder, name -> checkpoint or None for the untrained network, config) -> result
SuiteFn = Callable[[Path, Mapping[str, Path | None], SuiteConfig], SuiteResult]


def load_encoders(
    checkpoints: Mapping[str, Path | None], config: SuiteConfig
) -> dict[str, tuple[MicrosnoopEncoder, str]]:
    """Name -> (encoder, model id); ``None`` gives the seeded untrained network of ``config.untrained``.

    With ``config.protocol`` set, every encoder's contract is switched to that protocol; ``config.canvas``,
    ``config.pooling`` and ``config.intensity`` override those options of every contract the same way
    (a suite fits ``dataset`` intensity levels on its own images, :func:`with_intensity_levels`).
    """
    out = {}
    for name, path in checkpoints.items():
        encoder, model_id = load_named(
            path, seed=config.seed, config=config.untrained, preprocess=config.untrained_preprocess
        )
        if config.protocol is not None:
            encoder.preprocess = contract_for_protocol(encoder.preprocess, config.protocol)
        encoder.preprocess = with_embedding_options(
            encoder.preprocess, canvas=config.canvas, pooling=config.pooling, intensity=config.intensity
        )
        out[name] = (encoder, model_id)
    return out


def sample_per_class(labels: pd.Series, limit: int | None, seed: int) -> np.ndarray:
    """Row positions, at most ``limit`` per class (seeded), in original order.

    >>> sample_per_class(pd.Series(list("aabbb")), 1, seed=0).tolist()
    [1, 3]
    """
    if limit is None:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    keep = [
        rng.choice(idx, size=min(limit, len(idx)), replace=False) for idx in labels.groupby(labels).indices.values()
    ]
    return np.sort(np.concatenate(keep))


def count_classes(labels: Any) -> dict[str, int]:
    """Items per class, most frequent first, with plain ``str`` keys and ``int`` counts.

    >>> count_classes(["G1", "S", "G1"])
    {'G1': 2, 'S': 1}
    """
    return {str(k): int(v) for k, v in pd.Series(np.asarray(labels)).value_counts().items()}


def hash_array(images: np.ndarray) -> str:
    """SHA-256 of an array's bytes: the identity of a suite's inputs."""
    return hashlib.sha256(np.ascontiguousarray(images).tobytes()).hexdigest()
