"""Component: segment the nucleus channel of every staged image."""

from kfp.dsl import Dataset, Input, Output


def segment(staged: Input[Dataset], channel: int, segmenter: str, segmented: Output[Dataset]) -> dict:
    """Label images of nuclei; the output table adds mask paths and cell counts."""
    from services.steps import segment_step

    return segment_step(staged.path, segmented.path, channel=channel, segmenter=segmenter)
