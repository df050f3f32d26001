"""Run every ``benchmarks/bench_*.py`` in turn and collect their JSON results.

Each benchmark is a runnable script that writes ``benchmarks/results/<area>.json``; this runner
executes them one after another (never in parallel, so timings do not disturb each other),
reports failures without stopping, and writes ``benchmarks/results/summary.json`` listing each
script, its exit code, duration and the result files it produced.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks (all, or those whose name contains one of ``argv``)."""
    wanted = argv if argv is not None else sys.argv[1:]
    scripts = sorted(HERE.glob("bench_*.py"))
    if wanted:
        scripts = [s for s in scripts if any(w in s.stem for w in wanted)]
    RESULTS.mkdir(exist_ok=True)
    summary = []
    failed = 0
    for script in scripts:
        print(f"=== {script.name}", flush=True)
        before = {p: p.stat().st_mtime for p in RESULTS.glob("*.json")}
        t0 = time.perf_counter()
        code = subprocess.call([sys.executable, str(script)], cwd=HERE.parent)
        elapsed = time.perf_counter() - t0
        produced = sorted(
            p.name
            for p in RESULTS.glob("*.json")
            if p.name != "summary.json" and before.get(p) != p.stat().st_mtime
        )
        failed += code != 0
        summary.append(
            {
                "script": script.name,
                "exit_code": code,
                "seconds": round(elapsed, 1),
                "results": produced,
            }
        )
        print(f"=== {script.name}: exit {code}, {elapsed:.1f} s, wrote {produced}", flush=True)
    collected = {}
    for entry in summary:
        for name in entry["results"]:
            collected[name] = json.loads((RESULTS / name).read_text())
    (RESULTS / "summary.json").write_text(
        json.dumps({"runs": summary, "results": collected}, indent=2) + "\n"
    )
    print(f"{len(scripts) - failed}/{len(scripts)} benchmarks succeeded")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
