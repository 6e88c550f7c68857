"""Nothing happens at import: no backend switch for a notebook user, no heavy platform imports for a page's errors."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("microsnoop", "services", "dashboard", "microsnoop_platform")


def _run(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_no_module_switches_the_matplotlib_backend() -> None:
    calls = [
        f"{path.relative_to(REPO)}:{node.lineno}"
        for package in PACKAGES
        for path in sorted((REPO / package).rglob("*.py"))
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in {"use", "switch_backend"}
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id in {"matplotlib", "plt"}
    ]
    assert calls == [], "draw on matplotlib.figure.Figure instead of switching the user's backend"


def test_importing_the_figure_modules_keeps_the_users_backend() -> None:
    backend = _run(
        "import matplotlib; matplotlib.use('svg')\n"
        "import microsnoop.reconstruct, microsnoop.evaluate.report, microsnoop.pretrain.report\n"
        "print(matplotlib.get_backend())"
    )
    assert backend == "svg"


def test_importing_the_browse_errors_loads_no_database_tracking_or_torch() -> None:
    loaded = _run(
        "import sys, services.browse, services.browse.errors\n"
        "print(sorted(m for m in ('psycopg2', 'mlflow', 'torch', 'feast') if m in sys.modules))"
    )
    assert loaded == "[]"
