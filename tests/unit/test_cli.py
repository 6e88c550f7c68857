"""The command line documents every command and option, and turns bad input into one clear line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from microsnoop.cli import app

COMMANDS = ["curate", "pretrain", "export", "loss-curve", "reconstruct", "knn", "demo"]


def test_help_lists_every_command() -> None:
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    for cmd in COMMANDS:
        assert cmd in result.output


@pytest.mark.parametrize("cmd", COMMANDS)
def test_every_option_has_help_text(cmd: str) -> None:
    import click
    import typer.main

    command = typer.main.get_command(app).commands[cmd]  # type: ignore[attr-defined]
    assert command.help
    for param in command.params:
        if isinstance(param, click.Option) and param.name != "help":
            assert param.help, f"{cmd} --{param.name} has no help text"
        if isinstance(param, click.Argument):
            assert getattr(param, "help", None), f"{cmd} {param.name} has no help text"


def test_curate_and_export_from_the_command_line(tmp_path: Path, demo_data: Path) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "microsnoop",
            "curate",
            "--out",
            str(tmp_path / "pool"),
            str(demo_data / "cellprofiler_human"),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "3 files -> 3 one-channel planes" in out.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "microsnoop", "export", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "x.pt")],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2
    assert "missing.pt: no such checkpoint file" in bad.stderr and "Traceback" not in bad.stderr
