"""Component: masked self-supervised pretraining of the U-Net, in the step or on N workers x G GPUs (PyTorchJob)."""

from kfp.dsl import Dataset, Input, Model, Output


def pretrain(
    pool: Input[Dataset], epochs: int, images_per_epoch: int, workers: int, gpus_per_worker: int, model: Output[Model]
) -> dict:
    """workers 0: train in this step; else run a Training Operator job, follow it and keep its checkpoint."""
    if workers == 0:
        from services.steps import pretrain_step

        return pretrain_step(pool.path, model.path, epochs=epochs, images_per_epoch=images_per_epoch)
    from services.trainjob import pretrain_on_operator

    return pretrain_on_operator(
        pool.path,
        model.path,
        workers=workers,
        gpus_per_worker=gpus_per_worker,
        epochs=epochs,
        images_per_epoch=images_per_epoch,
    )
