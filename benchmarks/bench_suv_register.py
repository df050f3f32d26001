"""Benchmark of SUV conversion and of both registrations on phantom visits.

1. SUV: ``to_suv`` on the PET of a phantom visit (size "sample", with its DICOM headers),
   against the floor, a plain numpy multiply of the same array by the same factor, and the
   header-only ``suv_factors``.
2. PET to MR: ``register_pet_to_mr`` on a PET deliberately displaced by (2, -2.5, 3) mm,
   against a plain SimpleITK ``ImageRegistrationMethod`` set up as in the SimpleITK examples
   (geometry-centred initialisation, Mattes MI 50 bins, 1 % random sampling, gradient descent,
   3 levels) and against the floor of one ``resample_like`` of the PET onto the MR grid.
   Accuracy: mean / max error over the graft voxel centres (mm).
   The same on a grid of phantom visits (size "small", seeds 0-2, MR axial / oblique /
   sagittal), the PET left in place or moved by 4 mm along the arm and rotated by 3° about the
   graft centre: worst error over the graft voxel centres and the run time, per case.
3. Visit to baseline: ``register_to_baseline`` (T2) on follow-up visits with the phantom's known
   rigid transform, against the same plain SimpleITK setup; accuracy = target registration
   error over the baseline graft voxel centres (mm).

Run ``python benchmarks/bench_suv_register.py``; results go to
``benchmarks/results/suv_register.json``.
"""

from __future__ import annotations

import dataclasses
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy.spatial.transform import Rotation

from islet_imaging.io.pet import suv_factors, to_suv
from islet_imaging.phantom import make_visit
from islet_imaging.register import register_pet_to_mr, register_to_baseline, resample_like

RESULTS = Path(__file__).resolve().parent / "results" / "suv_register.json"
PET_SHIFT = np.array([2.0, -2.5, 3.0])


def _timed(func, repeat: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = func()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def _errors(transform: sitk.Transform | None, points: np.ndarray, truth: np.ndarray) -> dict:
    if transform is None:
        return {"failed": True}
    found = np.array([transform.TransformPoint(tuple(p)) for p in points])
    err = np.linalg.norm(found - truth, axis=1)
    return {"mean_mm": round(float(err.mean()), 3), "max_mm": round(float(err.max()), 3)}


def plain_sitk(fixed, moving) -> sitk.Transform | None:
    """The registration of the SimpleITK examples, default-style settings (None if it fails,
    e.g. "All samples map outside moving image buffer")."""
    f = sitk.Cast(fixed.to_sitk(), sitk.sitkFloat32)
    m = sitk.Cast(moving.to_sitk(), sitk.sitkFloat32)
    init = sitk.CenteredTransformInitializer(
        f, m, sitk.Euler3DTransform(), sitk.CenteredTransformInitializerFilter.GEOMETRY
    )
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=50)
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentage(0.01, seed=1)  # 0 = wall clock
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsGradientDescent(
        learningRate=1.0,
        numberOfIterations=100,
        convergenceMinimumValue=1e-6,
        convergenceWindowSize=10,
    )
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel([4, 2, 1])
    reg.SetSmoothingSigmasPerLevel([2, 1, 0])
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    reg.SetInitialTransform(init, inPlace=False)
    try:
        return reg.Execute(f, m)
    except RuntimeError:
        return None


def bench_suv() -> dict:
    visit = make_visit(seed=0, patient=1, visit=0, size="sample")
    pet = visit.pet
    factor = visit.truth["pet"]["suvbw_per_bqml"]
    t_suv, suv = _timed(lambda: to_suv(pet), 7)
    t_numpy, ref = _timed(lambda: pet.array.astype(np.float32) * np.float32(factor), 7)
    t_factors, _ = _timed(lambda: suv_factors(pet.meta["headers"]), 7)
    agree = float(np.max(np.abs(suv.array - ref)))
    return {
        "pet_shape": list(pet.shape),
        "n_headers": len(pet.meta["headers"]),
        "to_suv_s": round(t_suv, 5),
        "numpy_multiply_s": round(t_numpy, 5),
        "suv_factors_s": round(t_factors, 5),
        "ratio_to_suv_vs_numpy": round(t_suv / t_numpy, 2),
        "max_abs_difference_vs_numpy": agree,
        "factor_vs_phantom_truth_rel": abs(suv.meta["suv"]["factor"] / factor - 1),
    }


def bench_pet_to_mr(visit) -> dict:
    pet = dataclasses.replace(visit.pet, origin=tuple(np.asarray(visit.pet.origin) + PET_SHIFT))
    mr = visit.mr_t2
    points = mr.index_to_world(np.argwhere(visit.graft_mask.array))
    truth = points + PET_SHIFT
    t_ours, reg = _timed(lambda: register_pet_to_mr(pet, mr), 3)
    t_plain, plain = _timed(lambda: plain_sitk(mr, pet), 3)
    t_resample, _ = _timed(lambda: resample_like(pet, mr), 5)
    return {
        "mr_shape": list(mr.shape),
        "pet_shape": list(pet.shape),
        "shift_mm": PET_SHIFT.tolist(),
        "ours_s": round(t_ours, 3),
        "plain_sitk_s": round(t_plain, 3),
        "resample_like_s": round(t_resample, 4),
        "ratio_ours_vs_plain_sitk": round(t_ours / t_plain, 2),
        "ratio_ours_vs_resample": round(t_ours / t_resample, 1),
        "error_ours": _errors(reg.transform, points, truth),
        "error_plain_sitk": _errors(plain, points, truth),
        "error_identity": _errors(sitk.Euler3DTransform(), points, truth),
    }


