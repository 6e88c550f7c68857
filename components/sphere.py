"""Component: sphere profiles on negative controls per batch."""

from kfp.dsl import Dataset, Input, Output


def sphere(
    embeddings: Input[Dataset], control_column: str, control_value: str, batch_column: str, sphered: Output[Dataset]
) -> dict:
    """ZCA-corr sphering fitted on controls (or on all images when there are none; reported)."""
    from services.steps import sphere_step

    return sphere_step(
        embeddings.path,
        sphered.path,
        control_column=control_column,
        control_value=control_value,
        batch_column=batch_column,
    )
