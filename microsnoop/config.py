"""Frozen, validated configuration dataclasses shared by the core library."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, TypeVar

from microsnoop.errors import ConfigError

T = TypeVar("T")


def config_from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Build a config dataclass from a dict, rejecting unknown keys with a clear message."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{cls.__name__}: unknown keys {unknown}; valid keys are {sorted(names)}")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
    return cls(**values)


@dataclass(frozen=True)
class EncoderConfig:
    """Shape of the Cellpose-style residual U-Net."""

    depths: tuple[int, ...] = (32, 64, 128, 256)
    in_channels: int = 1
    out_channels: int = 1
    kernel_size: int = 3
    # "cellpose3": style added after BatchNorm, BN momentum 0.05 (checkpoints written before this field);
    # "reference": style added before BatchNorm, BN momentum 0.1 (the published network). The encoder's
    # weights and embeddings do not depend on it; only the decoder's forward pass and training do.
    decoder_variant: str = "cellpose3"

    def __post_init__(self) -> None:
        if self.decoder_variant not in DECODER_VARIANTS:
            raise ConfigError(f"decoder_variant must be one of {DECODER_VARIANTS}, got {self.decoder_variant!r}")
        if len(self.depths) < 2 or any(d <= 0 for d in self.depths):
            raise ConfigError(f"depths must list >= 2 positive widths, got {self.depths}")
        if self.kernel_size % 2 != 1:
            raise ConfigError(f"kernel_size must be odd, got {self.kernel_size}")

    @property
    def embedding_dim(self) -> int:
        """Numbers per one-channel image: the width of the deepest level."""
        return self.depths[-1]

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form for checkpoints and manifests."""
        return {**dataclasses.asdict(self), "depths": list(self.depths)}


AMP_CHOICES = ("auto", "bf16", "fp16", "off")


def check_amp(amp: str) -> str:
    """Return ``amp`` when it is a known autocast choice, else raise a one-line error naming the choices.

    >>> check_amp("auto")
    'auto'
    """
    if amp not in AMP_CHOICES:
        raise ConfigError(f"--amp must be one of {', '.join(AMP_CHOICES)}; got {amp!r}")
    return amp


CANVASES = ("fixed", "crop")
POOLINGS = ("all", "valid")
INTENSITIES = ("crop", "dataset")
DECODER_VARIANTS = ("cellpose3", "reference")


