"""requirements-hashed.lock pins exactly what requirements.lock pins, each with a sha256 hash ('make lock-hashes')."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
EXTRA = {"setuptools"}  # a runtime dependency pip installs anyway; the hashed lock pins it too


def _pins(text: str) -> dict[str, str]:
    """Normalised name -> version (local labels such as +cpu dropped) of every 'name==version' line."""
    out = {}
    for line in text.splitlines():
        match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)", line)
        if match:
            out[re.sub(r"[-_.]+", "-", match[1].lower())] = match[2].split("+")[0]
    return out


def test_hashed_lock_matches_the_lock_and_hashes_every_pin() -> None:
    lock = _pins((REPO / "requirements.lock").read_text())
    hashed_text = (REPO / "requirements-hashed.lock").read_text()
    hashed = _pins(hashed_text)
    changed = {
        k: (lock.get(k), hashed.get(k)) for k in lock.keys() | hashed.keys() - EXTRA if lock.get(k) != hashed.get(k)
    }
    assert changed == {}, "requirements.lock changed: run 'make lock-hashes'"
    entries = re.split(r"\n(?=[A-Za-z0-9])", hashed_text.split("\n", 1)[1])
    unhashed = [e.split()[0] for e in entries if e.strip() and not re.search(r"--hash=sha256:[0-9a-f]{64}", e)]
    assert unhashed == []
