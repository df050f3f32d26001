"""Latency of the napari widgets' hot paths on a 256 x 256 x 48 MR (target: < 100 ms each).

The MR is the phantom's T2 (``make_visit(size="standard")``) resampled onto a 48 x 256 x 256
grid of 3 x 0.6 x 0.6 mm; the PET (SUV) stays on its own grid. Timed, without Qt (a napari
``ViewerModel`` holds the layers, so canvas drawing is not included):

* ``preview_*``: what one live-preview update of the segmentation widget does: the core
  segmentation with the per-image context (muscle compartment, reference ROI) already cached,
  plus writing the mask into the preview Labels layer (reoriented copy, ``layer.data = ...``);
* ``measure_*``: what one refresh of the measurements widget does after a brush stroke: the
  Labels layer back to a Volume on its original grid + ``measure_graft`` (volume, deposits,
  MR statistics and ratio, SUVmax/mean/peak and ratios; mesh shape and PVC off, as in the
  widget's default).

Reference measured in the same run: ``numpy_threshold`` = ``mr > t`` on the same array (the
floor of any voxel-wise segmentation). Each figure is the best of ``--repeat`` runs (median also
reported). The widget adds a 150 ms debounce after the last edit, not counted here.

Run ``python benchmarks/bench_napari.py``; results go to ``benchmarks/results/napari.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
from napari.components import ViewerModel
from napari_islet_imaging._layers import labels_like, layer_to_volume
from napari_islet_imaging._widgets.measurements import measure_layers
from napari_islet_imaging._widgets.segmentation import (
    PREVIEW_NAME,
    prepare,
    segment,
    show_mask,
)

from islet_imaging.io.pet import to_suv
from islet_imaging.phantom import make_visit
from islet_imaging.register import resample_like
from islet_imaging.volume import Volume

RESULTS = Path(__file__).resolve().parent / "results" / "napari.json"
SHAPE = (48, 256, 256)
SPACING = (3.0, 0.6, 0.6)
TARGET_MS = 100.0


def make_data():
    """The phantom T2 on a 48 x 256 x 256 grid, its PET in SUV, truth labels and a seed."""
    visit = make_visit(seed=0, size="standard")
    mr = visit.mr_t2
    centre = mr.index_to_world((np.asarray(mr.shape) - 1) / 2.0)
    half = (np.asarray(SHAPE) - 1) / 2.0 * np.asarray(SPACING)
    origin = centre - mr.direction @ half
    grid = Volume(np.zeros(SHAPE, np.float32), SPACING, origin, mr.direction, mr.meta)
    mr_256 = resample_like(mr, grid).with_meta(series_uid=mr.meta.get("series_uid"))
    labels = resample_like(visit.deposit_labels, grid)
    deposit = max(visit.truth["deposits"], key=lambda d: d["volume_ml_analytic"])
    return mr_256, to_suv(visit.pet), labels, np.array([deposit["centre_mm"]])


def timed(func, repeat: int) -> tuple[float, float, object]:
    """Best and median wall time (s) of ``repeat`` calls, and the last result."""
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = func()
        times.append(time.perf_counter() - start)
    return min(times), statistics.median(times), result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args(argv)

    mr, suv, truth, seed = make_data()
    assert mr.shape == SHAPE
    threshold = float(np.percentile(mr.array, 99))
    viewer = ViewerModel()

    t0 = time.perf_counter()
    context = prepare(mr, pet=False)
    prepare_s = time.perf_counter() - t0
    pet_context = prepare(suv, pet=True)

    def preview(ctx, **params):
        def run():
            mask = segment(ctx, split=False, **params)
            return show_mask(viewer, mask, name=PREVIEW_NAME)

        return run

    data, kwargs, _ = labels_like(mr, truth.array.astype(np.int32))
    labels_layer = viewer.add_labels(data, **kwargs)
    reference = context.reference

    def measure(with_pet: bool):
        def run():
            labels = layer_to_volume(labels_layer)
            return measure_layers(labels, mr=mr, suv=suv if with_pet else None, reference=reference)

        return run

    cases = {
        "numpy_threshold": lambda: mr.array > threshold,
        "preview_mr_reference": preview(context, method="reference", seeds_mm=seed),
        "preview_mr_otsu": preview(context, method="otsu", seeds_mm=seed, min_volume_mm3=10.0),
        "preview_mr_region_growing": preview(
            context, method="region_growing", seeds_mm=seed, min_volume_mm3=10.0
        ),
        "preview_pet_percent_max": preview(pet_context, method="percent_max", seeds_mm=seed),
        "measure_mr": measure(False),
        "measure_mr_pet": measure(True),
    }
    seconds, medians = {}, {}
    for name, func in cases.items():
        func()  # warm-up (imports, caches)
        best, median, _ = timed(func, args.repeat)
        seconds[name], medians[name] = round(best, 5), round(median, 5)
        print(f"{name:28s} best {best * 1000:8.1f} ms   median {median * 1000:8.1f} ms")

    reference_s = seconds["numpy_threshold"]
    ratios = {k: round(v / reference_s, 1) for k, v in seconds.items() if k != "numpy_threshold"}
    within = {k: v * 1000 < TARGET_MS for k, v in seconds.items() if k != "numpy_threshold"}
    for name, ratio in ratios.items():
        verdict = "ok" if within[name] else "OVER TARGET"
        print(f"{name:28s} {ratio:8.1f} x numpy threshold   {verdict}")
    print(f"prepare (once per image: muscle + reference ROI): {prepare_s * 1000:.0f} ms")

    result = {
        "benchmark": "napari",
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "repeat": args.repeat,
        "mr_shape": list(SHAPE),
        "mr_spacing_mm": list(SPACING),
        "pet_shape": list(suv.shape),
        "target_ms": TARGET_MS,
        "seconds": seconds,
        "median_seconds": medians,
        "ratios_vs_numpy_threshold": ratios,
        "within_target": within,
        "prepare_once_seconds": round(prepare_s, 4),
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
