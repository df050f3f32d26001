"""Benchmark of graft measurement and of one visit end to end.

1. One graft (phantom, size "standard": MR 0.6 × 0.6 × 3 mm): islet-imaging's shape +
   first-order measurement (``volume_ml``, ``mesh_features``, ``first_order``) against
   PyRadiomics' ``shape`` + ``firstorder`` feature classes on the same image and mask, in the
   same process; the values that share a definition are compared (they must be identical).
   The full ``measure_graft`` table (MR statistics, reference ratios, CNR) is timed too.
2. One visit end to end from DICOM written to a temporary folder (size "sample"): load MR T2
   and PET, SUV, PET-to-MR registration, MR segmentation + deposits, full measurement with
   PET statistics and partial-volume correction. Target < 5 s.

Run ``python benchmarks/bench_measure.py``; results go to ``benchmarks/results/measure.json``.
"""

from __future__ import annotations

import json
import logging
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results" / "measure.json"

#: PyRadiomics feature -> our key (same definition)
PAIRS = {
    "shape_VoxelVolume": "volume_mm3",
    "shape_MeshVolume": "mesh_volume_mm3",
    "shape_SurfaceArea": "surface_area_mm2",
    "shape_Maximum3DDiameter": "max_diameter_mm",
    "shape_Sphericity": "sphericity",
    "firstorder_Mean": "mean",
    "firstorder_Variance": "variance",
    "firstorder_Minimum": "minimum",
    "firstorder_Maximum": "maximum",
    "firstorder_Median": "median",
    "firstorder_10Percentile": "percentile_10",
    "firstorder_90Percentile": "percentile_90",
}


