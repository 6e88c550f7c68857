"""Evaluation protocols: kNN and friends."""
