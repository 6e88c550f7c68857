"""The Cellpose-style residual U-Net of Microsnoop, with an encoder usable on its own.

Written here rather than imported from ``cellpose.resnet_torch`` so that the core needs no
cellpose install and the encoder can be split from the decoder (``forward_features``).
The block layout follows cellpose 3 (four BN-ReLU-Conv layers per residual block, a 1x1
projection on the skip path, style vectors added in the decoder).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from microsnoop.config import EncoderConfig, PreprocessContract

# BatchNorm momentum per decoder variant (see EncoderConfig.decoder_variant); a training-time setting only.
BN_MOMENTUM = {"cellpose3": 0.05, "reference": 0.1}


def _bn_relu_conv(cin: int, cout: int, k: int, momentum: float = 0.05) -> nn.Sequential:
    return nn.Sequential(
        nn.BatchNorm2d(cin, eps=1e-5, momentum=momentum),
        nn.ReLU(inplace=True),
        nn.Conv2d(cin, cout, k, padding=k // 2),
    )


def _bn_conv(cin: int, cout: int, k: int, momentum: float = 0.05) -> nn.Sequential:
    return nn.Sequential(
        nn.BatchNorm2d(cin, eps=1e-5, momentum=momentum),
        nn.Conv2d(cin, cout, k, padding=k // 2),
    )


class ResDown(nn.Module):
    """Residual encoder block: two pairs of BN-ReLU-Conv with a 1x1 projected skip."""

    def __init__(self, cin: int, cout: int, k: int, momentum: float = 0.05) -> None:
        super().__init__()
        self.proj = _bn_conv(cin, cout, 1, momentum)
        self.conv = nn.ModuleList([_bn_relu_conv(cin if i == 0 else cout, cout, k, momentum) for i in range(4)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block."""
        x = self.proj(x) + self.conv[1](self.conv[0](x))
        return x + self.conv[3](self.conv[2](x))


class Encoder(nn.Module):
    """Downsampling path: one residual block per level, 2x2 max-pool between levels."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        widths = (config.in_channels, *config.depths)
        momentum = BN_MOMENTUM[config.decoder_variant]
        self.blocks = nn.ModuleList(
            [ResDown(widths[i], widths[i + 1], config.kernel_size, momentum) for i in range(len(config.depths))]
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Return the feature map of every level, shallowest first."""
        feats: list[torch.Tensor] = []
        for i, block in enumerate(self.blocks):
            x = block(F.max_pool2d(x, 2) if i > 0 else x)
            feats.append(x)
        return feats