def _timed(func, repeat: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = func()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def bench_graft(repeat: int = 5) -> dict:
    from radiomics import featureextractor

    from islet_imaging.measure import first_order, measure_graft, mesh_features, volume_ml
    from islet_imaging.phantom import make_visit
    from islet_imaging.segment import reference_muscle_roi

    logging.getLogger("radiomics").setLevel(logging.ERROR)
    visit = make_visit(seed=1, size="standard", orientation="oblique")
    image = visit.mr_t2
    mask = visit.graft_mask.with_array(visit.graft_mask.array.astype(np.uint8))

    def ours():
        mesh = mesh_features(mask)
        stats = first_order(image, mask.array.astype(bool))
        return {
            "volume_mm3": volume_ml(mask) * 1000,
            "mesh_volume_mm3": mesh["mesh_volume_ml"] * 1000,
            **mesh,
            **stats,
        }

    extractor = featureextractor.RadiomicsFeatureExtractor()
    extractor.disableAllFeatures()
    extractor.enableFeatureClassByName("shape")
    extractor.enableFeatureClassByName("firstorder")
    sitk_image, sitk_mask = image.to_sitk(), mask.to_sitk()

    def theirs():
        return extractor.execute(sitk_image, sitk_mask)

    t_ours, values = _timed(ours, repeat)
    t_theirs, ref = _timed(theirs, repeat)
    reference = reference_muscle_roi(image, graft=mask.with_array(mask.array > 0))
    t_full, table = _timed(lambda: measure_graft(mask, mr=image, reference=reference), repeat)
    comparison = {}
    for name, key in PAIRS.items():
        a, b = float(values[key]), float(ref[f"original_{name}"])
        comparison[name] = {"ours": a, "pyradiomics": b, "rel_diff": abs(a - b) / abs(b)}
    return {
        "image_shape": list(image.shape),
        "spacing_mm": list(image.spacing),
        "graft_voxels": int(mask.array.sum()),
        "ours_shape_firstorder_s": t_ours,
        "pyradiomics_shape_firstorder_s": t_theirs,
        "speedup": t_theirs / t_ours,
        "measure_graft_table_s": t_full,
        "measure_graft_rows": len(table),
        "max_rel_diff": max(c["rel_diff"] for c in comparison.values()),
        "comparison": comparison,
    }


def bench_visit(repeat: int = 3) -> dict:
    from islet_imaging.io.dicom import load_series
    from islet_imaging.io.pet import to_suv
    from islet_imaging.measure import measure_graft
    from islet_imaging.phantom import make_visit, write_visit
    from islet_imaging.register import register_pet_to_mr
    from islet_imaging.segment import reference_muscle_roi, segment_graft_mr, split_deposits

    visit = make_visit(seed=1, size="sample", orientation="oblique")
    with tempfile.TemporaryDirectory() as tmp:
        write_visit(visit, tmp)
        folder = Path(tmp) / "dicom" / visit.patient_id / "V0"
        steps: dict[str, list[float]] = {}
        fwhm = visit.truth["pet"]["psf_fwhm_mm"]

        def step(name, func, *args, **kwargs):
            t0 = time.perf_counter()
            out = func(*args, **kwargs)
            steps.setdefault(name, []).append(time.perf_counter() - t0)
            return out

        totals = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            mr = step("load_mr", load_series, folder / "T2")
            pet = step("load_pet", load_series, folder / "PET")
            suv = step("suv", to_suv, pet)
            reg = step("register", register_pet_to_mr, suv, mr)
            mask = step("segment", segment_graft_mr, mr)
            labels = step("deposits", split_deposits, mask, image=mr)
            reference = step("reference_roi", reference_muscle_roi, mr, graft=mask)
            table = step(
                "measure",
                measure_graft,
                labels,
                mr=mr,
                suv=suv,
                activity=pet,
                reference=reference,
                fwhm_mm=fwhm,
            )
            totals.append(time.perf_counter() - t0)
        truth = visit.truth["graft"]
        volume = float(table.query("object == 'graft' and metric == 'volume'")["value"].iloc[0])
        return {
            "size": "sample",
            "mr_shape": list(mr.shape),
            "pet_shape": list(pet.shape),
            "total_s": statistics.median(totals),
            "total_without_registration_s": statistics.median(totals)
            - statistics.median(steps["register"]),
            "steps_s": {k: statistics.median(v) for k, v in steps.items()},
            "registration_metric": float(reg.metric),
            "graft_volume_ml": volume,
            "truth_volume_ml": truth["volume_ml_analytic"],
            "volume_error_percent": 100 * (volume / truth["volume_ml_analytic"] - 1),
            "rows": len(table),
        }


def main() -> int:
    graft = bench_graft()
    visit = bench_visit()
    payload = {
        "benchmark": "measure",
        "python": platform.python_version(),
        "machine": platform.machine(),
        "graft_vs_pyradiomics": graft,
        "visit_end_to_end": visit,
        "targets": {"speedup_vs_pyradiomics": 10.0, "visit_end_to_end_s": 5.0},
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(payload, indent=2) + "\n")
    print(
        f"graft {graft['image_shape']} ({graft['graft_voxels']} voxels): ours "
        f"{graft['ours_shape_firstorder_s'] * 1000:.1f} ms, PyRadiomics "
        f"{graft['pyradiomics_shape_firstorder_s'] * 1000:.1f} ms -> "
        f"{graft['speedup']:.1f}x faster; max relative difference {graft['max_rel_diff']:.1e}"
    )
    print(
        f"measure_graft full table: {graft['measure_graft_table_s'] * 1000:.1f} ms "
        f"({graft['measure_graft_rows']} rows)"
    )
    steps = ", ".join(f"{k} {v:.2f}" for k, v in visit["steps_s"].items())
    print(
        f"visit end to end (MR {visit['mr_shape']}, PET {visit['pet_shape']}): "
        f"{visit['total_s']:.2f} s (target < 5 s), "
        f"{visit['total_without_registration_s']:.2f} s without registration [{steps}]; "
        "graft volume error "
        f"{visit['volume_error_percent']:+.1f} %"
    )
    print(f"results: {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
