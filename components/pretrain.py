"""Component: masked self-supervised pretraining of the U-Net (GPU in the compiled spec)."""

from kfp.dsl import Dataset, Input, Model, Output


def pretrain(pool: Input[Dataset], epochs: int, images_per_epoch: int, model: Output[Model]) -> dict:
    """Pretrain on the pool; the encoder checkpoint lands in the model artifact."""
    from services.steps import pretrain_step

    return pretrain_step(pool.path, model.path, epochs=epochs, images_per_epoch=images_per_epoch)
