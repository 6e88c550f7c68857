"""Component: upsert embeddings into the PostgreSQL + pgvector feature store."""

from kfp.dsl import Dataset, Input


def publish_features(embeddings: Input[Dataset], sphered: Input[Dataset], embedded: dict) -> dict:
    """Idempotent publish keyed by (model version, entity id); returns row counts per level."""
    from services.steps import publish_step

    return publish_step(embeddings.path, model_version=embedded["model_version"], sphered_dir=sphered.path)
