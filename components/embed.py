"""Component: embed images with a registered encoder (GPU in the compiled spec)."""

from kfp.dsl import Dataset, Input, Output


def embed(
    segmented: Input[Dataset], model_ref: str, mode: str, rc: float, gray_rgb: bool, embeddings: Output[Dataset]
) -> dict:
    """Embed every image (cell-region: crop, embed, average cells); returns the model version used."""
    from services.steps import embed_step

    return embed_step(segmented.path, embeddings.path, model_ref=model_ref, mode=mode, rc=rc, gray_rgb=gray_rgb)
