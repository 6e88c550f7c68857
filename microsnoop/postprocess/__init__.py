"""Batch-experiment post-processing: sphering and aggregation."""
