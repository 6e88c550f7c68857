"""Array-in, array-out preprocessing: normalisation, padding, augmentation."""

from microsnoop.preprocess.normalize import normalize_percentile, pad_to_size, prepare_batch

__all__ = ["normalize_percentile", "pad_to_size", "prepare_batch"]
