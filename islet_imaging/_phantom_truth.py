"""The ``truth.json`` of a phantom visit (private; schema in :mod:`islet_imaging.phantom`)."""

from __future__ import annotations

import enum
import math
from typing import Any

import numpy as np
from scipy import ndimage

from islet_imaging._phantom_dicom import SERIES_FOLDERS, generator_version
from islet_imaging._phantom_model import (
    GRAFT_T1,
    GRAFT_T2,
    IRON_GRAFT_T1,
    IRON_GRAFT_T2,
    PET_RELATIVE,
    T1_SIGNAL,
    T2_SIGNAL,
    Tissue,
    touching_pairs,
)
from islet_imaging._phantom_render import Grid
from islet_imaging._phantom_visit import GA68_HALF_LIFE_S, RADIOPHARMACEUTICAL, VisitPlan
from islet_imaging.volume import Volume

SCHEMA_VERSION = 1


def _num(x: float, digits: int = 10) -> float:
    """Float rounded to ``digits`` significant digits (stable JSON text)."""
    x = float(x)
    if x == 0 or not math.isfinite(x):
        return x + 0.0
    return float(f"{x:.{digits}g}")


def jsonable(obj: Any) -> Any:
    """Plain JSON types, floats rounded to 10 significant digits."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, bool | np.bool_):
        return bool(obj)
    if isinstance(obj, int | np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        return _num(obj)
    if isinstance(obj, enum.Enum):
        return obj.value
    return obj


def _grid_dict(grid: Grid) -> dict:
    return {
        "shape": list(grid.shape),
        "spacing_mm": list(grid.spacing),
        "origin_mm": list(grid.origin),
        "direction": np.asarray(grid.direction).tolist(),
    }


def _euler_parameters(matrix: np.ndarray) -> list[float]:
    """Euler3DTransform parameters (centre 0) of a rigid 4x4 matrix."""
    import SimpleITK as sitk

    transform = sitk.Euler3DTransform()
    transform.SetMatrix(tuple(float(x) for x in matrix[:3, :3].ravel()), 1e-6)
    transform.SetTranslation(tuple(float(x) for x in matrix[:3, 3]))
    return list(transform.GetParameters())


def _adjacent_pairs(labels: np.ndarray) -> list[list[int]]:
    """Pairs of different labels that share a voxel face."""
    pairs = set()
    for axis in range(3):
        a = np.moveaxis(labels, axis, 0)
        lo, hi = a[:-1], a[1:]
        sel = (lo > 0) & (hi > 0) & (lo != hi)
        for x, y in zip(lo[sel].tolist(), hi[sel].tolist(), strict=True):
            pairs.add((min(x, y), max(x, y)))
    return [list(p) for p in sorted(pairs)]


def discretisation_bound_ml(surface_mm2: float, spacing: tuple[float, float, float]) -> float:
    """Bound of |voxelised − analytic| volume for centre sampling: shell of half-width D/2.

    A point is misclassified only if the surface passes between it and its voxel centre, i.e.
    within D/2 (half the voxel diagonal) of the surface; that shell holds at most
    A·D + π/3·D³ (Steiner's formula for the outer and inner parallel bodies).
    """
    d = math.sqrt(sum(s * s for s in spacing))
    return (surface_mm2 * d + math.pi / 3 * d**3) / 1000.0


def build_truth(
    plan: VisitPlan,
    *,
    labels: np.ndarray,
    tissue_codes: np.ndarray,
    images: dict[str, Volume],
    series: dict[str, dict],
    bias: np.ndarray,
    noise_sigmas: tuple[float, float],
) -> dict:
    """The JSON-ready truth of one visit (schema in the :mod:`islet_imaging.phantom` docstring)."""
    pat, pose, states, mr_grid = plan.patient, plan.pose, plan.states, plan.mr_grid
    iron = plan.options.iron_labelled
    voxel_ml = float(np.prod(mr_grid.spacing)) / 1000.0
    counts = np.bincount(labels.ravel().astype(np.int64), minlength=len(states) + 1)
    graft_t1 = IRON_GRAFT_T1 if iron else GRAFT_T1
    graft_t2 = IRON_GRAFT_T2 if iron else GRAFT_T2
    deposits = [
        {
            "label": s.deposit.label,
            "track": s.deposit.track,
            "centre_mm": pose.rotation @ np.asarray(s.deposit.centre) + pose.translation,
            "axes": pose.rotation @ s.deposit.axes,
            "semi_axes_mm": list(s.semi_axes),
            "cut_low_mm": s.cut_low,
            "cut_high_mm": s.cut_high,
            "volume_ml_analytic": s.volume_mm3 / 1000.0,
            "volume_ml_voxelised": counts[s.deposit.label] * voxel_ml,
            "discretisation_bound_ml": discretisation_bound_ml(s.surface_mm2, mr_grid.spacing),
            "activity_bqml": plan.graft_bqml[s.deposit.label],
            "suvbw": plan.graft_suv[s.deposit.label],
            "mr_t2_signal": graft_t2 * (1.0 if iron else s.deposit.t2_factor),
        }
        for s in states
    ]
    volume_ml = sum(s.volume_mm3 for s in states) / 1000.0
    total_bq = sum(plan.graft_bqml[s.deposit.label] * s.volume_mm3 / 1000.0 for s in states)
    mean_bqml = total_bq / volume_ml
    muscle = tissue_codes == Tissue.BRACHIORADIALIS
    tissues = {
        t.name.lower(): {
            "code": int(t),
            "t1_signal": T1_SIGNAL.get(t, graft_t1),
            "t2_signal": T2_SIGNAL.get(t, graft_t2),
            "activity_bqml": PET_RELATIVE[t] * plan.muscle_bqml if t in PET_RELATIVE else mean_bqml,
        }
        for t in Tissue
    }
    rotation = plan.to_baseline[:3, :3]
    angle = math.degrees(math.acos(max(-1.0, min(1.0, (np.trace(rotation) - 1) / 2))))
    rel = f"{pat.patient_id}/{plan.label}"
    truth = {
        "schema_version": SCHEMA_VERSION,
        "generator": {
            "name": "islet-imaging phantom",
            "version": generator_version(),
            "seed": plan.seed,
            "size": plan.options.size.value,
            "options": plan.options.to_dict(),
        },
        "patient": {
            "id": pat.patient_id,
            "name": pat.name,
            "sex": pat.sex,
            "age_years": pat.age,
            "weight_kg": plan.weight_kg,
            "height_m": pat.height_m,
            "trend": pat.trend.value,
        },
        "visit": {
            "index": plan.visit,
            "label": plan.label,
            "month": plan.month,
            "date": plan.visit_date.isoformat(),
            "days_after_implantation": (plan.visit_date - pat.implantation).days,
        },
        "study_uid": series["t1"]["study_uid"],
        "frame_of_reference_uid": series["t1"]["frame_of_reference_uid"],
        "series": {
            key: {
                "series_uid": images[key].meta["series_uid"],
                "series_number": opts["series_number"],
                "description": opts["series_description"],
                "folder": f"dicom/{rel}/{SERIES_FOLDERS[key]}",
            }
            for key, opts in series.items()
        },
        "grids": {"mr": _grid_dict(mr_grid), "pet": _grid_dict(plan.pet_grid)},
        "orientation": plan.options.orientation.value,
        "deposits": deposits,
        "graft": {
            "n_deposits": len(states),
            "n_tracks": len({s.deposit.track for s in states}),
            "volume_ml_analytic": volume_ml,
            "volume_ml_voxelised": float(counts[1:].sum()) * voxel_ml,
            "discretisation_bound_ml": sum(d["discretisation_bound_ml"] for d in deposits),
            "touching_pairs": [list(p) for p in touching_pairs(states)],
            "adjacent_pairs_voxelised": _adjacent_pairs(labels),
            "n_components_voxelised": int(ndimage.label(labels > 0)[1]),
            "activity_bqml_mean": mean_bqml,
            "suvbw_mean": mean_bqml * plan.suvbw_per_bqml,
            "suvbw_max": max(plan.graft_suv.values()),
            "total_activity_bq": total_bq,
            "graft_to_muscle_ratio": mean_bqml / plan.muscle_bqml,
            "volume_factor": plan.volume_factor,
            "uptake_factor": plan.uptake_factor,
        },
        "pet": {
            "psf_fwhm_mm": plan.options.psf_fwhm_mm,
            "noise_cv": plan.options.pet_noise_cv,
            "radiopharmaceutical": RADIOPHARMACEUTICAL,
            "radionuclide": "68Ga",
            "half_life_s": GA68_HALF_LIFE_S,
            "injected_dose_bq": plan.dose_bq,
            "injection_datetime": plan.injection.isoformat(),
            "series_datetime": plan.pet_start.isoformat(),
            "delta_t_s": plan.delta_t_s,
            "decay_factor": plan.decay_factor,
            "weight_kg": plan.weight_kg,
            "suvbw_per_bqml": plan.suvbw_per_bqml,
        },
        "mr": {
            "t1_noise_sigma": noise_sigmas[0],
            "t2_noise_sigma": noise_sigmas[1],
            "bias_field_min": float(bias.min()),
            "bias_field_max": float(bias.max()),
            "iron_labelled": iron,
            "supersampling": list(plan.preset.mr_supersample),
        },
        "reference_muscle": {
            "name": "brachioradialis",
            "t1_signal": T1_SIGNAL[Tissue.BRACHIORADIALIS],
            "t2_signal": T2_SIGNAL[Tissue.BRACHIORADIALIS],
            "t1_mean_image": float(np.asarray(images["t1"].array, np.float64)[muscle].mean()),
            "t2_mean_image": float(np.asarray(images["t2"].array, np.float64)[muscle].mean()),
            "activity_bqml": plan.muscle_bqml,
            "suvbw": plan.muscle_bqml * plan.suvbw_per_bqml,
        },
        "tissues": tissues,
        "transform_to_baseline": {
            "matrix_lps": plan.to_baseline,
            "convention": "maps a point of this visit (LPS mm) to the same anatomy at baseline",
            "rotation_deg": angle,
            "translation_mm": float(np.linalg.norm(plan.to_baseline[:3, 3])),
            "sitk": {
                "type": "Euler3DTransform",
                "parameters": _euler_parameters(np.linalg.inv(plan.to_baseline)),
                "fixed_parameters": [0.0, 0.0, 0.0, 0.0],
                "convention": "ITK: maps points of the fixed image (baseline) to the moving "
                "image (this visit) = inverse of matrix_lps",
            },
        },
        "files": {
            "graft_mask": f"truth/{rel}/graft_mask.nii.gz",
            "deposit_labels": f"truth/{rel}/deposit_labels.nii.gz",
            "tissue_labels": f"truth/{rel}/tissue_labels.nii.gz",
            "pet_deposit_labels": f"truth/{rel}/pet_deposit_labels.nii.gz",
            **{key: f"dicom/{rel}/{folder}" for key, folder in SERIES_FOLDERS.items()},
        },
    }
    return jsonable(truth)
