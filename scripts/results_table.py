"""Regenerate the README's results section from benchmarks/results (between the RESULTS markers).

Usage: python scripts/results_table.py [--readme README.md]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from microsnoop.evaluate.report import markdown_table
from microsnoop.evaluate.suites import SuiteResult

START, END = "<!-- RESULTS:START -->", "<!-- RESULTS:END -->"
ORDER = ["cell-cycle", "bbbc021-cells", "dsb2018-fields", "bbbc021-profiles"]


def build(results: Path) -> str:
    """Markdown for every suite JSON and the throughput JSONs found under ``results``."""
    parts = []
    for name in ORDER:
        path = results / "suites" / f"{name}.json"
        if not path.exists():
            continue
        data = json.loads(path.read_text())
        models = ", ".join(f"`{k}` = {v}" for k, v in data["models"].items())
        parts.append(markdown_table(SuiteResult.from_dict(data)).replace(f"### {name}", f"#### {name}"))
        ran = f" Encoders ran in {data['precision']}." if data.get("precision") and name != "bbbc021-profiles" else ""
        parts.append(f"Models: {models}. Reproduce: `{data['command']}`.{ran}\n")
    for enc in sorted(results.glob("encoder_cpu*.json")):
        e = json.loads(enc.read_text())
        rows = " | ".join(f"{k} {v.get('img_per_s', 'n/a')}" for k, v in e["inference"].items())
        limits = ", ".join(f"{k}={v}" for k, v in (e.get("isa_limits") or {}).items())
        imposed = f", instruction set limited by {limits}" if limits else ""
        parts.append(
            f"Encoder img/s at 224x224 on a CPU of capability {e.get('cpu_capability') or 'not recorded'}{imposed} "
            f"({e['threads']} threads, {e.get('date', 'undated')}, `{enc.name}`): {rows}; training "
            + ", ".join(f"{k} {v['img_per_s']}" for k, v in e["training"].items())
            + " img/s "
            "(`python benchmarks/bench_encoder.py`).\n"
        )
    return "\n".join(parts)


def main() -> None:
    """Replace the README's results section."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--readme", type=Path, default=Path("README.md"))
    ap.add_argument("--results", type=Path, default=Path("benchmarks/results"))
    args = ap.parse_args()
    text = args.readme.read_text()
    if START not in text or END not in text:
        raise SystemExit(f"{args.readme}: add {START} and {END} where the results go")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    args.readme.write_text(f"{head}{START}\n{build(args.results)}\n{END}{tail}")


if __name__ == "__main__":
    main()
