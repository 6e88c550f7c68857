"""Pool dataset and the type-balanced epoch plan for pretraining."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from microsnoop.config import AugmentConfig, PreprocessContract
from microsnoop.preprocess.augment import random_crop
from microsnoop.preprocess.normalize import normalize_percentile

VALIDATION_EPOCH = 2**31 - 1  # seed slot for fixed validation crops and masks, never a real epoch


def load_planes(
    pool_dir: Path, manifest: pd.DataFrame, contract: PreprocessContract, *, progress: bool = True
) -> list[np.ndarray]:
    """Load and percentile-normalise every plane of the manifest (float16 to halve memory)."""
    planes = []
    for rel in tqdm(manifest["plane_path"], desc="load pool", unit="plane", disable=not progress):
        plane = np.load(pool_dir / rel)
        norm = normalize_percentile(
            plane, lower=contract.lower_percentile, upper=contract.upper_percentile, clip=contract.clip
        )
        planes.append(norm.astype(np.float16))
    return planes


def plan_epoch(types: np.ndarray, *, images_per_epoch: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """Batches of plane indices for one epoch, taking whole batches from each image type in turn.

    Unequal type sizes then do not dominate; within a type, images are drawn without replacement
    (reshuffled when exhausted). Deterministic in ``(seed, epoch)``.
    """
    rng = np.random.default_rng([seed, epoch, 7])
    names = sorted(set(types.tolist()))
    order = rng.permutation(len(names))
    pools = {n: np.flatnonzero(types == n) for n in names}
    queues: dict[str, list[int]] = {n: [] for n in names}
    n_batches = -(-images_per_epoch // batch_size)
    batches = []
    for b in range(n_batches):
        name = names[order[b % len(names)]]
        take = min(batch_size, images_per_epoch - b * batch_size)
        batch: list[int] = []
        while len(batch) < take:
            if not queues[name]:
                queues[name] = rng.permutation(pools[name]).tolist()
            batch.append(queues[name].pop())
        batches.append(batch)
    return batches


class CropDataset(Dataset[torch.Tensor]):
    """Random augmented crops of pool planes; item ``(epoch, slot, plane)`` is deterministic."""

    def __init__(self, planes: list[np.ndarray], *, size: int, augment: AugmentConfig, seed: int) -> None:
        self.planes = planes
        self.size = size
        self.augment = augment
        self.seed = seed

    def __len__(self) -> int:
        return len(self.planes)

    def __getitem__(self, key: tuple[int, int, int]) -> torch.Tensor:  # type: ignore[override]
        epoch, slot, index = key
        rng = np.random.default_rng([self.seed, epoch, slot, index])
        crop = random_crop(self.planes[index].astype(np.float32), self.size, self.augment, rng)
        lo, hi = self.augment.brightness_range
        if hi > lo:  # drawn after the geometry, so runs without it keep their crops
            crop *= np.float32(np.exp(rng.uniform(np.log(lo), np.log(hi))))
        return torch.from_numpy(crop)[None]


def fixed_crops(planes: list[np.ndarray], *, size: int, augment: AugmentConfig, seed: int, limit: int) -> torch.Tensor:
    """A reproducible set of up to ``limit`` crops (one per plane) for validation and figures."""
    ds = CropDataset(planes, size=size, augment=augment, seed=seed)
    return (
        torch.stack([ds[(VALIDATION_EPOCH, i, i)] for i in range(min(limit, len(planes)))])
        if planes
        else torch.empty(0)
    )
