"""Cohort batch throughput: a phantom cohort through the whole pipeline with 1 and 2 workers.

Writes ``benchmarks/results/study.json`` with, per worker count, the wall time of
``run_batch`` (Dask LocalCluster, processes) for the cohort, the time per visit, the scaling
ratio (1 worker / N workers) and the projected time of a 100 patients × 4 visits trial. The
reference measured in the same process is one visit run in-process without Dask
(``process_visit``), so the ratios show the batch overhead and the parallel gain.

Usage::

    python benchmarks/bench_study.py                 # 20 patients x 4 visits (several minutes)
    python benchmarks/bench_study.py --patients 5    # quicker; the projection says so
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

from islet_imaging import __version__
from islet_imaging.phantom import generate_study
from islet_imaging.study.batch import run_batch
from islet_imaging.study.pipeline import PipelineOptions, process_visit
from islet_imaging.study.workspace import Workspace

HERE = Path(__file__).resolve().parent


def _fresh_workspace(root: Path, dicom: Path) -> tuple[Workspace, float]:
    if root.exists():
        shutil.rmtree(root)
    start = time.perf_counter()
    ws = Workspace.init(root)
    ws.import_paths([dicom], implantation="2024-01-01")
    return ws, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=20)
    parser.add_argument("--visits", type=int, default=4)
    parser.add_argument("--size", default="small", choices=("small", "sample", "standard"))
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args(argv)
    options = PipelineOptions()
    with tempfile.TemporaryDirectory(prefix="bench-study-") as tmp:
        tmp = Path(tmp)
        start = time.perf_counter()
        cohort = generate_study(
            tmp / "cohort", patients=args.patients, visits=args.visits, seed=7, size=args.size
        )
        generate_s = time.perf_counter() - start
        n_visits = args.patients * args.visits
        print(
            f"cohort {args.patients} x {args.visits} ({args.size}) generated in {generate_s:.1f} s"
        )

        # reference: one baseline and one follow-up visit in this process, no Dask
        ws, import_s = _fresh_workspace(tmp / "reference", cohort / "dicom")
        visits = ws.visits()
        first = visits[visits["patient"] == "P001"]["visit_id"].tolist()[:2]
        start = time.perf_counter()
        for visit in first:
            result = process_visit(ws, visit, options=options)
            assert result.ok, result.reason
        reference_per_visit = (time.perf_counter() - start) / len(first)
        ws.close()
        print(
            f"reference: {reference_per_visit:.2f} s per visit in-process (import {import_s:.2f} s)"
        )

        runs = {}
        for workers in args.workers:
            ws, import_s = _fresh_workspace(tmp / f"w{workers}", cohort / "dicom")
            summary = run_batch(ws, n_workers=workers, options=options, progress=False)
            ws.close()
            per_visit = summary.seconds / n_visits
            runs[workers] = {
                "seconds": round(summary.seconds, 2),
                "import_seconds": round(import_s, 2),
                "per_visit_s": round(per_visit, 3),
                "visits_done": len(summary.done),
                "visits_failed": len(summary.failed),
                "vs_reference_per_visit": round(per_visit / reference_per_visit, 3),
                "projected_100x4_minutes": round(per_visit * 400 / 60, 1),
            }
            print(
                f"{workers} worker(s): {summary.seconds:.1f} s for {n_visits} visits "
                f"({per_visit:.2f} s/visit, {per_visit / reference_per_visit:.2f}x the in-process "
                f"reference), {len(summary.failed)} failed; 100x4 projected "
                f"{per_visit * 400 / 60:.1f} min"
            )
    scaling = {
        f"1_over_{w}": round(runs[1]["seconds"] / runs[w]["seconds"], 3)
        for w in runs
        if w != 1 and 1 in runs
    }
    for key, value in scaling.items():
        print(f"scaling {key}: {value:.2f}")
    result = {
        "benchmark": "study batch (Dask LocalCluster, processes, 1 thread each)",
        "software_version": __version__,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "cohort": {
            "patients": args.patients,
            "visits": args.visits,
            "size": args.size,
            "n_visits": n_visits,
            "generate_seconds": round(generate_s, 1),
        },
        "pipeline_options": options.to_dict(),
        "reference_in_process_per_visit_s": round(reference_per_visit, 3),
        "workers": {str(k): v for k, v in runs.items()},
        "scaling": scaling,
        "note": "projection = per-visit time of this run x 400 visits; the machine is shared, "
        "so absolute times vary with its load",
    }
    out = HERE / "results" / "study.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