def pool_features(deepest: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Average the deepest map over all positions, or over those a ``B x 1 x H x W`` input mask covers.

    A deepest-map position counts as valid when its ``f x f`` input window (``f`` = the downsampling
    factor) overlaps the mask, so a crop on a larger zero canvas is pooled over its own footprint only.
    """
    if valid is None:
        return deepest.float().mean(dim=(-2, -1))
    factor = valid.shape[-1] // deepest.shape[-1]
    weight = F.max_pool2d(valid.float(), factor) if factor > 1 else valid.float()
    total = weight.sum(dim=(-2, -1)).clamp_min(1.0)
    return (deepest.float() * weight).sum(dim=(-2, -1)) / total


def make_style(deepest: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Average pool of the deepest map (optionally over the valid region), L2-normalised: the style / embedding."""
    return F.normalize(pool_features(deepest, valid), p=2.0, dim=1)


class StyleConv(nn.Module):
    """BN-ReLU-Conv whose input is shifted by a linear map of the style vector (after or before the BN)."""

    def __init__(
        self, cin: int, cout: int, style_dim: int, k: int, *, style_before_bn: bool = False, momentum: float = 0.05
    ) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(cin, eps=1e-5, momentum=momentum)
        self.conv = nn.Conv2d(cin, cout, k, padding=k // 2)
        self.full = nn.Linear(style_dim, cin)
        self.style_before_bn = style_before_bn

    def forward(self, style: torch.Tensor, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        """Apply the layer; ``skip`` (same shape as x) is added first when given."""
        if skip is not None:
            x = x + skip
        feat = self.full(style.to(self.full.weight.dtype)).to(x.dtype)[:, :, None, None]
        x = F.relu(self.bn(x + feat)) if self.style_before_bn else F.relu(self.bn(x) + feat)
        return self.conv(x)


class ResUp(nn.Module):
    """Residual decoder block with skip connection and style."""

    def __init__(self, cin: int, cout: int, style_dim: int, k: int, variant: str = "cellpose3") -> None:
        super().__init__()
        m = BN_MOMENTUM[variant]
        before = variant == "reference"
        self.conv0 = _bn_relu_conv(cin, cout, k, m)
        self.conv1 = StyleConv(cout, cout, style_dim, k, style_before_bn=before, momentum=m)
        self.conv2 = StyleConv(cout, cout, style_dim, k, style_before_bn=before, momentum=m)
        self.conv3 = StyleConv(cout, cout, style_dim, k, style_before_bn=before, momentum=m)
        self.proj = _bn_conv(cin, cout, 1, m)

    def forward(self, x: torch.Tensor, skip: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        """Apply the block."""
        x = self.proj(x) + self.conv1(style, self.conv0(x), skip=skip)
        return x + self.conv3(style, self.conv2(style, x))


class Decoder(nn.Module):
    """Upsampling path mirroring the encoder, with style vectors at every stage."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        d = config.depths
        style_dim = d[-1]
        k = config.kernel_size
        v = config.decoder_variant
        # Deepest stage refines the bottom map (cin == cout), then each stage goes one level up.
        self.blocks = nn.ModuleList(
            [ResUp(d[-1], d[-1], style_dim, k, v)]
            + [ResUp(d[i + 1], d[i], style_dim, k, v) for i in reversed(range(len(d) - 1))]
        )

    def forward(self, feats: list[torch.Tensor], style: torch.Tensor) -> torch.Tensor:
        """Decode the encoder's maps (shallowest first) into the top-level map."""
        x = self.blocks[0](feats[-1], feats[-1], style)
        for block, skip in zip(self.blocks[1:], reversed(feats[:-1]), strict=True):
            x = F.interpolate(x, scale_factor=2, mode="nearest")
            x = block(x, skip, style)
        return x


class MicrosnoopUNet(nn.Module):
    """Full network: encoder + styled decoder + 1x1 output head (reconstruction)."""

    def __init__(self, config: EncoderConfig | None = None) -> None:
        super().__init__()
        self.config = config or EncoderConfig()
        self.encoder = Encoder(self.config)
        self.decoder = Decoder(self.config)
        self.head = _bn_relu_conv(
            self.config.depths[0], self.config.out_channels, 1, BN_MOMENTUM[self.config.decoder_variant]
        )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Embedding of each image: pooled, L2-normalised deepest map (``B x depths[-1]``)."""
        return make_style(self.encoder(x)[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruct the input (``B x out_channels x H x W``); H and W must divide by 2**(levels-1)."""
        check_spatial(x, len(self.config.depths))
        feats = self.encoder(x)
        style = make_style(feats[-1])
        return self.head(self.decoder(feats, style))


class MicrosnoopEncoder(nn.Module):
    """The encoder alone, returning embeddings; what profiling loads (with its preprocessing contract)."""

    preprocess: PreprocessContract
    provenance: dict[str, Any]

    def __init__(
        self,
        config: EncoderConfig | None = None,
        *,
        l2_normalize: bool = True,
        preprocess: PreprocessContract | None = None,
    ) -> None:
        super().__init__()
        self.config = config or EncoderConfig()
        self.preprocess = preprocess or PreprocessContract()
        self.provenance = {}
        self.encoder = Encoder(self.config)
        self.l2_normalize = l2_normalize

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """Embed ``B x in_channels x H x W`` into ``B x depths[-1]`` float32 vectors.

        ``valid`` (``B x 1 x H x W``, nonzero where the image is, zero on padding) restricts the
        average pool to the image's footprint (``PreprocessContract.pooling == "valid"``).
        """
        deepest = self.encoder(x)[-1]
        if self.l2_normalize:
            return make_style(deepest, valid)
        return pool_features(deepest, valid)


def check_spatial(x: torch.Tensor, levels: int) -> None:
    """Raise a clear error when H or W cannot go through ``levels`` levels of pooling."""
    factor = 2 ** (levels - 1)
    h, w = x.shape[-2:]
    if h % factor or w % factor:
        raise ValueError(
            f"input of size {h}x{w} must have H and W divisible by {factor}; "
            "pad it first (microsnoop.preprocess.pad_to_square)"
        )
