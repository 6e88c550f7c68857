"""The command line documents every command and option, and turns bad input into one clear line."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from microsnoop.cli import app

COMMANDS = [
    "curate",
    "pretrain",
    "export",
    "loss-curve",
    "reconstruct",
    "knn",
    "embed",
    "segment",
    "sphere",
    "aggregate",
    "evaluate",
    "joint",
    "benchmark",
    "demo",
]
# added by the installed platform layer through the ``microsnoop.cli`` entry point
PLATFORM_COMMANDS = ["search", "serve-search", "dashboard", "pipeline", "platform"]


def _help_rows(text: str) -> dict[str, str]:
    """Command -> summary from the 'Commands' panel of a --help page, in the listed order."""
    panel = text.split("─ Commands ─", 1)[1]
    return dict(re.findall(r"^│ ([a-z][a-z-]*) +(\S.*?) *│$", panel, flags=re.M))


def test_help_lists_exactly_the_commands_each_with_its_summary() -> None:
    import typer.main

    env = {**os.environ, "COLUMNS": "200", "TERMINAL_WIDTH": "200"}
    done = subprocess.run(
        [sys.executable, "-m", "microsnoop", "--help"], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr
    rows = _help_rows(done.stdout)
    assert list(rows) == COMMANDS + PLATFORM_COMMANDS  # nothing missing, renamed, unexpected or reordered
    core = typer.main.get_command(app).commands  # type: ignore[attr-defined]
    for name in COMMANDS:
        assert rows[name] == core[name].help.strip().splitlines()[0], name
    assert rows["search"].startswith("Top-k similar entities") and rows["pipeline"].startswith("Compile, run")


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


def test_evaluate_an_embeddings_table(tmp_path: Path) -> None:
    import json

    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    y = np.repeat(["a", "b"], 20)
    x = rng.normal(size=(40, 5)) * 0.3
    x[y == "a", 0] += 3.0  # two directions: cosine kNN separates them
    x[y == "b", 1] += 3.0
    df = pd.DataFrame(x, columns=[f"f{i}" for i in range(5)]).assign(Metadata_label=y)
    df.to_parquet(tmp_path / "e.parquet")
    result = CliRunner().invoke(
        app,
        [
            "evaluate",
            str(tmp_path / "e.parquet"),
            "--label",
            "Metadata_label",
            "--k",
            "3",
            "--n-boot",
            "20",
            "--out",
            str(tmp_path / "s.json"),
        ],
    )
    assert result.exit_code == 0, result.output
    scores = json.loads((tmp_path / "s.json").read_text())
    assert scores["accuracy"] == 1.0 and scores["k"] == 3
