"""One-file checkpoints: weights, network config, preprocessing contract and provenance."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from microsnoop import __version__
from microsnoop.config import EncoderConfig, PreprocessContract, config_from_dict
from microsnoop.errors import CheckpointError
from microsnoop.models.unet import MicrosnoopEncoder, MicrosnoopUNet

FORMAT = "microsnoop-checkpoint/1"


@dataclass(frozen=True)
class Checkpoint:
    """The parsed content of a checkpoint file."""

    kind: str
    state_dict: dict[str, torch.Tensor]
    encoder: EncoderConfig
    preprocess: PreprocessContract
    provenance: dict[str, Any] = field(default_factory=dict)
    training_state: dict[str, Any] | None = None


def save_checkpoint(
    path: str | Path,
    model: torch.nn.Module,
    *,
    preprocess: PreprocessContract,
    provenance: dict[str, Any],
    training_state: dict[str, Any] | None = None,
    encoder_only: bool = False,
    half: bool = False,
) -> Path:
    """Write ``model`` and its contract to ``path`` atomically (temp file, then rename)."""
    path = Path(path)
    unwrapped: torch.nn.Module = getattr(model, "module", model)
    config = unwrapped.config
    if not isinstance(config, EncoderConfig):
        raise TypeError(f"cannot checkpoint {type(unwrapped).__name__}: it has no EncoderConfig in .config")
    state = {k: v.detach().cpu().clone() for k, v in unwrapped.state_dict().items()}
    if encoder_only:
        state = {k: v for k, v in state.items() if k.startswith("encoder.")}
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    payload = {
        "format": FORMAT,
        "kind": "encoder" if encoder_only else "unet",
        "state_dict": state,
        "encoder_config": config.to_dict(),
        "preprocess": preprocess.to_dict(),
        "provenance": {"code_version": __version__, **provenance},
        "training_state": training_state,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return path


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint`, with a clear error if it is not one."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"{path}: no such checkpoint file; pass the path of a .pt written by 'microsnoop pretrain'"
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt files
        raise CheckpointError(
            f"{path}: not a readable checkpoint ({exc.__class__.__name__}: {exc}); re-export it"
        ) from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a microsnoop checkpoint (expected format {FORMAT!r})")
    missing = [k for k in ("kind", "state_dict", "encoder_config", "preprocess") if k not in payload]
    if missing or payload["kind"] not in ("unet", "encoder"):
        raise CheckpointError(
            f"{path}: checkpoint lacks {missing or ['a valid kind']} (kind must be 'unet' or 'encoder'); "
            "re-export it with 'microsnoop export' from the training run's last.pt"
        )
    try:
        encoder = config_from_dict(EncoderConfig, payload["encoder_config"])
        preprocess = config_from_dict(PreprocessContract, payload["preprocess"])
    except (TypeError, ValueError, KeyError) as exc:
        raise CheckpointError(f"{path}: its stored config is invalid ({exc}); re-export it") from exc
    return Checkpoint(
        kind=payload["kind"],
        state_dict=payload["state_dict"],
        encoder=encoder,
        preprocess=preprocess,
        provenance=payload.get("provenance", {}),
        training_state=payload.get("training_state"),
    )


def _load_weights(module: torch.nn.Module, state: dict[str, torch.Tensor], path: Path | str, *, strict: bool) -> Any:
    """load_state_dict, with a CheckpointError when the weights do not fit the stored network config."""
    try:
        return module.load_state_dict(state, strict=strict)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[1:2] or [str(exc)[:200]]
        raise CheckpointError(
            f"{path}: weights do not match the stored network config ({first[0].strip()}); "
            "the file was edited or mixes two models: re-export it from its training run"
        ) from exc


def _float_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


def load_unet(path: str | Path) -> tuple[MicrosnoopUNet, Checkpoint]:
    """Load the full U-Net (for reconstruction or resumed training); needs a non-encoder-only file."""
    ckpt = load_checkpoint(path)
    if ckpt.kind != "unet":
        raise CheckpointError(
            f"{path}: holds only encoder weights; use a training checkpoint (last.pt) for reconstruction"
        )
    model = MicrosnoopUNet(ckpt.encoder)
    _load_weights(model, _float_state(ckpt.state_dict), path, strict=True)
    return model.eval(), ckpt


def load_encoder(path: str | Path) -> MicrosnoopEncoder:
    """Return a ready (eval-mode, float32) encoder with its contract attached as ``.preprocess``."""
    ckpt = load_checkpoint(path)
    encoder = MicrosnoopEncoder(
        ckpt.encoder, l2_normalize=ckpt.preprocess.embedding_norm == "l2", preprocess=ckpt.preprocess
    )
    enc_state = {k: v for k, v in _float_state(ckpt.state_dict).items() if k.startswith("encoder.")}
    missing, unexpected = _load_weights(encoder, enc_state, path, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{path}: weights do not match the stored network config (missing {missing[:3]}...)")
    encoder.provenance = ckpt.provenance
    return encoder.eval()


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
