"""Static checks of the Dockerfile (no Docker engine here): pinned bases, non-root user, no secrets, no URL
ADDs, and the installed package matching pyproject.toml and requirements.lock."""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
SECRET_NAME = re.compile(r"(PASSWORD|PASSWD|SECRET|TOKEN|ACCESS_KEY|PRIVATE_KEY|CREDENTIAL|_DSN$)", re.I)


@dataclass(frozen=True)
class Instruction:
    stage: int  # index of the FROM it belongs to (-1: before the first FROM)
    name: str
    args: str


def parse(text: str) -> list[Instruction]:
    """Instructions of a Dockerfile: comments dropped, continuations joined, heredoc bodies skipped."""
    out: list[Instruction] = []
    lines = text.splitlines()
    stage, i = -1, 0
    while i < len(lines):
        line = lines[i].strip()
        i += 1
        if not line or line.startswith("#"):
            continue
        while line.endswith("\\") and i < len(lines):
            nxt = lines[i].strip()
            i += 1
            line = line[:-1].rstrip() + (" " + nxt if nxt and not nxt.startswith("#") else "")
        name, _, args = line.partition(" ")
        name = name.upper()
        heredoc = re.search(r"<<-?'?\"?([A-Z_]+)'?\"?", args)
        if heredoc:
            marker = heredoc.group(1)
            while i < len(lines) and lines[i].strip() != marker:
                i += 1
            i += 1
        if name == "FROM":
            stage += 1
        out.append(Instruction(stage, name, args.strip()))
    return out


@pytest.fixture(scope="module")
def instructions() -> list[Instruction]:
    return parse(DOCKERFILE.read_text())


@pytest.fixture(scope="module")
def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def arg_defaults(instructions: list[Instruction]) -> dict[str, str]:
    out = {}
    for ins in instructions:
        if ins.name == "ARG" and "=" in ins.args:
            key, _, value = ins.args.partition("=")
            out.setdefault(key.strip(), value.strip().strip('"'))
    return out


def expand(value: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), value)


def final_stage(instructions: list[Instruction]) -> list[Instruction]:
    last = max(ins.stage for ins in instructions)
    return [ins for ins in instructions if ins.stage == last]


def test_base_images_are_pinned(instructions: list[Instruction]) -> None:
    args = arg_defaults(instructions)
    stages = {ins.args.split()[-1] for ins in instructions if ins.name == "FROM" and " AS " in ins.args.upper()}
    images = []
    for ins in instructions:
        if ins.name != "FROM":
            continue
        image = expand(ins.args.split()[0], args)
        if image in stages:
            continue
        images.append(image)
        assert "$" not in image, f"FROM {ins.args}: every image ARG needs a pinned default"
        assert ":" in image.split("/")[-1] or "@sha256:" in image, f"FROM {image} has no tag: pin one"
        tag = image.rsplit(":", 1)[-1]
        assert tag not in {"latest", "stable", "slim", "3", "3.11"}, f"FROM {image}: tag {tag!r} floats; pin a release"
    assert images, "no external base image found"
    python_bases = [i for i in images if i.startswith("python:")]
    assert python_bases, "the default base should be the official Python slim image"
    for image in python_bases:
        assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+", image), (
            f"{image}: pin the patch release and the Debian suite"
        )


def test_cuda_variant_is_a_build_argument(instructions: list[Instruction]) -> None:
    args = arg_defaults(instructions)
    assert "BASE_IMAGE" in args and "TORCH_INDEX_URL" in args, (
        "CPU/CUDA choice must be ARG BASE_IMAGE + ARG TORCH_INDEX_URL"
    )
    assert args["TORCH_INDEX_URL"].endswith("/whl/cpu"), "the default image must install the CPU torch wheel"
    text = DOCKERFILE.read_text()
    cuda = re.search(r"BASE_IMAGE=(nvidia/cuda:\S+)", text)
    assert cuda and re.fullmatch(r"nvidia/cuda:12\.\d+\.\d+-(cudnn-)?runtime-ubuntu\d\d\.\d\d", cuda.group(1))
    assert re.search(r"TORCH_INDEX_URL=\S+/whl/cu12\d", text), "document the CUDA build with a cu12x torch index"
    deploy_doc = (REPO / "docs" / "deploy.md").read_text()
    assert cuda.group(1) in deploy_doc and "docker build" in deploy_doc, "docs/deploy.md must give both build commands"


def test_runtime_user_is_not_root(instructions: list[Instruction]) -> None:
    users = [ins.args for ins in final_stage(instructions) if ins.name == "USER"]
    assert users, "the runtime stage must switch to an unprivileged USER"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}, f"USER {users[-1]} is root"
    assert not user.isdigit() or int(user) >= 1000, f"USER {users[-1]}: use a uid >= 1000"


