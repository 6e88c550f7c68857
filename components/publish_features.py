"""Component: publish embeddings into the PostgreSQL + pgvector feature store."""

from kfp.dsl import Dataset, Input


def publish_features(embeddings: Input[Dataset], sphered: Input[Dataset], embedded: dict, replace: bool) -> dict:
    """Upsert keyed by (model version, entity id), or with replace swap in a model version's rows; counts per level."""
    from services.steps import publish_step

    return publish_step(
        embeddings.path, model_version=embedded["model_version"], sphered_dir=sphered.path, replace=replace
    )
