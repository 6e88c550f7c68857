"""Component: put a source table's images into the object store by content hash."""

from kfp.dsl import Dataset, Output


def stage_images(source_table: str, zarr_level: int, staged: Output[Dataset]) -> dict:
    """Upload the images of a path table or OME-Zarr (at resolution zarr_level); the staged table carries their URIs."""
    from services.staging import stage_source_step

    return stage_source_step(source_table, staged.path, level=zarr_level)
