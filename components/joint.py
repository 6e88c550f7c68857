"""Component: the paper's multi-modal joint embedding (PCA per channel, concatenated), or a pass-through."""

from kfp.dsl import Dataset, Input, Output


def joint(embeddings: Input[Dataset], embedded: dict, n_components: int, joint_embeddings: Output[Dataset]) -> dict:
    """n_components > 0: channel blocks reduced and concatenated under a model version of their own; 0: as is."""
    from services.steps import joint_step

    return joint_step(embeddings.path, joint_embeddings.path, embedded=embedded, n_components=n_components)
