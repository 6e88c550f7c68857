"""Component: segment the nucleus channel of every image of one shard."""

from kfp.dsl import Dataset, Input, Output


def segment(staged: Input[Dataset], shard: dict, channel: int, segmenter: str, segmented: Output[Dataset]) -> dict:
    """Label one shard's images of nuclei (restored when done before); adds mask paths and cell counts."""
    from services.sharding import segment_shard_step

    return segment_shard_step(staged.path, segmented.path, shard=shard, channel=channel, segmenter=segmenter)
