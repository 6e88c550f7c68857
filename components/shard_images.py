"""Component: plan the shards of a staged folder (deterministic, keyed by image content)."""

from kfp.dsl import Dataset, Input


def shard_images(staged: Input[Dataset], n_shards: int, intensity: str, model_ref: str, gray_rgb: bool) -> list:
    """The non-empty shards (index, key, image count) that the parallel segment -> embed loop iterates over;
    under intensity 'dataset' each also carries the levels fitted once on the whole staged folder."""
    from services.sharding import shard_step

    return shard_step(staged.path, n_shards, intensity=intensity, model_ref=model_ref, gray_rgb=gray_rgb)
