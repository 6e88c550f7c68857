"""Encoders by name: a checkpoint file, or the seeded untrained baseline, each with its model id."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from microsnoop.config import EncoderConfig, PreprocessContract
from microsnoop.errors import CheckpointError
from microsnoop.models.checkpoint import file_sha256, load_encoder
from microsnoop.models.unet import MicrosnoopEncoder

UNTRAINED = re.compile(r"untrained(?:\(seed=(?P<seed>\d+)\))?")


def untrained_encoder(
    seed: int = 0, config: EncoderConfig | None = None, preprocess: PreprocessContract | None = None
) -> MicrosnoopEncoder:
    """An encoder of the given architecture (default: the paper's) with seeded random weights.

    The honest baseline: same network, same preprocessing, no training.

    >>> untrained_encoder(0, EncoderConfig(depths=(8, 16, 32))).config.embedding_dim
    32
    """
    torch.manual_seed(seed)
    return MicrosnoopEncoder(config, preprocess=preprocess).eval()


def untrained_id(seed: int, config: EncoderConfig | None = None, preprocess: PreprocessContract | None = None) -> str:
    """Model id of :func:`untrained_encoder`; a non-default architecture or input size is named in it.

    >>> untrained_id(0)
    'untrained(seed=0)'
    >>> untrained_id(1, EncoderConfig(depths=(8, 16, 32)), PreprocessContract(input_size=64))
    'untrained(seed=1,depths=8-16-32,input=64)'
    """
    parts = [f"seed={seed}"]
    if config is not None and config != EncoderConfig():
        parts.append(f"depths={'-'.join(str(d) for d in config.depths)}")
    if preprocess is not None and preprocess != PreprocessContract():
        parts.append(f"input={preprocess.input_size}" if preprocess.input_size != 224 else "contract=custom")
    return f"untrained({','.join(parts)})"


def checkpoint_id(path: Path) -> str:
    """Model id of a checkpoint file: its name and the first 16 hex digits of its SHA-256."""
    return f"{path.name}@sha256:{file_sha256(path)[:16]}"


def load_named(
    name: str | Path | None,
    *,
    seed: int = 0,
    config: EncoderConfig | None = None,
    preprocess: PreprocessContract | None = None,
) -> tuple[MicrosnoopEncoder, str]:
    """An eval-mode encoder and its model id, from a checkpoint path or ``untrained[(seed=N)]``.

    ``None`` is the untrained network with ``seed``; ``config`` and ``preprocess`` are the untrained
    network's architecture and contract (a checkpoint carries its own).

    >>> encoder, model_id = load_named("untrained(seed=3)", config=EncoderConfig(depths=(8, 16, 32)))
    >>> model_id
    'untrained(seed=3,depths=8-16-32)'
    """
    if name is None:
        return untrained_encoder(seed, config, preprocess), untrained_id(seed, config, preprocess)
    text = str(name)
    match = UNTRAINED.fullmatch(text)
    if match and not Path(text).exists():
        seed = int(match["seed"]) if match["seed"] is not None else seed
        return untrained_encoder(seed, config, preprocess), untrained_id(seed, config, preprocess)
    path = Path(name)
    if not path.is_file():
        raise CheckpointError(
            f"{path}: no such checkpoint file; pass the path of a .pt written by 'microsnoop pretrain' "
            "(or 'microsnoop export'), or 'untrained' / 'untrained(seed=N)' for the untrained network"
        )
    return load_encoder(path), checkpoint_id(path)
