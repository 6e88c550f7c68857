"""Component: embed one shard's images with a registered encoder (GPU in the compiled spec)."""

from kfp.dsl import Dataset, Input, Output


def embed(
    segmented: Input[Dataset],
    shard: dict,
    model_ref: str,
    mode: str,
    rc: float,
    gray_rgb: bool,
    intensity: str,
    embeddings: Output[Dataset],
) -> dict:
    """Embed every image of one shard (restored when done before with the same model); returns its summary."""
    from services.sharding import embed_shard_step

    return embed_shard_step(
        segmented.path,
        embeddings.path,
        shard=shard,
        model_ref=model_ref,
        mode=mode,
        rc=rc,
        gray_rgb=gray_rgb,
        intensity=intensity,
    )