def test_entrypoint_is_the_cli(instructions: list[Instruction], pyproject: dict) -> None:
    entry = [ins.args for ins in final_stage(instructions) if ins.name == "ENTRYPOINT"]
    assert entry, "no ENTRYPOINT in the runtime stage"
    assert json.loads(entry[-1]) == ["microsnoop"]
    assert "microsnoop" in pyproject["project"]["scripts"], "pyproject no longer declares the microsnoop script"


def test_healthcheck_in_runtime_stage(instructions: list[Instruction]) -> None:
    checks = [ins.args for ins in final_stage(instructions) if ins.name == "HEALTHCHECK"]
    assert checks and "NONE" not in checks[-1].upper()
    assert "--interval" in checks[-1] and "--timeout" in checks[-1]


def test_no_url_add_and_no_baked_secrets(instructions: list[Instruction]) -> None:
    for ins in instructions:
        if ins.name == "ADD":
            assert not re.search(r"(https?|git|ftp)://|git@", ins.args), (
                f"ADD {ins.args}: no remote ADD; download in RUN with a checksum"
            )
        if ins.name in {"ENV", "ARG"}:
            for token in shlex.split(ins.args):
                key = token.partition("=")[0]
                assert not SECRET_NAME.search(key), f"{ins.name} {key}: secrets come from the environment at run time"
        if ins.name == "RUN":
            assert "--mount=type=secret" not in ins.args or "cat " not in ins.args
    text = DOCKERFILE.read_text()
    assert not re.search(r"(AKIA[0-9A-Z]{16}|-----BEGIN [A-Z ]*PRIVATE KEY)", text)


def test_installed_package_matches_pyproject(instructions: list[Instruction], pyproject: dict) -> None:
    runs = " ".join(ins.args for ins in instructions if ins.name == "RUN")
    install = re.search(r"pip install (-c requirements\.lock) \"?\.\[(\w+)\]\"?", runs)
    assert install, 'install the project with: pip install -c requirements.lock ".[platform]"'
    assert install.group(2) in pyproject["project"]["optional-dependencies"], (
        f"extra {install.group(2)} not in pyproject"
    )
    assert install.group(2) == "platform"
    copied = set()
    for ins in instructions:
        if ins.name == "COPY" and "--from" not in ins.args and "<<" not in ins.args:
            parts = [p for p in shlex.split(ins.args) if not p.startswith("--")]
            copied.update(p.rstrip("/") for p in parts[:-1])
    packages = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    for pattern in packages:
        top = pattern.rstrip("*")
        assert top in copied, f"package {top} ({pattern} in pyproject) is not copied into the build stage"
    for needed in (
        "pyproject.toml",
        "requirements.lock",
        pyproject["project"]["readme"],
        "models/microsnoop-cpu-v1.pt",
        "models/microsnoop-cpu-v1.1.pt",
    ):
        assert needed in copied, f"{needed} is not copied"
    for path in copied:
        assert (REPO / path).exists(), f"COPY {path}: no such path in the repository"
    assert "pip check" in runs, "the build should end with pip check"


def test_torch_pin_matches_pyproject_and_lock(instructions: list[Instruction], pyproject: dict) -> None:
    args = arg_defaults(instructions)
    pin = next(d for d in pyproject["project"]["dependencies"] if d.startswith("torch=="))
    assert f"torch=={args['TORCH_VERSION']}" == pin
    lock = (REPO / "requirements.lock").read_text().splitlines()
    assert pin in lock, f"{pin} missing from requirements.lock"
    requires = pyproject["project"]["requires-python"]
    assert ">=3.11" in requires and "<3.12" in requires, (
        "the image ships Python 3.11; update the base image with pyproject"
    )


def test_dockerignore_keeps_context_small_and_secret_free() -> None:
    patterns = [
        p.strip() for p in (REPO / ".dockerignore").read_text().splitlines() if p.strip() and not p.startswith("#")
    ]
    for needed in (".git", ".venv", ".tools", "runs", ".env", "**/*.pem", "tests"):
        assert needed in patterns, f".dockerignore should exclude {needed}"
    instructions = parse(DOCKERFILE.read_text())
    for ins in instructions:
        if ins.name == "COPY" and "--from" not in ins.args and "<<" not in ins.args:
            for src in [p for p in shlex.split(ins.args) if not p.startswith("--")][:-1]:
                excluded = [p for p in patterns if not p.startswith("!") and fnmatch.fnmatch(src, p.rstrip("/"))]
                assert not excluded, f"COPY {src} is excluded by .dockerignore {excluded}"
