"""Fixtures of the deployment checks: the helm binary, the chart rendered with each CI values file.

Helm comes from ``make test`` (``scripts/fetch_helm.py`` puts it in ``.tools/bin/helm``) or from
``MICROSNOOP_HELM``. Without it the chart tests are skipped with the reason, except under CI, where a
missing helm is a failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "infra" / "helm" / "microsnoop"
VALUES_DIR = CHART / "ci"
VALUES_FILES = {"default": VALUES_DIR / "default-values.yaml", "external": VALUES_DIR / "external-values.yaml"}
VALUES_FILES["gpu"] = VALUES_DIR / "gpu-values.yaml"
RELEASE = "ms"
NAMESPACE = "microsnoop"
KUBE_VERSION = "1.35.0"  # schemas bundled with kubernetes-validate; helm 4's own client is v1.35


def helm_path() -> Path:
    """MICROSNOOP_HELM, else the repo's .tools/bin/helm (fetched by make)."""
    return Path(os.environ.get("MICROSNOOP_HELM", REPO / ".tools" / "bin" / "helm"))


@pytest.fixture(scope="session")
def helm() -> Path:
    """The helm binary, or a skip (a failure under CI) naming how to get it."""
    path = helm_path()
    if path.is_file() and os.access(path, os.X_OK):
        return path
    reason = (
        f"helm not found at {path}: run `make test` (it fetches helm) or `python scripts/fetch_helm.py`, "
        "or point MICROSNOOP_HELM at a helm binary"
    )
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


@dataclass(frozen=True)
class Rendered:
    """One ``helm template`` output: its text and its objects."""

    name: str
    text: str
    docs: list[dict[str, Any]]

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [d for d in self.docs if d["kind"] == kind]

    def named(self, kind: str, suffix: str) -> dict[str, Any]:
        found = [d for d in self.of_kind(kind) if d["metadata"]["name"].endswith(suffix)]
        assert len(found) == 1, (
            f"{self.name}: expected one {kind} named *{suffix}, got {[d['metadata']['name'] for d in found]}"
        )
        return found[0]


def helm_template(helm: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``helm template RELEASE CHART ARGS`` (no cluster needed), returning the finished process."""
    cmd = [str(helm), "template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--kube-version", KUBE_VERSION]
    return subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=120)


def render(helm: Path, name: str, *args: str) -> Rendered:
    proc = helm_template(helm, *args)
    assert proc.returncode == 0, f"helm template ({name}) failed:\n{proc.stderr}"
    docs = [d for d in yaml.safe_load_all(proc.stdout) if d]
    return Rendered(name, proc.stdout, docs)


@pytest.fixture(scope="session")
def rendered(helm: Path) -> dict[str, Rendered]:
    """The chart rendered once per CI values file."""
    return {name: render(helm, name, "-f", str(path)) for name, path in VALUES_FILES.items()}


@pytest.fixture(scope="session")
def kubernetes_validate() -> str:
    """The kubernetes-validate command of this environment."""
    exe = Path(sys.executable).parent / "kubernetes-validate"
    found = str(exe) if exe.is_file() else shutil.which("kubernetes-validate")
    if not found:
        pytest.fail("kubernetes-validate is not installed: it is pinned in the platform extra (make venv)")
    return found
