"""The pipeline upload Job runs its real script (``--dry-run``: compile for real, contact no KFP) with the
environment and spec the chart renders, so the values' GPU settings are checked in the compiled YAML."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.deploy.conftest import CHART, Rendered

SCRIPT = CHART / "files" / "submit_pipelines.py"


@pytest.fixture(scope="module")
def cli_has_pipelines() -> None:
    exe = Path(sys.executable).parent / "microsnoop"
    proc = subprocess.run([str(exe), "pipeline", "compile", "--help"], capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        pytest.skip(
            f"`microsnoop pipeline compile` is not available here (platform layer not installed): {proc.stderr[-300:]}"
        )


def dry_run(r: Rendered, tmp_path: Path) -> tuple[str, Path]:
    config = r.named("ConfigMap", "-pipelines")
    assert config["data"]["submit_pipelines.py"].strip() == SCRIPT.read_text().strip(), "ConfigMap carries the script"
    spec = tmp_path / "spec.json"
    spec.write_text(config["data"]["spec.json"])
    container = r.named("Job", "-pipelines-r1")["spec"]["template"]["spec"]["containers"][0]
    assert container["command"][-1].endswith("submit_pipelines.py")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MICROSNOOP_")}
    env.update({e["name"]: e["value"] for e in container["env"] if "value" in e})
    env["MICROSNOOP_DATA_DIR"] = str(tmp_path / "data")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    out = tmp_path / "compiled"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--dry-run", "--spec", str(spec), "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout, out


def test_gpu_values_are_compiled_into_the_steps(
    rendered: dict[str, Rendered], cli_has_pipelines: None, tmp_path: Path
) -> None:
    stdout, out = dry_run(rendered["gpu"], tmp_path)
    assert {p.name.split("-")[0] for p in out.glob("*.yaml")} == {"pretraining", "profiling", "end_to_end"}
    text = (next(out.glob("pretraining-*.yaml"))).read_text()
    assert "nvidia.com/gpu" in text
    assert "registry.example.com/microsnoop/microsnoop:0.1.0-cuda12.8" in text
    docs = list(yaml.safe_load_all(text))
    assert len(docs) == 2, "pipeline spec + kubernetes platform spec (node selector, toleration)"
    executors = docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    gpu_exec = [e for e in executors.values() if "nodeSelector" in e]
    assert gpu_exec, "the GPU steps carry the node selector"
    for e in gpu_exec:
        assert e["nodeSelector"]["labels"] == {"nvidia.com/gpu.present": "true"}
        assert e["tolerations"] == [
            {"effect": "NoSchedule", "key": "nvidia.com/gpu", "operator": "Equal", "value": "present"}
        ]
    submits = [line for line in stdout.splitlines() if line.startswith("+ microsnoop pipeline submit")]
    assert len(submits) == 2
    assert any("profiling" in s and "--schedule 0 0 2 * * *" in s and "--param channel=0" in s for s in submits)
    assert any("pretraining" in s and "--schedule" not in s and "--param epochs=100" in s for s in submits)
    assert stdout.count("upload ") == 3


def test_default_values_compile_cpu_steps(
    rendered: dict[str, Rendered], cli_has_pipelines: None, tmp_path: Path
) -> None:
    stdout, out = dry_run(rendered["default"], tmp_path)
    for path in out.glob("*.yaml"):
        assert "nvidia.com/gpu" not in path.read_text(), f"{path.name}: GPU request with pipelines.gpu.limit=0"
    assert "microsnoop pipeline submit" not in stdout, "no runs unless the values list them"
    spec = json.loads(rendered["default"].named("ConfigMap", "-pipelines")["data"]["spec.json"])
    assert spec == {
        "experiment": "microsnoop",
        "upload": ["pretraining", "profiling", "end_to_end"],
        "runs": [],
        "recurringRuns": [],
    }
