"""Component: plan the shards of a staged folder (deterministic, keyed by image content)."""

from kfp.dsl import Dataset, Input


def shard_images(staged: Input[Dataset], n_shards: int) -> list:
    """The non-empty shards (index, key, image count) that the parallel segment -> embed loop iterates over."""
    from services.sharding import plan_shards

    return plan_shards(staged.path, n_shards)
