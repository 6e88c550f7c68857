"""The pipeline upload Job: compile with this release's values, upload to Kubeflow Pipelines, create the runs.

Runs in the project image. The image, GPU request, node selector and toleration of the steps are baked at
compile time from MICROSNOOP_IMAGE and MICROSNOOP_GPU_* (set on the Job from the chart's values), so the
pipelines are compiled here rather than taken from the image's pipelines/compiled/. Then:

1. every pipeline in ``upload`` is uploaded to KFP, as a new pipeline version when the compiled YAML changed
   (the version name carries the YAML's digest, so a change of GPU values gives a new version);
2. every entry of ``runs`` becomes a run and every entry of ``recurringRuns`` a recurring run, through
   ``microsnoop pipeline submit NAME --package FILE [--schedule CRON] [--param key=value ...]``.

The spec (``spec.json``) is rendered by the chart from ``pipelines.*`` values. ``--dry-run`` compiles and
prints what would be sent, without contacting KFP (the chart's tests use it).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

DEFAULT_SPEC = "/etc/microsnoop/pipelines/spec.json"


def run(cmd: list[str], *, dry_run: bool = False) -> None:
    """Print and (unless dry_run) run a command, failing the Job when it fails."""
    print("+ " + " ".join(cmd), flush=True)
    if not dry_run:
        subprocess.run(cmd, check=True)


def compiled_package(out_dir: Path, name: str) -> Path:
    """The one ``<name>-<version>.yaml`` that ``microsnoop pipeline compile`` wrote for ``name``."""
    found = sorted(out_dir.glob(f"{name}-*.yaml"))
    if len(found) != 1:
        names = sorted(p.name for p in out_dir.glob("*.yaml"))
        raise SystemExit(f"expected one compiled {name}-<version>.yaml in {out_dir}, found {names}")
    return found[0]


def param_args(params: dict[str, Any]) -> list[str]:
    """``--param key=value`` pairs; non-string values as JSON (the CLI parses JSON values)."""
    out: list[str] = []
    for key in sorted(params):
        value = params[key]
        out += ["--param", f"{key}={value if isinstance(value, str) else json.dumps(value)}"]
    return out


def version_name(name: str, package: Path) -> str:
    """Pipeline version name: the compiled file's stem plus the digest of its content."""
    digest = hashlib.sha256(package.read_bytes()).hexdigest()[:12]
    return f"microsnoop-{package.stem.replace('_', '-')}-{digest}"


def upload(host: str, name: str, package: Path, *, dry_run: bool = False) -> None:
    """Upload ``package`` as pipeline ``microsnoop-<name>``; a new version only when its content is new."""
    pipeline_name = f"microsnoop-{name.replace('_', '-')}"
    version = version_name(name, package)
    print(f"upload {package.name} as {pipeline_name} version {version}", flush=True)
    if dry_run:
        return
    import kfp

    client = kfp.Client(host=host)
    pipeline_id = client.get_pipeline_id(pipeline_name)
    if pipeline_id is None:
        client.upload_pipeline(str(package), pipeline_name=pipeline_name)
        return
    page = client.list_pipeline_versions(pipeline_id=pipeline_id, page_size=100)
    if any(v.display_name == version for v in getattr(page, "pipeline_versions", None) or []):
        print(f"{pipeline_name} already has version {version}", flush=True)
        return
    client.upload_pipeline_version(str(package), version, pipeline_id=pipeline_id)


def submit_commands(spec: dict[str, Any], host: str, out_dir: Path) -> list[list[str]]:
    """The ``microsnoop pipeline submit`` command of every run and recurring run in ``spec``."""
    commands = []
    entries = [(r, "") for r in spec.get("runs", [])] + [(r, r["cron"]) for r in spec.get("recurringRuns", [])]
    for entry, cron in entries:
        name = entry["pipeline"]
        cmd = ["microsnoop", "pipeline", "submit", name, "--host", host, "--experiment", spec["experiment"]]
        cmd += ["--package", str(compiled_package(out_dir, name))]
        if cron:
            cmd += ["--schedule", cron]
        commands.append(cmd + param_args(entry.get("params") or {}))
    return commands


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, default=Path(os.environ.get("MICROSNOOP_PIPELINES_SPEC", DEFAULT_SPEC)))
    parser.add_argument("--out", type=Path, default=Path("/tmp/compiled"), help="folder for the compiled YAML")
    parser.add_argument("--dry-run", action="store_true", help="compile and print; contact no KFP server")
    args = parser.parse_args(argv)

    spec = json.loads(args.spec.read_text())
    host = os.environ.get("MICROSNOOP_KFP_HOST", "")
    if not host:
        raise SystemExit("MICROSNOOP_KFP_HOST is empty: set pipelines.kfpHost in the chart's values")
    names = sorted(
        set(spec.get("upload", []))
        | {r["pipeline"] for r in spec.get("runs", [])}
        | {r["pipeline"] for r in spec.get("recurringRuns", [])}
    )
    if not names:
        print("nothing to upload or run", flush=True)
        return 0
    compile_cmd = ["microsnoop", "pipeline", "compile", "--out", str(args.out)]
    for name in names:
        compile_cmd += ["--name", name]
    run(compile_cmd)  # local work, done in dry runs too
    for name in spec.get("upload", []):
        upload(host, name, compiled_package(args.out, name), dry_run=args.dry_run)
    for cmd in submit_commands(spec, host, args.out):
        run(cmd, dry_run=args.dry_run)
    return 0


if __name__ == "__main__":
    sys.exit(main())
