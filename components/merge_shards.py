"""Component: gather the embedded shards by key into one embeddings folder."""

from kfp.dsl import Dataset, Input, Output


def merge_shards(shards: Input[list[Dataset]], plan: list, embeddings: Output[Dataset]) -> dict:
    """Every planned shard exactly once (else a clear error), rows sorted by image id; returns the model version."""
    from services.sharding import merge_shards_step

    return merge_shards_step([s.path for s in shards], embeddings.path, plan=plan)
