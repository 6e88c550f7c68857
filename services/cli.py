"""Platform commands added to the ``microsnoop`` CLI through the ``microsnoop.cli`` entry point."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Attach the platform commands to the core app."""
    del app  # filled by the platform commands below as they land
