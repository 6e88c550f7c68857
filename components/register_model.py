"""Component: register the encoder in MLflow with lineage; move `champion` only on improvement."""

from kfp.dsl import Input, Model


def register_model(
    model: Input[Model], trained: dict, evaluation: dict, pool_info: dict, baseline_checkpoint: str
) -> dict:
    """Register candidate (and baseline once); returns name, version, model_uri and whether it was promoted."""
    import os

    from services.steps import register_step

    checkpoint = os.path.join(model.path, trained["checkpoint_name"])
    return register_step(checkpoint, evaluation, pool=pool_info, params=trained["params"], baseline=baseline_checkpoint)
