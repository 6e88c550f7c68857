"""Several processes opening one fresh SQLite MLflow database at once (parallel pipeline steps) all succeed.

Without the file lock in ``services.tracking.tracking_client`` MLflow's migrations race
('table _alembic_tmp_experiments already exists'); this happened to the end_to_end pipeline test.
"""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def _open(data_dir: str) -> int:
    from services.settings import PlatformSettings
    from services.tracking import tracking_client

    client = tracking_client(PlatformSettings(data_dir=Path(data_dir)))
    return len(client.search_experiments())


def test_concurrent_first_opens_of_a_sqlite_store(tmp_path: Path) -> None:
    with mp.get_context("spawn").Pool(4) as pool:
        counts = pool.map(_open, [str(tmp_path)] * 4)
    assert counts == [1, 1, 1, 1]  # every process sees the one Default experiment
