"""Benchmark suites on real data: every feature set scored on the same inputs, with baselines.

One module per suite, the shared types in :mod:`microsnoop.evaluate.suites.base`, and the registry here:

>>> sorted(suites())
['bbbc021-cells', 'bbbc021-profiles', 'cell-cycle', 'dsb2018-fields']
"""

from __future__ import annotations

from microsnoop.errors import ConfigError
from microsnoop.evaluate.suites.base import SuiteConfig, SuiteFn, SuiteResult
from microsnoop.evaluate.suites.bbbc021_cells import bbbc021_cells_suite
from microsnoop.evaluate.suites.bbbc021_profiles import bbbc021_profiles_suite
from microsnoop.evaluate.suites.cell_cycle import cell_cycle_suite
from microsnoop.evaluate.suites.dsb2018_fields import dsb2018_fields_suite

__all__ = ["SuiteConfig", "SuiteFn", "SuiteResult", "get_suite", "suites"]


def suites() -> dict[str, SuiteFn]:
    """Suite name -> function ``(data_dir, checkpoints, config) -> SuiteResult``."""
    return {
        "cell-cycle": cell_cycle_suite,
        "dsb2018-fields": dsb2018_fields_suite,
        "bbbc021-profiles": bbbc021_profiles_suite,
        "bbbc021-cells": bbbc021_cells_suite,
    }


def get_suite(name: str) -> SuiteFn:
    """The suite called ``name``, or a one-line error listing the valid names.

    >>> get_suite("cell-cycel")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    microsnoop.errors.ConfigError: unknown suite 'cell-cycel'; choose from bbbc021-cells, ..., dsb2018-fields
    """
    registry = suites()
    if name not in registry:
        raise ConfigError(f"unknown suite {name!r}; choose from {', '.join(sorted(registry))}")
    return registry[name]