@dataclass(frozen=True)
class PreprocessContract:
    """How pixels must be prepared before the encoder sees them; stored with the weights."""

    input_size: int = 224
    lower_percentile: float = 1.0
    upper_percentile: float = 99.0
    normalize_before_pad: bool = True
    clip: bool = False
    embedding_norm: str = "l2"
    protocol: str = "default"  # "reference": the published preprocessing end to end (docs/method-fidelity.md)
    # Content-aware embedding (docs/method-fidelity.md). The defaults reproduce checkpoints written before
    # these fields existed: every crop zero-padded to input_size, global average pool over the whole canvas.
    canvas: str = "fixed"  # "fixed": pad to input_size; "crop": canvas = crop side rounded up to a multiple of 8
    pooling: str = "all"  # "all": average every position; "valid": only the positions the crop covers
    # Intensity scale (docs/intensity.md). "crop": each crop's channel to its own percentiles (the paper's);
    # "dataset": every crop's channel c to the same levels intensity_levels[c] = (low, high), fitted once over
    # the input set, so brightness differences between cells (DNA content, expression) survive.
    intensity: str = "crop"
    intensity_levels: tuple[tuple[float, float], ...] = ()

    def __post_init__(self) -> None:
        self._check_intensity()
        if self.canvas not in CANVASES:
            raise ConfigError(f"canvas must be one of {CANVASES}, got {self.canvas!r}")
        if self.pooling not in POOLINGS:
            raise ConfigError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")
        if self.protocol == "reference" and (self.canvas, self.pooling) != ("fixed", "all"):
            raise ConfigError("protocol 'reference' pads to input_size and pools everything: canvas=fixed, pooling=all")
        if self.protocol == "reference" and self.intensity != "crop":
            raise ConfigError("protocol 'reference' scales every crop to its own percentiles: intensity=crop")
        if self.protocol not in ("default", "reference"):
            raise ConfigError(f"protocol must be 'default' or 'reference', got {self.protocol!r}")
        if self.protocol == "reference" and self.normalize_before_pad:
            raise ConfigError("protocol 'reference' normalises after zero-padding: set normalize_before_pad=False")
        if not 0.0 <= self.lower_percentile < self.upper_percentile <= 100.0:
            raise ConfigError(
                f"percentiles must satisfy 0 <= lower < upper <= 100, got "
                f"{self.lower_percentile}, {self.upper_percentile}"
            )
        if self.embedding_norm not in ("l2", "none"):
            raise ConfigError(f"embedding_norm must be 'l2' or 'none', got {self.embedding_norm!r}")
        if self.input_size % 16 != 0:
            raise ConfigError(f"input_size must be a multiple of 16, got {self.input_size}")

    def _check_intensity(self) -> None:
        levels = tuple((float(lo), float(hi)) for lo, hi in self.intensity_levels)
        object.__setattr__(self, "intensity_levels", levels)  # JSON gives lists; keep the dataclass hashable
        if self.intensity not in INTENSITIES:
            raise ConfigError(f"intensity must be one of {INTENSITIES}, got {self.intensity!r}")
        if any(not (math.isfinite(lo) and math.isfinite(hi) and hi > lo) for lo, hi in levels):
            raise ConfigError(f"intensity_levels must be finite (low, high) pairs with high > low, got {levels}")
        if levels and self.intensity != "dataset":
            raise ConfigError("intensity_levels apply to intensity='dataset' only; drop them or set intensity")

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form for checkpoints and manifests."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class MaskConfig:
    """Masked-image modelling: which fraction of which patches is zeroed."""

    patch_size: int = 16
    mask_ratio: float = 0.25

    def __post_init__(self) -> None:
        if not 0.0 <= self.mask_ratio < 1.0:
            raise ConfigError(f"mask_ratio must be in [0, 1), got {self.mask_ratio}")
        if self.patch_size <= 0:
            raise ConfigError(f"patch_size must be positive, got {self.patch_size}")


@dataclass(frozen=True)
class AugmentConfig:
    """Random geometry (and, optionally, brightness) applied to each training crop."""

    max_rotation_deg: float = 180.0
    scale_range: tuple[float, float] = (0.75, 1.25)
    # Each crop (input and reconstruction target) multiplied by a log-uniform factor in this range, so the
    # encoder must carry a crop's brightness (what the dataset intensity scale keeps, docs/intensity.md).
    # (1, 1): off, as in every run before the option.
    brightness_range: tuple[float, float] = (1.0, 1.0)

    def __post_init__(self) -> None:
        for name in ("scale_range", "brightness_range"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi:
                raise ConfigError(f"{name} must satisfy 0 < low <= high, got {getattr(self, name)}")


@dataclass(frozen=True)
class PretrainConfig:
    """Masked self-supervised pretraining: the paper's recipe with CPU-friendly knobs."""

    nepoch: int = 1000
    warmup_epochs: int = 40
    images_per_epoch: int = 12000
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 0.05
    seed: int = 0
    amp: str = "auto"
    channels_last: bool = True
    num_workers: int = 0
    checkpoint_every: int = 1
    max_epochs_this_run: int | None = None
    crop_size: int | None = None  # training crop side; None: preprocess.input_size (paper: 224)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    preprocess: PreprocessContract = field(default_factory=PreprocessContract)
    mask: MaskConfig = field(default_factory=MaskConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self) -> None:
        if self.nepoch <= 0 or self.images_per_epoch <= 0 or self.batch_size <= 0:
            raise ConfigError("nepoch, images_per_epoch and batch_size must be positive")
        if not 0 <= self.warmup_epochs < self.nepoch:
            raise ConfigError(f"warmup_epochs ({self.warmup_epochs}) must be in [0, nepoch={self.nepoch})")
        if self.crop_size is not None and (self.crop_size < 16 or self.crop_size % 16):
            raise ConfigError(f"crop_size must be a multiple of 16 and >= 16, got {self.crop_size}")
        check_amp(self.amp)

    @property
    def train_crop(self) -> int:
        """Side of the square training crops."""
        return self.crop_size or self.preprocess.input_size

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form (nested configs included) for checkpoints and logs."""
        out = dataclasses.asdict(self)
        out["encoder"] = self.encoder.to_dict()
        return out
