"""What the reconstruction figure and the dashboard page draw: original, masked input (a quarter of the 16x16
patches zeroed, nothing else touched) and the network's reconstruction, on a tiny same-architecture U-Net."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch

from microsnoop.config import EncoderConfig, MaskConfig, PreprocessContract
from microsnoop.models.checkpoint import save_checkpoint
from microsnoop.models.unet import MicrosnoopUNet
from microsnoop.reconstruct import crops_from_files, reconstruct_planes, reconstruction_figure
from services.browse.reconstruction import to_display

TINY = EncoderConfig(depths=(8, 16, 32))
SMALL = PreprocessContract(input_size=64)


def _crops(demo_data: Path) -> torch.Tensor:
    files = sorted((demo_data / "dsb2018" / "images").glob("*.png"))[:2]
    return crops_from_files(files, SMALL, seed=0, max_rows=2)


def test_masked_input_zeroes_exactly_the_chosen_patches(demo_data: Path) -> None:
    torch.manual_seed(0)
    crops = _crops(demo_data)
    assert crops.shape == (2, 1, 64, 64) and crops.std() > 0
    masked, recon = reconstruct_planes(MicrosnoopUNet(TINY), crops, MaskConfig(mask_ratio=0.25), seed=0)
    assert recon.shape == crops.shape and torch.isfinite(recon).all()
    patches = (masked[:, 0].reshape(2, 4, 16, 4, 16) == 0).all(dim=4).all(dim=2)  # 4 x 4 grid of 16-px patches
    zeroed = patches & ~(crops[:, 0].reshape(2, 4, 16, 4, 16) == 0).all(dim=4).all(dim=2)
    assert zeroed.sum(dim=(1, 2)).tolist() == [4, 4]  # 25 % of 16 patches in each crop
    keep = ~patches.repeat_interleave(16, 1).repeat_interleave(16, 2)
    assert torch.equal(masked[:, 0][keep], crops[:, 0][keep])  # everything else untouched
    assert not torch.allclose(recon, masked)  # the network fills the holes (and rewrites the rest)
    again, _ = reconstruct_planes(MicrosnoopUNet(TINY), crops, MaskConfig(mask_ratio=0.25), seed=0)
    assert torch.equal(again, masked)  # the same seed masks the same patches


def test_display_scales_every_panel_by_the_original(demo_data: Path) -> None:
    crops = _crops(demo_data)[:, 0].numpy()
    shown = to_display(crops * 2.0, crops)
    lo, hi = np.percentile(crops[0], [0.5, 99.5])
    assert shown[0].dtype == np.uint8 and shown[0].shape == (64, 64)
    expected = (np.clip((crops[0] * 2.0 - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8)
    assert np.array_equal(shown[0], expected)


def test_figure_has_one_row_of_three_panels_per_plane(demo_data: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    ckpt = save_checkpoint(tmp_path / "tiny.pt", MicrosnoopUNet(TINY), preprocess=SMALL, provenance={"epochs": 1})
    files = sorted((demo_data / "dsb2018" / "images").glob("*.png"))[:2]
    out = reconstruction_figure(ckpt, files, tmp_path / "fig.png", mask=MaskConfig(), max_rows=2)
    height, width = iio.imread(out).shape[:2]
    assert (width, height) == (600, 400)  # 7.5 x 2.5 inches per row at 80 dpi, two rows