def bench_pet_to_mr_grid() -> dict:
    """``register_pet_to_mr`` over seeds × MR orientations × PET misalignments (small visits)."""
    cases = {"none": ((0.0, 0.0, 0.0), 0.0), "4mm_3deg": ((0.0, 0.0, 4.0), 3.0)}
    rows = []
    for seed in (0, 1, 2):
        for orientation in ("axial", "oblique", "sagittal"):
            visit = make_visit(seed=seed, size="small", orientation=orientation)
            points = visit.mr_t2.index_to_world(np.argwhere(visit.graft_mask.array))
            centre = points.mean(axis=0)
            for name, (shift, degrees) in cases.items():
                # the PET's grid rotated about the graft centre (about y; the arm lies along z)
                # and shifted: the anatomy at MR point x shows at PET point truth(x)
                rot = Rotation.from_rotvec([0.0, np.radians(degrees), 0.0]).as_matrix()
                pet = dataclasses.replace(
                    visit.pet,
                    origin=tuple(rot @ (np.asarray(visit.pet.origin) - centre) + centre + shift),
                    direction=rot @ np.asarray(visit.pet.direction),
                )
                truth = (points - centre) @ rot.T + centre + np.asarray(shift)
                t0 = time.perf_counter()
                reg = register_pet_to_mr(pet, visit.mr_t2)
                seconds = time.perf_counter() - t0
                rows.append(
                    {
                        "seed": seed,
                        "orientation": orientation,
                        "misalignment": name,
                        "seconds": round(seconds, 3),
                        "error": _errors(reg.transform, points, truth),
                    }
                )
    worst = max(row["error"]["max_mm"] for row in rows)
    times = [row["seconds"] for row in rows]
    return {
        "cases": rows,
        "worst_max_mm": worst,
        "median_s": round(statistics.median(times), 3),
        "max_s": round(max(times), 3),
    }


def bench_baseline(baseline, visit_index: int) -> dict:
    visit = make_visit(seed=0, patient=1, visit=visit_index, size="small")
    points = baseline.mr_t2.index_to_world(np.argwhere(baseline.graft_mask.array))
    inverse = np.linalg.inv(np.asarray(visit.truth["transform_to_baseline"]["matrix_lps"]))
    truth = points @ inverse[:3, :3].T + inverse[:3, 3]
    t_ours, reg = _timed(lambda: register_to_baseline(visit.mr_t2, baseline.mr_t2), 3)
    t_plain, plain = _timed(lambda: plain_sitk(baseline.mr_t2, visit.mr_t2), 3)
    t_resample, _ = _timed(lambda: reg.apply(visit.mr_t2), 5)
    moved = visit.truth["transform_to_baseline"]
    return {
        "visit": visit_index,
        "rotation_deg": round(moved["rotation_deg"], 2),
        "translation_mm": round(float(np.linalg.norm(moved["translation_mm"])), 2),
        "ours_s": round(t_ours, 3),
        "plain_sitk_s": round(t_plain, 3),
        "apply_resample_s": round(t_resample, 4),
        "ratio_ours_vs_plain_sitk": round(t_ours / t_plain, 2),
        "tre_ours": _errors(reg.transform, points, truth),
        "tre_plain_sitk": _errors(plain, points, truth),
    }


def main() -> int:
    suv = bench_suv()
    print(
        f"SUV: to_suv {suv['to_suv_s'] * 1e3:.2f} ms vs numpy multiply "
        f"{suv['numpy_multiply_s'] * 1e3:.2f} ms (x{suv['ratio_to_suv_vs_numpy']}), "
        f"suv_factors {suv['suv_factors_s'] * 1e3:.2f} ms"
    )
    baseline = make_visit(seed=0, patient=1, visit=0, size="small")
    pet = bench_pet_to_mr(baseline)
    print(
        f"PET->MR: ours {pet['ours_s']:.2f} s (error {pet['error_ours']}), plain SimpleITK "
        f"{pet['plain_sitk_s']:.2f} s (error {pet['error_plain_sitk']}), resample "
        f"{pet['resample_like_s'] * 1e3:.1f} ms; ratio vs plain x{pet['ratio_ours_vs_plain_sitk']}"
    )
    grid = bench_pet_to_mr_grid()
    print(
        f"PET->MR grid ({len(grid['cases'])} cases, oblique/sagittal MR, PET moved 4 mm + 3°): "
        f"worst error {grid['worst_max_mm']:.2f} mm, time median {grid['median_s']:.2f} s, "
        f"max {grid['max_s']:.2f} s"
    )
    visits = []
    for index in (1, 3):
        res = bench_baseline(baseline, index)
        visits.append(res)
        print(
            f"visit {index} -> baseline ({res['rotation_deg']}°, {res['translation_mm']} mm): "
            f"ours {res['ours_s']:.2f} s TRE {res['tre_ours']}, plain SimpleITK "
            f"{res['plain_sitk_s']:.2f} s TRE {res['tre_plain_sitk']}; "
            f"ratio x{res['ratio_ours_vs_plain_sitk']}"
        )
    payload = {
        "benchmark": "suv_register",
        "machine": {"python": platform.python_version(), "processor": platform.machine()},
        "simpleitk": sitk.Version_VersionString(),
        "suv": suv,
        "pet_to_mr": pet,
        "pet_to_mr_grid": grid,
        "visit_to_baseline": visits,
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"results: {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
