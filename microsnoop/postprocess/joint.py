"""Multi-modal joint embeddings, as in the paper: each modality reduced by PCA to a common size, then concatenated.

A *modality* is one block of features of the same samples: a channel's block of a multi-channel
embedding (``ch0_*``, ``ch1_*``, ...) or the features of another table joined on an id. Each block is
centred and reduced by PCA to ``n_components``; with ``balance`` every reduced block is scaled to unit
total variance so that no modality dominates the concatenation by its spread alone.

>>> rng = np.random.default_rng(0)
>>> blocks = {"dna": rng.normal(size=(50, 16)), "brightfield": rng.normal(size=(50, 8))}
>>> JointEmbedding(JointConfig(n_components=4)).fit_transform(blocks).shape
(50, 8)
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.decomposition import PCA

from microsnoop.errors import ConfigError, ManifestError

CHANNEL_FEATURE = re.compile(r"^ch(\d+)_\d+$")


@dataclass(frozen=True)
class JointConfig:
    """Latent size per modality and whether the reduced blocks are scaled to equal total variance."""

    n_components: int = 32
    balance: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n_components < 1:
            raise ConfigError(f"n_components must be at least 1, got {self.n_components}")


class JointEmbedding:
    """Fit one PCA per modality; ``transform`` concatenates the reduced blocks in the fitted order."""

    def __init__(self, config: JointConfig | None = None) -> None:
        self.config = config or JointConfig()
        self.pcas: dict[str, PCA] = {}
        self.scales: dict[str, float] = {}

    def fit(self, blocks: Mapping[str, np.ndarray]) -> JointEmbedding:
        """Fit the per-modality PCAs on ``blocks`` (name -> ``N x d``, the same N samples in the same order)."""
        n = _check_blocks(blocks)
        for name, x in blocks.items():
            k = min(self.config.n_components, n, x.shape[1])
            if k < self.config.n_components:
                raise ConfigError(
                    f"modality {name!r}: {x.shape[1]} features and {n} samples allow at most {k} components, "
                    f"not {self.config.n_components}; lower --n-components"
                )
            pca = PCA(n_components=k, random_state=self.config.seed).fit(np.asarray(x, np.float64))
            self.pcas[name] = pca
            total = float(pca.explained_variance_.sum())
            self.scales[name] = 1.0 / np.sqrt(total) if self.config.balance and total > 0 else 1.0
        return self

    def transform_blocks(self, blocks: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Each modality reduced (and balanced), keyed by name."""
        if not self.pcas:
            raise ConfigError("JointEmbedding is not fitted; call fit() first")
        missing = set(self.pcas) - set(blocks)
        if missing:
            raise ConfigError(f"modalities {sorted(missing)} were fitted but not given; pass every fitted modality")
        _check_blocks(blocks)
        return {
            name: (pca.transform(np.asarray(blocks[name], np.float64)) * self.scales[name]).astype(np.float32)
            for name, pca in self.pcas.items()
        }

    def transform(self, blocks: Mapping[str, np.ndarray]) -> np.ndarray:
        """The joint embedding: reduced blocks concatenated, ``N x (modalities * n_components)``."""
        return np.concatenate(list(self.transform_blocks(blocks).values()), axis=1)

    def fit_transform(self, blocks: Mapping[str, np.ndarray]) -> np.ndarray:
        """:meth:`fit` then :meth:`transform` on the same blocks."""
        return self.fit(blocks).transform(blocks)


def _check_blocks(blocks: Mapping[str, np.ndarray]) -> int:
    if len(blocks) < 1:
        raise ConfigError("no modalities given; a joint embedding needs at least one feature block")
    sizes = {name: np.asarray(x).shape for name, x in blocks.items()}
    rows = {s[0] for s in sizes.values()}
    if len(rows) != 1 or any(len(s) != 2 for s in sizes.values()):
        raise ConfigError(f"modalities must be 2-D blocks of the same samples, got shapes {sizes}")
    for name, x in blocks.items():
        if not np.isfinite(np.asarray(x, np.float64)).all():
            raise ConfigError(f"modality {name!r} holds NaN/Inf values; drop or fix those samples first")
    return rows.pop()


def channel_blocks(table: pd.DataFrame, names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Per-channel blocks of a microsnoop embeddings table (``ch{c}_{k}`` columns), named by ``names`` or ``ch{c}``."""
    by_channel: dict[int, list[str]] = {}
    for column in table.columns:
        match = CHANNEL_FEATURE.match(str(column))
        if match:
            by_channel.setdefault(int(match.group(1)), []).append(str(column))
    if not by_channel:
        raise ManifestError("the table has no ch{c}_{k} feature columns; give a microsnoop embeddings table")
    channels = sorted(by_channel)
    if names is not None and len(names) != len(channels):
        raise ConfigError(f"{len(names)} modality names given for {len(channels)} channels; give one per channel")
    labels = list(names) if names is not None else [f"ch{c}" for c in channels]
    return {label: table[by_channel[c]].to_numpy(np.float64) for label, c in zip(labels, channels, strict=True)}


def blocks_from_tables(
    tables: Mapping[str, pd.DataFrame], *, key: str = "Metadata_ImageID"
) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Join tables of the same samples on ``key``; returns the shared metadata and one block per table.

    Samples missing from any table are dropped (inner join); feature columns are the non-``Metadata_`` ones.
    """
    ids: pd.Index | None = None
    for name, table in tables.items():
        if key not in table.columns:
            raise ManifestError(f"table {name!r} has no {key!r} column; give --key a column every table has")
        if table[key].duplicated().any():
            raise ManifestError(f"table {name!r} repeats ids in {key!r}; aggregate it to one row per sample first")
        ids = pd.Index(table[key]) if ids is None else ids.intersection(pd.Index(table[key]), sort=False)
    if ids is None or len(ids) == 0:
        raise ManifestError(f"the tables share no {key!r} values; they must describe the same samples")
    blocks, meta = {}, None
    for name, table in tables.items():
        rows = table.set_index(key).loc[ids]
        feats = [c for c in rows.columns if not str(c).startswith("Metadata_")]
        blocks[name] = rows[feats].to_numpy(np.float64)
        if meta is None:
            meta = rows[[c for c in rows.columns if str(c).startswith("Metadata_")]].reset_index()
    assert meta is not None
    return meta, blocks


def joint_table(meta: pd.DataFrame, joint: np.ndarray) -> pd.DataFrame:
    """An embeddings-style table: the metadata columns and ``joint_{k:03d}`` features."""
    features = pd.DataFrame(joint, columns=[f"joint_{k:03d}" for k in range(joint.shape[1])])
    return pd.concat([meta.reset_index(drop=True), features], axis=1)


def joint_from_embeddings(
    table: pd.DataFrame, config: JointConfig | None = None, names: Sequence[str] | None = None
) -> pd.DataFrame:
    """The joint table of one embeddings table whose channel blocks are the modalities (one call for a pipeline step).

    Modality names default to ``Metadata_Channels`` (OME-Zarr channel labels) when every row has the same.
    """
    if names is None and "Metadata_Channels" in table.columns and table["Metadata_Channels"].nunique() == 1:
        names = str(table["Metadata_Channels"].iloc[0]).split("|")
    blocks = channel_blocks(table, names)
    meta = table[[c for c in table.columns if str(c).startswith("Metadata_")]]
    return joint_table(meta, JointEmbedding(config).fit_transform(blocks))
