"""Component: curate the pretraining pool (one-channel planes, typed, split, hashed)."""

from kfp.dsl import Dataset, Output


def curate_pool(types_table: str, pool: Output[Dataset]) -> dict:
    """Curate the images listed in a path/type table into a pool; returns its size and manifest hash."""
    from services.steps import curate_step

    return curate_step([], pool.path, types_table=types_table)
