"""Feast definitions over the feature store's tables: entities, PostgreSQL sources, feature views, services.

Each level's rows are keyed by (model_version, <level>_id) because one entity has one row per model
version. Features are the scalar metadata; vectors stay in our typed pgvector index (Feast stores them
untyped, without an ANN index). ``published_at`` is the event timestamp.
"""

from __future__ import annotations

from datetime import timedelta

from feast import Entity, FeatureService, FeatureView, Field, ValueType
from feast.infra.offline_stores.contrib.postgres_offline_store.postgres_source import PostgreSQLSource
from feast.types import Float64, Int64, String

model = Entity(name="model", join_keys=["model_version"], value_type=ValueType.STRING, description="encoder version")
image = Entity(name="image", join_keys=["image_id"], value_type=ValueType.STRING, description="Metadata_ImageID")
cell = Entity(name="cell", join_keys=["cell_id"], value_type=ValueType.STRING, description="ImageID:CellLabel")
treatment = Entity(
    name="treatment", join_keys=["treatment_id"], value_type=ValueType.STRING, description="Compound@Concentration"
)

image_source = PostgreSQLSource(
    name="image_embeddings_source",
    query="SELECT model_version, entity_id AS image_id, plate, well, compound, dose, moa, label, image_uri, "
    "dim::bigint AS dim, published_at FROM image_embeddings",
    timestamp_field="published_at",
)
cell_source = PostgreSQLSource(
    name="cell_embeddings_source",
    query="SELECT model_version, entity_id AS cell_id, image_id AS parent_image_id, cell_label, plate, well, "
    "label, image_uri, box_x0, box_y0, box_x1, box_y1, dim::bigint AS dim, published_at FROM cell_embeddings",
    timestamp_field="published_at",
)
treatment_source = PostgreSQLSource(
    name="treatment_embeddings_source",
    query="SELECT model_version, entity_id AS treatment_id, compound, dose, moa, "
    "(extra->>'Metadata_n')::bigint AS n, dim::bigint AS dim, published_at FROM treatment_embeddings",
    timestamp_field="published_at",
)

image_metadata = FeatureView(
    name="image_metadata",
    entities=[model, image],
    ttl=timedelta(0),
    schema=[
        Field(name="plate", dtype=String),
        Field(name="well", dtype=String),
        Field(name="compound", dtype=String),
        Field(name="dose", dtype=Float64),
        Field(name="moa", dtype=String),
        Field(name="label", dtype=String),
        Field(name="image_uri", dtype=String),
        Field(name="dim", dtype=Int64),
    ],
    source=image_source,
    online=True,
)
cell_metadata = FeatureView(
    name="cell_metadata",
    entities=[model, cell],
    ttl=timedelta(0),
    schema=[
        Field(name="parent_image_id", dtype=String),
        Field(name="cell_label", dtype=Int64),
        Field(name="plate", dtype=String),
        Field(name="well", dtype=String),
        Field(name="label", dtype=String),
        Field(name="image_uri", dtype=String),
        Field(name="box_x0", dtype=Int64),
        Field(name="box_y0", dtype=Int64),
        Field(name="box_x1", dtype=Int64),
        Field(name="box_y1", dtype=Int64),
        Field(name="dim", dtype=Int64),
    ],
    source=cell_source,
    online=True,
)
treatment_metadata = FeatureView(
    name="treatment_metadata",
    entities=[model, treatment],
    ttl=timedelta(0),
    schema=[
        Field(name="compound", dtype=String),
        Field(name="dose", dtype=Float64),
        Field(name="moa", dtype=String),
        Field(name="n", dtype=Int64),
        Field(name="dim", dtype=Int64),
    ],
    source=treatment_source,
    online=True,
)

image_service = FeatureService(name="image_service", features=[image_metadata])
cell_service = FeatureService(name="cell_service", features=[cell_metadata])
treatment_service = FeatureService(name="treatment_service", features=[treatment_metadata])

FEATURE_VIEWS = {"image": image_metadata, "cell": cell_metadata, "treatment": treatment_metadata}
JOIN_KEYS = {"image": "image_id", "cell": "cell_id", "treatment": "treatment_id"}
OBJECTS = [model, image, cell, treatment, image_metadata, cell_metadata, treatment_metadata,
           image_service, cell_service, treatment_service]  # fmt: skip
