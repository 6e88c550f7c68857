"""Masked self-supervised pretraining."""
