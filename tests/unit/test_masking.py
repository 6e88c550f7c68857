"""Masking zeroes exactly the configured share of whole 16x16 patches."""

from __future__ import annotations

import pytest
import torch

from microsnoop.config import MaskConfig
from microsnoop.models.masking import apply_mask, count_masked_patches, make_patch_mask


@pytest.mark.parametrize(
    ("size", "ratio", "expected"), [(224, 0.25, 49), (224, 0.75, 147), (224, 0.05, 10), (64, 0.25, 4), (96, 0.5, 18)]
)
def test_exact_count_of_zeroed_patches(size: int, ratio: float, expected: int) -> None:
    cfg = MaskConfig(mask_ratio=ratio)
    assert count_masked_patches(size, size, cfg) == expected
    mask = make_patch_mask(5, size, size, cfg, generator=torch.Generator().manual_seed(1))
    patches = mask[:, 0].unfold(1, 16, 16).unfold(2, 16, 16)  # B x gh x gw x 16 x 16
    full = patches.all(dim=-1).all(dim=-1)
    empty = (~patches).all(dim=-1).all(dim=-1)
    assert bool((full | empty).all()), "every patch must be wholly masked or wholly kept"
    assert full.flatten(1).sum(1).tolist() == [expected] * 5


def test_masked_pixels_are_zero_and_others_untouched() -> None:
    images = torch.rand(2, 1, 224, 224) + 0.5
    mask = make_patch_mask(2, 224, 224, MaskConfig(), generator=torch.Generator().manual_seed(0))
    out = apply_mask(images, mask)
    assert bool((out[mask] == 0).all())
    assert torch.equal(out[~mask], images[~mask])
    assert int(mask.sum()) == 2 * 49 * 256


def test_masks_differ_between_images_and_follow_the_seed() -> None:
    a = make_patch_mask(4, 224, 224, MaskConfig(), generator=torch.Generator().manual_seed(3))
    b = make_patch_mask(4, 224, 224, MaskConfig(), generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert not torch.equal(a[0], a[1])
