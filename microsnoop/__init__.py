"""Microsnoop: unbiased embeddings of heterogeneous microscopy images."""

__version__ = "0.1.0"
