"""Synthetic forearm islet-graft studies (MR T1/T2 + 68Ga-exendin PET) with exact ground truth.

No public forearm islet-graft scans exist, so this module builds them: a tapering elliptical
forearm (skin, subcutaneous fat, radius and ulna with a cortical shell, four muscle compartments
with slightly different MR signal), a graft of several ellipsoidal deposits (about 0.02 to 2 mL)
along one or two oblique injection tracks inside the brachioradialis (consecutive deposits may
touch along a flat face, so every volume stays analytic), and per visit:

* MR T1- and T2-weighted series on an anisotropic grid (axial, oblique or sagittal): partial
  volume by sub-voxel sampling, a smooth multiplicative bias field, Rician noise, int16 values.
  Deposits are bright on T2 (dark on both with ``iron_labelled=True``).
* PET in Bq/mL (decay-corrected to the series start): muscle background, graft uptake several
  times higher, Gaussian PSF (``psf_fwhm_mm``, default 5 mm), noise, per-slice RescaleSlope, its
  own axial grid with the same FrameOfReferenceUID as the MR of the visit, and every tag SUV needs
  (Units BQML, DecayCorrection START, CorrectedImage ATTN\\DECY, radiopharmaceutical sequence with
  RadiopharmaceuticalStartDateTime, RadionuclideTotalDose, RadionuclideHalfLife 4062.6 s,
  PatientWeight, PatientSize, PatientSex).
* The arm repositioned (rigid rotation up to ``max_rotation_deg``, shift up to ``max_shift_mm``
  relative to baseline) and the graft shrinking, stable or growing (volume and uptake) over visits.

Everything is a pure function of ``seed``: generating twice gives identical bytes (DICOM UIDs and
dates included). The same seed gives the same patients and grafts for every ``size``; only the
voxel grids change.

Sizes
-----
``small`` (tests; MR 1.5 × 1.5 × 3 mm, PET 4 mm, one visit in about 0.3 s), ``sample`` (the
committed ``sample_data``; MR 0.8 × 0.8 × 3 mm, PET 3 mm) and ``standard`` (MR 0.6 × 0.6 × 3 mm,
PET 2 mm).

Folder layout written by :func:`generate_study`
-----------------------------------------------
::

    OUT/
      phantom.json                          generator, version, seed, options, patients, visits
      dicom/<PatientID>/V<k>/T1/IM0001.dcm  MR T1 series (one file per slice)
      dicom/<PatientID>/V<k>/T2/IM0001.dcm  MR T2 series (same grid as T1)
      dicom/<PatientID>/V<k>/PET/IM0001.dcm PET series (own grid, same frame of reference)
      truth/<PatientID>/V<k>/truth.json
      truth/<PatientID>/V<k>/graft_mask.nii.gz      uint8 0/1 on the MR grid
      truth/<PatientID>/V<k>/deposit_labels.nii.gz  int16 deposit label (1..n) on the MR grid
      truth/<PatientID>/V<k>/tissue_labels.nii.gz   uint8 tissue codes (see Tissue) on the MR grid

Patient IDs are pseudonymous (``ISLET-001``...), names synthetic (``PHANTOM^P001``), no birth
date. ``k`` is the visit index (0 = baseline); each visit is one DICOM study.

truth.json schema (version 1)
-----------------------------
All lengths in mm, positions in DICOM patient coordinates (LPS), volumes in mL, activity
concentrations in Bq/mL decay-corrected to the PET series start, SUV = SUVbw (g/mL)::

    schema_version    1
    generator         {name, version, seed, size, options}
    patient           {id, name, sex, age_years, weight_kg, height_m, trend}
    visit             {index, label, month, date, days_after_implantation}
    study_uid, frame_of_reference_uid
    series            {t1|t2|pet: {series_uid, series_number, description, folder}}
    grids             {mr|pet: {shape, spacing_mm, origin_mm, direction}}   (Volume convention)
    orientation       "axial" | "oblique" | "sagittal"  (MR acquisition)
    deposits          list, one per deposit:
                      {label, track, centre_mm, axes (3x3, columns = unit semi-axis directions,
                       column 0 = track direction), semi_axes_mm, cut_low_mm, cut_high_mm,
                       volume_ml_analytic, volume_ml_voxelised, discretisation_bound_ml,
                       activity_bqml, suvbw, mr_t2_signal}
    graft             {n_deposits, volume_ml_analytic, volume_ml_voxelised,
                       discretisation_bound_ml, touching_pairs (analytic contact, shared face),
                       adjacent_pairs_voxelised (face-adjacent labels in the label map),
                       n_components_voxelised (6-connectivity), activity_bqml_mean,
                       suvbw_mean, suvbw_max, total_activity_bq, graft_to_muscle_ratio,
                       volume_factor, uptake_factor (relative to baseline)}
    pet               {psf_fwhm_mm, noise_cv, radiopharmaceutical, radionuclide,
                       half_life_s, injected_dose_bq, injection_datetime, series_datetime,
                       delta_t_s, decay_factor, weight_kg, suvbw_per_bqml}
                       (suvbw = activity_bqml * suvbw_per_bqml, with
                        suvbw_per_bqml = weight_g / (dose * 2 ** (-delta_t_s / half_life_s)))
    mr                {t1_noise_sigma, t2_noise_sigma, bias_field_min, bias_field_max,
                       iron_labelled, supersampling}
    reference_muscle  {name ("brachioradialis", the host muscle outside the graft),
                       t1_signal, t2_signal (noise- and bias-free), t1_mean_image,
                       t2_mean_image (mean of the images over that muscle's voxels),
                       activity_bqml, suvbw}
    tissues           {name: {code, t1_signal, t2_signal, activity_bqml}}
    transform_to_baseline
                      {matrix_lps: 4x4 mapping a point of THIS visit (LPS mm) to the same
                       anatomical point of the baseline visit (identity at baseline),
                       rotation_deg, translation_mm,
                       sitk: {type "Euler3DTransform", parameters [rx, ry, rz, tx, ty, tz],
                              fixed_parameters [cx, cy, cz, 0], convention: ITK maps points of
                              the FIXED image (baseline) to the MOVING image (this visit), i.e.
                              the inverse of matrix_lps, as a registration of this visit (moving)
                              onto baseline (fixed) returns it}}
    files             {graft_mask, deposit_labels, tissue_labels, t1, t2, pet} (relative to OUT)

Examples
--------
>>> visit = make_visit(seed=3, size="small")
>>> visit.mr_t1.meta["modality"], visit.pet.meta["units"]
('MR', 'BQML')
>>> visit.truth["graft"]["n_deposits"] == len(visit.truth["deposits"])
True
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from islet_imaging._atomic import write_text_atomic
from islet_imaging._phantom_model import (
    GRAFT_T1,
    GRAFT_T2,
    IRON_GRAFT_T1,
    IRON_GRAFT_T2,
    PET_RELATIVE,
    T1_SIGNAL,
    T2_SIGNAL,
    Anatomy,
    Deposit,
    Tissue,
    make_deposits,
    rotation_matrix,
    touching_pairs,
    visit_states,
)
from islet_imaging._phantom_render import (
    Grid,
    Pose,
    bias_field,
    box_extent_in_frame,
    grid_around,
    label_maps,
    render_mr,
    render_pet,
    rician,
)
from islet_imaging.errors import IsletImagingError
from islet_imaging.io.dicom_write import (
    Rescale,
    _stored_values,
    deterministic_uid,
    series_datasets,
)
from islet_imaging.volume import Volume

__all__ = [
    "GA68_HALF_LIFE_S",
    "Orientation",
    "PhantomVisit",
    "Size",
    "Trend",
    "generate_study",
    "make_visit",
    "write_visit",
]

GA68_HALF_LIFE_S = 4062.6
SCHEMA_VERSION = 1
VISIT_MONTHS = (0, 1, 3, 6, 12, 24)
RADIOPHARMACEUTICAL = "[68Ga]Ga-NODAGA-exendin-4"
#: nominal arm placement: u -> patient right (-L), v -> posterior, w (distal) -> inferior
_NOMINAL_ROTATION = np.array([[-1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, -1.0]])
_NOMINAL_TRANSLATION = np.array([-200.0, 30.0, -150.0])
_AXIAL = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])  # (normal, col, row)


class Orientation(enum.Enum):
    """MR acquisition plane."""

    AXIAL = "axial"
    OBLIQUE = "oblique"
    SAGITTAL = "sagittal"


class Size(enum.Enum):
    """Grid presets (the anatomy and graft do not depend on them)."""

    SMALL = "small"
    SAMPLE = "sample"
    STANDARD = "standard"


class Trend(enum.Enum):
    """How the graft evolves over visits."""

    SHRINK = "shrink"
    STABLE = "stable"
    GROW = "grow"


@dataclasses.dataclass(frozen=True)
class _Preset:
    mr_spacing: tuple[float, float, float]
    mr_length_mm: float
    mr_supersample: tuple[int, int, int]
    pet_spacing: float
    pet_oversample: int


_PRESETS = {
    Size.SMALL: _Preset((3.0, 1.5, 1.5), 84.0, (3, 1, 1), 4.0, 2),
    Size.SAMPLE: _Preset((3.0, 0.8, 0.8), 90.0, (3, 1, 1), 3.0, 2),
    Size.STANDARD: _Preset((3.0, 0.6, 0.6), 120.0, (3, 2, 2), 2.0, 2),
}
_FOV_TRANSVERSE_MM = (112.0, 96.0)  # along u (width) and v (depth)
_TRENDS = (Trend.SHRINK, Trend.GROW, Trend.STABLE)


@dataclasses.dataclass(frozen=True)
class _Patient:
    index: int
    patient_id: str
    name: str
    sex: str
    age: int
    weight_kg: float
    height_m: float
    trend: Trend
    anatomy: Anatomy
    deposits: list[Deposit]
    muscle_suv: float
    graft_ratio: float
    implantation: dt.date
    baseline_pose: Pose


@dataclasses.dataclass(frozen=True, repr=False)
class PhantomVisit:
    """One synthetic visit in memory.

    Attributes
    ----------
    mr_t1, mr_t2 : Volume
        MR signal (float32 holding the int16 stored values), same grid; ``meta`` as filled by the
        loader (modality, UIDs, ``headers`` without pixel data, ``rescale``...).
    pet : Volume
        Activity concentration in Bq/mL (float32, the stored values × per-slice RescaleSlope),
        own axial grid, same ``frame_of_reference_uid``.
    graft_mask : Volume
        bool, MR grid: voxel centres inside a deposit.
    deposit_labels : Volume
        int16 labels 1..n (``meta['kind'] = 'mask'``), MR grid.
    tissue_labels : Volume
        uint8 :class:`~islet_imaging._phantom_model.Tissue` codes, MR grid.
    pet_deposit_labels : Volume
        int16 deposit labels on the PET grid (voxel centres).
    truth : dict
        JSON-ready ground truth (schema in the module docstring).
    transform_to_baseline : ndarray, shape (4, 4)
        Maps LPS points of this visit to the same anatomy at baseline.
    """

    patient_id: str
    visit: int
    mr_t1: Volume
    mr_t2: Volume
    pet: Volume
    graft_mask: Volume
    deposit_labels: Volume
    tissue_labels: Volume
    pet_deposit_labels: Volume
    truth: dict
    transform_to_baseline: np.ndarray
    series_options: dict = dataclasses.field(default_factory=dict)

    def __repr__(self) -> str:
        graft = self.truth["graft"]
        return (
            f"PhantomVisit({self.patient_id}, visit={self.visit}, "
            f"deposits={graft['n_deposits']}, graft={graft['volume_ml_analytic']:.3f} mL)"
        )

    def sitk_transform_to_baseline(self):
        """The ITK-convention transform (baseline points → this visit), a SimpleITK Euler3D."""
        import SimpleITK as sitk

        spec = self.truth["transform_to_baseline"]["sitk"]
        transform = sitk.Euler3DTransform()
        transform.SetFixedParameters(spec["fixed_parameters"])
        transform.SetParameters(spec["parameters"])
        return transform


# ---------------------------------------------------------------------------- helpers
def _num(x: float, digits: int = 10) -> float:
    """Float rounded to ``digits`` significant digits (stable JSON text)."""
    x = float(x)
    if x == 0 or not math.isfinite(x):
        return x + 0.0
    return float(f"{x:.{digits}g}")


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, bool | np.bool_):
        return bool(obj)
    if isinstance(obj, int | np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        return _num(obj)
    if isinstance(obj, enum.Enum):
        return obj.value
    return obj


def _rng(seed: int, *parts: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), *parts])


def _random_rotation(rng: np.random.Generator, max_deg: float, min_deg: float = 0.0):
    axis = rng.standard_normal(3)
    angle = math.radians(rng.uniform(min_deg, max_deg))
    return rotation_matrix(axis, angle)


def _trend_factors(trend: Trend, month: float) -> tuple[float, float]:
    """(volume factor, uptake factor) relative to baseline."""
    ramp = 1.0 - math.exp(-month / 6.0)
    if trend is Trend.SHRINK:
        return 1.0 - 0.40 * ramp, 1.0 - 0.35 * ramp
    if trend is Trend.GROW:
        return 1.0 + 0.30 * ramp, 1.0 + 0.25 * ramp
    return 1.0 + 0.02 * math.sin(1.7 * month), 1.0 + 0.03 * math.sin(0.9 * month)


def _month(visit: int) -> float:
    if visit < len(VISIT_MONTHS):
        return float(VISIT_MONTHS[visit])
    return float(VISIT_MONTHS[-1] + 12 * (visit - len(VISIT_MONTHS) + 1))


def _make_patient(seed: int, patient: int) -> _Patient:
    rng = _rng(seed, patient, 0)
    sex = "F" if rng.random() < 0.5 else "M"
    weight = round(float(rng.uniform(55, 90)), 1)
    height = round(float(rng.uniform(1.58, 1.75) + (0.08 if sex == "M" else 0.0)), 2)
    anatomy = Anatomy(half_width=float(rng.uniform(40, 44)), half_depth=float(rng.uniform(32, 36)))
    trend = _TRENDS[(patient - 1) % 3]
    max_scale = max(_trend_factors(trend, m)[0] for m in range(0, 121)) ** (1 / 3)
    deposits = make_deposits(_rng(seed, patient, 1), anatomy, max_scale=max_scale)
    rot = _random_rotation(rng, 3.0) @ _NOMINAL_ROTATION
    shift = _NOMINAL_TRANSLATION + rng.uniform(-5, 5, 3)
    return _Patient(
        index=patient,
        patient_id=f"ISLET-{patient:03d}",
        name=f"PHANTOM^P{patient:03d}",
        sex=sex,
        age=int(rng.integers(25, 66)),
        weight_kg=weight,
        height_m=height,
        trend=trend,
        anatomy=anatomy,
        deposits=deposits,
        muscle_suv=float(rng.uniform(0.45, 0.65)),
        graft_ratio=float(rng.uniform(4.0, 6.0)),
        implantation=dt.date(2024, 1, 8) + dt.timedelta(days=int(rng.integers(0, 200))),
        baseline_pose=Pose(rot, shift),
    )


def _graft_centre(deposits: list[Deposit]) -> np.ndarray:
    return np.mean([d.centre for d in deposits], axis=0)


def _visit_pose(patient: _Patient, seed: int, visit: int, max_rotation_deg, max_shift_mm) -> Pose:
    base = patient.baseline_pose
    if visit == 0:
        return base
    rng = _rng(seed, patient.index, 100 + visit)
    rot_delta = _random_rotation(rng, max_rotation_deg, min_deg=min(2.0, max_rotation_deg))
    direction = rng.standard_normal(3)
    direction /= np.linalg.norm(direction)
    shift = direction * rng.uniform(min(5.0, max_shift_mm), max_shift_mm)
    g = base.rotation @ _graft_centre(patient.deposits) + base.translation
    return Pose(rot_delta @ base.rotation, rot_delta @ (base.translation - g) + g + shift)


def _mr_frame(orientation: Orientation) -> np.ndarray:
    if orientation is Orientation.AXIAL:
        return _AXIAL.copy()
    if orientation is Orientation.SAGITTAL:
        row, col = np.array([0.0, 1.0, 0.0]), np.array([0.0, 0.0, -1.0])
    else:
        tilt = rotation_matrix(np.array([1.0, 0, 0]), math.radians(15)) @ rotation_matrix(
            np.array([0, 1.0, 0]), math.radians(-10)
        )
        row, col = tilt @ np.array([1.0, 0, 0]), tilt @ np.array([0, 1.0, 0])
    return np.stack([np.cross(row, col), col, row], axis=1)


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
    pairs = set()
    for axis in range(3):
        a = np.moveaxis(labels, axis, 0)
        lo, hi = a[:-1], a[1:]
        sel = (lo > 0) & (hi > 0) & (lo != hi)
        for x, y in zip(lo[sel].tolist(), hi[sel].tolist(), strict=True):
            pairs.add((min(x, y), max(x, y)))
    return [list(p) for p in sorted(pairs)]


def _discretisation_bound_ml(surface_mm2: float, spacing: tuple[float, float, float]) -> float:
    """Bound of |voxelised − analytic| volume for centre sampling: shell of half-width D/2."""
    d = math.sqrt(sum(s * s for s in spacing))
    return (surface_mm2 * d + math.pi / 3 * d**3) / 1000.0


# ---------------------------------------------------------------------------- public API
def make_visit(
    *,
    seed: int = 0,
    patient: int = 1,
    visit: int = 0,
    size: Size | str = Size.SMALL,
    orientation: Orientation | str = Orientation.AXIAL,
    iron_labelled: bool = False,
    psf_fwhm_mm: float = 5.0,
    pet_noise_cv: float = 0.10,
    mr_snr: float = 30.0,
    max_rotation_deg: float = 10.0,
    max_shift_mm: float = 20.0,
) -> PhantomVisit:
    """Generate one visit of one synthetic patient in memory.

    Parameters
    ----------
    seed
        Master seed; everything (anatomy, graft, poses, noise, UIDs, dates) derives from
        ``(seed, patient, visit)``.
    patient
        1-based patient number (``ISLET-001`` is patient 1). Patients cycle through the trends
        shrink, grow, stable.
    visit
        0-based visit index (0 = baseline; months 0, 1, 3, 6, 12, 24, then yearly).
    size
        Grid preset: "small" (fast, for tests), "sample" or "standard".
    orientation
        MR acquisition: "axial", "oblique" (tilted 15° about L and -10° about P) or "sagittal".
    iron_labelled
        Deposits dark on T1 and T2 (SPIO-labelled islets) instead of bright on T2.
    psf_fwhm_mm
        FWHM (mm) of the isotropic Gaussian PET point-spread function.
    pet_noise_cv
        PET noise SD relative to the value at the muscle level (SD ∝ sqrt(activity)).
    mr_snr
        Muscle signal / noise SD on T1 (T2 uses 5/6 of it).
    max_rotation_deg, max_shift_mm
        Largest rigid repositioning of the arm relative to baseline (mm, degrees).

    Returns
    -------
    PhantomVisit
        Volumes, masks and truth (see the module docstring for the truth schema).
    """
    size, orientation = Size(size), Orientation(orientation)
    if patient < 1 or visit < 0:
        raise IsletImagingError(
            "patient is 1-based and visit 0-based", tag="patient/visit", value=(patient, visit)
        )
    if psf_fwhm_mm <= 0:
        raise IsletImagingError("must be positive (mm)", tag="psf_fwhm_mm", value=psf_fwhm_mm)
    preset = _PRESETS[size]
    pat = _make_patient(seed, patient)
    month = _month(visit)
    volume_factor, uptake_factor = _trend_factors(pat.trend, month)
    states = visit_states(pat.deposits, volume_factor ** (1 / 3))
    pose = _visit_pose(pat, seed, visit, max_rotation_deg, max_shift_mm)
    base = pat.baseline_pose
    to_baseline = base.matrix() @ pose.inverse().matrix()
    rng = _rng(seed, patient, 200 + visit)

    # ---- grids: FOV centred on the arm axis at the level of the graft, as placed at this visit
    centre_arm = np.array([0.0, 0.0, _graft_centre(pat.deposits)[2]])
    centre = pose.rotation @ centre_arm + pose.translation
    box_axes = pose.rotation @ np.eye(3)  # (u, v, w) directions at this visit
    box = (*_FOV_TRANSVERSE_MM, preset.mr_length_mm)
    mr_frame = _mr_frame(orientation)
    mr_extent = box_extent_in_frame(mr_frame, box_axes, box)
    if orientation is Orientation.AXIAL:
        mr_extent = (preset.mr_length_mm, _FOV_TRANSVERSE_MM[1], _FOV_TRANSVERSE_MM[0])
    mr_grid = grid_around(centre, mr_frame, mr_extent, preset.mr_spacing)
    pet_box = tuple(b + 2 * psf_fwhm_mm for b in box)
    pet_extent = box_extent_in_frame(_AXIAL, _NOMINAL_ROTATION, pet_box)
    pet_grid = grid_around(centre, _AXIAL, pet_extent, (preset.pet_spacing,) * 3)

    # ---- dates, times, dose
    visit_date = pat.implantation + dt.timedelta(days=7 if month == 0 else round(30.4375 * month))
    date = visit_date.strftime("%Y%m%d")
    mr_start = dt.datetime.combine(visit_date, dt.time(9, 0)) + dt.timedelta(
        seconds=int(rng.integers(0, 1800))
    )
    injection = dt.datetime.combine(visit_date, dt.time(10, 0)) + dt.timedelta(
        seconds=int(rng.integers(0, 1800))
    )
    pet_start = injection + dt.timedelta(seconds=int(rng.integers(3600, 4800)))
    delta_t = (pet_start - injection).total_seconds()
    dose_bq = float(round(rng.uniform(90e6, 130e6), -3))
    weight_kg = round(pat.weight_kg + float(rng.normal(0, 1.5)), 1)
    decay = 2.0 ** (-delta_t / GA68_HALF_LIFE_S)
    suv_per_bqml = weight_kg * 1000.0 / (dose_bq * decay)
    muscle_bqml = pat.muscle_suv / suv_per_bqml
    graft_suv = {
        s.deposit.label: pat.muscle_suv * pat.graft_ratio * uptake_factor * s.deposit.uptake_factor
        for s in states
    }
    graft_bqml = {label: suv / suv_per_bqml for label, suv in graft_suv.items()}

    # ---- truth label maps (voxel centres)
    tissue_codes, labels = label_maps(mr_grid, pose, pat.anatomy, states)
    _, pet_labels = label_maps(pet_grid, pose, pat.anatomy, states)

    # ---- MR
    t1_clean, t2_clean = render_mr(
        mr_grid, pose, pat.anatomy, states, iron=iron_labelled, supersample=preset.mr_supersample
    )
    bias = bias_field(mr_grid, centre, rng.normal(0, 0.08, 6))
    sigma_t1 = T1_SIGNAL[Tissue.BRACHIORADIALIS] / mr_snr
    sigma_t2 = T2_SIGNAL[Tissue.BRACHIORADIALIS] / (mr_snr * 5 / 6)
    t1 = np.clip(np.rint(rician(t1_clean * bias, sigma_t1, rng)), 0, 32767).astype(np.float32)
    t2 = np.clip(np.rint(rician(t2_clean * bias, sigma_t2, rng)), 0, 32767).astype(np.float32)

    # ---- PET
    pet_clean = render_pet(
        pet_grid,
        pose,
        pat.anatomy,
        states,
        muscle_bqml=muscle_bqml,
        graft_bqml=graft_bqml,
        fwhm_mm=psf_fwhm_mm,
        oversample=preset.pet_oversample,
    )
    noise_sd = pet_noise_cv * np.sqrt(muscle_bqml * np.clip(pet_clean, 0, None))
    pet_noisy = np.clip(pet_clean + noise_sd * rng.standard_normal(pet_clean.shape), 0, None)
    stored, slopes = _stored_values(pet_noisy, Rescale.PER_SLICE, np.dtype(np.int16))
    pet_values = (stored.astype(np.float64) * np.asarray(slopes)[:, None, None]).astype(np.float32)

    # ---- DICOM identity
    uid_seed = f"islet-phantom/{seed}/{patient}/{visit}"
    study_uid = deterministic_uid(uid_seed, "study")
    for_uid = deterministic_uid(uid_seed, "frame-of-reference")
    common = {
        "patient_id": pat.patient_id,
        "patient_name": pat.name,
        "uid_seed": uid_seed,
        "study_uid": study_uid,
        "frame_of_reference_uid": for_uid,
        "study_date": date,
        "study_time": mr_start.strftime("%H%M%S"),
    }
    patient_tags = {
        "PatientSex": pat.sex,
        "PatientAge": f"{pat.age:03d}Y",
        "PatientWeight": f"{weight_kg:.1f}",
        "PatientSize": f"{pat.height_m:.2f}",
        "Laterality": "R",
        "StudyDescription": "Forearm islet graft MR + 68Ga-exendin PET (phantom)",
        "StudyID": f"V{visit}",
        "AccessionNumber": f"PH{seed % 10000:04d}{patient:03d}{visit:02d}",
        "InstitutionName": "islet-imaging phantom",
        "StationName": "PHANTOM",
        "DeviceSerialNumber": "0",
        "SoftwareVersions": _version(),
    }
    t2_time = mr_start + dt.timedelta(seconds=420)
    suffix = {
        Orientation.AXIAL: "ax",
        Orientation.OBLIQUE: "obl",
        Orientation.SAGITTAL: "sag",
    }[orientation]
    series_options = {
        "t1": {
            **common,
            "modality": "MR",
            "series_number": 3,
            "series_description": f"T1 TSE {suffix}",
            "series_time": mr_start.strftime("%H%M%S"),
            "tags": {
                **patient_tags,
                "ScanningSequence": "SE",
                "SequenceVariant": "SK",
                "RepetitionTime": "600",
                "EchoTime": "12",
                "EchoTrainLength": "3",
                "EchoNumbers": "1",
                "AcquisitionDate": date,
                "AcquisitionTime": mr_start.strftime("%H%M%S"),
            },
        },
        "t2": {
            **common,
            "modality": "MR",
            "series_number": 4,
            "series_description": f"T2 TSE {suffix}",
            "series_time": t2_time.strftime("%H%M%S"),
            "tags": {
                **patient_tags,
                "ScanningSequence": "SE",
                "SequenceVariant": "SK",
                "RepetitionTime": "4000",
                "EchoTime": "90",
                "EchoTrainLength": "15",
                "EchoNumbers": "1",
                "AcquisitionDate": date,
                "AcquisitionTime": t2_time.strftime("%H%M%S"),
            },
        },
        "pet": {
            **common,
            "modality": "PT",
            "series_number": 5,
            "series_description": "PET 68Ga-exendin AC",
            "series_date": pet_start.strftime("%Y%m%d"),
            "series_time": pet_start.strftime("%H%M%S"),
            "tags": {
                **patient_tags,
                "Units": "BQML",
                "DecayCorrection": "START",
                "CorrectedImage": ["ATTN", "DECY", "SCAT", "DTIM"],
                "AcquisitionDate": pet_start.strftime("%Y%m%d"),
                "AcquisitionTime": pet_start.strftime("%H%M%S"),
                "ActualFrameDuration": 600000,
                "DecayFactor": "1",
                "ConvolutionKernel": f"GAUSS {psf_fwhm_mm:g}MM"[:16],
                "RadiopharmaceuticalInformationSequence": [
                    {
                        "Radiopharmaceutical": RADIOPHARMACEUTICAL,
                        "RadiopharmaceuticalRoute": "Intravenous route",
                        "RadiopharmaceuticalStartTime": injection.strftime("%H%M%S"),
                        "RadiopharmaceuticalStartDateTime": injection.strftime("%Y%m%d%H%M%S"),
                        "RadionuclideTotalDose": f"{dose_bq:.0f}",
                        "RadionuclideHalfLife": f"{GA68_HALF_LIFE_S}",
                        "RadionuclidePositronFraction": "0.889",
                        "RadionuclideCodeSequence": [
                            {
                                "CodeValue": "C-131A3",
                                "CodingSchemeDesignator": "SRT",
                                "CodeMeaning": "^68^Gallium",
                            }
                        ],
                    }
                ],
            },
        },
    }

    def image(array, key, units):
        opts = series_options[key]
        grid = pet_grid if key == "pet" else mr_grid
        geometry = Volume(array, grid.spacing, grid.origin, grid.direction)
        headers = series_datasets(geometry, **opts, pixel_data=False)
        meta = {
            "modality": opts["modality"],
            "series_uid": str(headers[0].SeriesInstanceUID),
            "study_uid": study_uid,
            "patient_id": pat.patient_id,
            "frame_of_reference_uid": for_uid,
            "series_description": opts["series_description"],
            "series_number": opts["series_number"],
            "study_date": date,
            "series_date": opts.get("series_date", date),
            "series_time": opts["series_time"],
            "units": units,
            "echo_number": 1 if key != "pet" else None,
            "image_type": tuple(headers[0].ImageType),
            "source_files": (),
            "headers": tuple(headers),
            "frame_numbers": None,
            "rescale": tuple(
                (float(h.get("RescaleSlope", 1.0)), float(h.get("RescaleIntercept", 0.0)))
                for h in headers
            ),
        }
        return Volume(array, grid.spacing, grid.origin, grid.direction, meta)

    mr_t1 = image(t1, "t1", None)
    mr_t2 = image(t2, "t2", None)
    pet = image(pet_values, "pet", "BQML")

    def on_grid(array, grid, **meta):
        return Volume(array, grid.spacing, grid.origin, grid.direction, meta)

    graft_mask = on_grid(labels > 0, mr_grid, kind="mask", name="graft")
    deposit_labels = on_grid(labels, mr_grid, kind="mask", name="deposits")
    tissue_labels = on_grid(tissue_codes, mr_grid, kind="mask", name="tissues")
    pet_deposit_labels = on_grid(pet_labels, pet_grid, kind="mask", name="deposits")

    truth = _truth(
        seed=seed,
        size=size,
        options={
            "orientation": orientation.value,
            "iron_labelled": iron_labelled,
            "psf_fwhm_mm": psf_fwhm_mm,
            "pet_noise_cv": pet_noise_cv,
            "mr_snr": mr_snr,
            "max_rotation_deg": max_rotation_deg,
            "max_shift_mm": max_shift_mm,
        },
        pat=pat,
        visit=visit,
        month=month,
        visit_date=visit_date,
        states=states,
        pose=pose,
        labels=labels,
        tissue_codes=tissue_codes,
        mr_grid=mr_grid,
        pet_grid=pet_grid,
        series=series_options,
        mr_t1=mr_t1,
        mr_t2=mr_t2,
        volumes={"t1": mr_t1, "t2": mr_t2, "pet": pet},
        study_uid=study_uid,
        for_uid=for_uid,
        iron=iron_labelled,
        bias=bias,
        sigmas=(sigma_t1, sigma_t2),
        pet_info={
            "psf_fwhm_mm": psf_fwhm_mm,
            "noise_cv": pet_noise_cv,
            "radiopharmaceutical": RADIOPHARMACEUTICAL,
            "radionuclide": "68Ga",
            "half_life_s": GA68_HALF_LIFE_S,
            "injected_dose_bq": dose_bq,
            "injection_datetime": injection.isoformat(),
            "series_datetime": pet_start.isoformat(),
            "delta_t_s": delta_t,
            "decay_factor": decay,
            "weight_kg": weight_kg,
            "suvbw_per_bqml": suv_per_bqml,
        },
        graft_suv=graft_suv,
        graft_bqml=graft_bqml,
        muscle_bqml=muscle_bqml,
        factors=(volume_factor, uptake_factor),
        to_baseline=to_baseline,
        preset=preset,
    )
    return PhantomVisit(
        patient_id=pat.patient_id,
        visit=visit,
        mr_t1=mr_t1,
        mr_t2=mr_t2,
        pet=pet,
        graft_mask=graft_mask,
        deposit_labels=deposit_labels,
        tissue_labels=tissue_labels,
        pet_deposit_labels=pet_deposit_labels,
        truth=truth,
        transform_to_baseline=to_baseline,
        series_options=series_options,
    )


def _version() -> str:
    from islet_imaging import __version__

    return __version__


def _truth(**k) -> dict:
    pat: _Patient = k["pat"]
    states = k["states"]
    pose: Pose = k["pose"]
    mr_grid: Grid = k["mr_grid"]
    labels = k["labels"]
    voxel_ml = float(np.prod(mr_grid.spacing)) / 1000.0
    counts = np.bincount(labels.ravel().astype(np.int64), minlength=len(states) + 1)
    t2_graft = IRON_GRAFT_T2 if k["iron"] else GRAFT_T2
    deposits = []
    for s in states:
        d = s.deposit
        deposits.append(
            {
                "label": d.label,
                "track": d.track,
                "centre_mm": pose.rotation @ np.asarray(d.centre) + pose.translation,
                "axes": pose.rotation @ d.axes,
                "semi_axes_mm": list(s.semi_axes),
                "cut_low_mm": s.cut_low,
                "cut_high_mm": s.cut_high,
                "volume_ml_analytic": s.volume_mm3 / 1000.0,
                "volume_ml_voxelised": counts[d.label] * voxel_ml,
                "discretisation_bound_ml": _discretisation_bound_ml(s.surface_mm2, mr_grid.spacing),
                "activity_bqml": k["graft_bqml"][d.label],
                "suvbw": k["graft_suv"][d.label],
                "mr_t2_signal": t2_graft * (1.0 if k["iron"] else d.t2_factor),
            }
        )
    vol_analytic = sum(s.volume_mm3 for s in states) / 1000.0
    total_activity = sum(k["graft_bqml"][s.deposit.label] * s.volume_mm3 / 1000.0 for s in states)
    mean_bqml = total_activity / vol_analytic
    suv_per = k["pet_info"]["suvbw_per_bqml"]
    n_components = int(ndimage.label(labels > 0)[1])
    br = k["tissue_codes"] == Tissue.BRACHIORADIALIS
    muscle_suv = k["muscle_bqml"] * suv_per
    graft_t1 = IRON_GRAFT_T1 if k["iron"] else GRAFT_T1
    tissues = {
        t.name.lower(): {
            "code": int(t),
            "t1_signal": T1_SIGNAL.get(t, graft_t1),
            "t2_signal": T2_SIGNAL.get(t, t2_graft),
            "activity_bqml": PET_RELATIVE[t] * k["muscle_bqml"] if t in PET_RELATIVE else None,
        }
        for t in Tissue
    }
    tissues["graft"]["activity_bqml"] = mean_bqml
    to_baseline = k["to_baseline"]
    rot = to_baseline[:3, :3]
    angle = math.degrees(math.acos(max(-1.0, min(1.0, (np.trace(rot) - 1) / 2))))
    inverse = np.linalg.inv(to_baseline)
    label = f"V{k['visit']}"
    rel = f"{pat.patient_id}/{label}"
    series = k["series"]
    truth = {
        "schema_version": SCHEMA_VERSION,
        "generator": {
            "name": "islet-imaging phantom",
            "version": _version(),
            "seed": k["seed"],
            "size": k["size"].value,
            "options": k["options"],
        },
        "patient": {
            "id": pat.patient_id,
            "name": pat.name,
            "sex": pat.sex,
            "age_years": pat.age,
            "weight_kg": k["pet_info"]["weight_kg"],
            "height_m": pat.height_m,
            "trend": pat.trend.value,
        },
        "visit": {
            "index": k["visit"],
            "label": label,
            "month": k["month"],
            "date": k["visit_date"].isoformat(),
            "days_after_implantation": (k["visit_date"] - pat.implantation).days,
        },
        "study_uid": k["study_uid"],
        "frame_of_reference_uid": k["for_uid"],
        "series": {
            key: {
                "series_uid": k["volumes"][key].meta["series_uid"],
                "series_number": opts["series_number"],
                "description": opts["series_description"],
                "folder": f"dicom/{rel}/{key.upper()}",
            }
            for key, opts in series.items()
        },
        "grids": {"mr": _grid_dict(mr_grid), "pet": _grid_dict(k["pet_grid"])},
        "orientation": k["options"]["orientation"],
        "deposits": deposits,
        "graft": {
            "n_deposits": len(states),
            "volume_ml_analytic": vol_analytic,
            "volume_ml_voxelised": float(counts[1:].sum()) * voxel_ml,
            "discretisation_bound_ml": sum(d["discretisation_bound_ml"] for d in deposits),
            "touching_pairs": [list(p) for p in touching_pairs(states)],
            "adjacent_pairs_voxelised": _adjacent_pairs(labels),
            "n_components_voxelised": n_components,
            "activity_bqml_mean": mean_bqml,
            "suvbw_mean": mean_bqml * suv_per,
            "suvbw_max": max(k["graft_suv"].values()),
            "total_activity_bq": total_activity,
            "graft_to_muscle_ratio": mean_bqml / k["muscle_bqml"],
            "volume_factor": k["factors"][0],
            "uptake_factor": k["factors"][1],
        },
        "pet": k["pet_info"],
        "mr": {
            "t1_noise_sigma": k["sigmas"][0],
            "t2_noise_sigma": k["sigmas"][1],
            "bias_field_min": float(k["bias"].min()),
            "bias_field_max": float(k["bias"].max()),
            "iron_labelled": k["iron"],
            "supersampling": list(k["preset"].mr_supersample),
        },
        "reference_muscle": {
            "name": "brachioradialis",
            "t1_signal": T1_SIGNAL[Tissue.BRACHIORADIALIS],
            "t2_signal": T2_SIGNAL[Tissue.BRACHIORADIALIS],
            "t1_mean_image": float(np.asarray(k["mr_t1"].array, dtype=np.float64)[br].mean()),
            "t2_mean_image": float(np.asarray(k["mr_t2"].array, dtype=np.float64)[br].mean()),
            "activity_bqml": k["muscle_bqml"],
            "suvbw": muscle_suv,
        },
        "tissues": tissues,
        "transform_to_baseline": {
            "matrix_lps": to_baseline,
            "convention": "maps a point of this visit (LPS mm) to the same anatomy at baseline",
            "rotation_deg": angle,
            "translation_mm": float(np.linalg.norm(to_baseline[:3, 3])),
            "sitk": {
                "type": "Euler3DTransform",
                "parameters": _euler_parameters(inverse),
                "fixed_parameters": [0.0, 0.0, 0.0, 0.0],
                "convention": "ITK: maps points of the fixed image (baseline) to the moving "
                "image (this visit) = inverse of matrix_lps",
            },
        },
        "files": {
            "graft_mask": f"truth/{rel}/graft_mask.nii.gz",
            "deposit_labels": f"truth/{rel}/deposit_labels.nii.gz",
            "tissue_labels": f"truth/{rel}/tissue_labels.nii.gz",
            "t1": f"dicom/{rel}/T1",
            "t2": f"dicom/{rel}/T2",
            "pet": f"dicom/{rel}/PET",
        },
    }
    return _jsonable(truth)


def write_visit(
    visit: PhantomVisit,
    out_dir: str | os.PathLike,
    *,
    transfer_syntax: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write one visit's DICOM series and truth files under ``out_dir`` (layout above).

    Returns
    -------
    Path
        The visit's ``truth.json``.
    """
    from islet_imaging.io.dicom_write import write_series
    from islet_imaging.io.files import write_volume

    out_dir = Path(out_dir)
    volumes = {"t1": visit.mr_t1, "t2": visit.mr_t2, "pet": visit.pet}
    files = visit.truth["files"]
    for key, volume in volumes.items():
        write_series(
            volume,
            out_dir / files[key],
            overwrite=overwrite,
            transfer_syntax=transfer_syntax,
            **visit.series_options[key],
        )
    write_volume(
        visit.graft_mask.with_array(visit.graft_mask.array.astype(np.uint8)),
        out_dir / files["graft_mask"],
        overwrite=overwrite,
    )
    write_volume(visit.deposit_labels, out_dir / files["deposit_labels"], overwrite=overwrite)
    write_volume(visit.tissue_labels, out_dir / files["tissue_labels"], overwrite=overwrite)
    truth_path = out_dir / Path(files["graft_mask"]).parent / "truth.json"
    write_text_atomic(truth_path, json.dumps(visit.truth, indent=1) + "\n", overwrite=overwrite)
    return truth_path


def generate_study(
    out_dir: str | os.PathLike,
    *,
    patients: int = 2,
    visits: int = 3,
    seed: int = 0,
    transfer_syntax: str | None = None,
    overwrite: bool = False,
    progress: Any = None,
    **options: Any,
) -> Path:
    """Generate a cohort (``patients`` × ``visits``) as DICOM + truth under ``out_dir``.

    Parameters
    ----------
    out_dir
        Destination folder (created; existing files are refused unless ``overwrite``).
    patients, visits
        Cohort size (patients ``ISLET-001``..., visits ``V0`` = baseline, ``V1``...).
    seed
        Master seed; the output is bit-for-bit reproducible from it.
    transfer_syntax
        None (Explicit VR Little Endian) or ``"rle"`` (RLE Lossless, smaller files).
    overwrite
        Replace existing files.
    progress
        Optional ``callable(message: str)`` called after each visit.
    **options
        Passed to :func:`make_visit` (``size``, ``orientation``, ``iron_labelled``,
        ``psf_fwhm_mm``, ...).

    Returns
    -------
    Path
        ``out_dir``; ``out_dir/phantom.json`` indexes patients and visits.
    """
    if patients < 1 or visits < 1:
        raise IsletImagingError(
            "need at least one patient and one visit",
            tag="patients/visits",
            value=(patients, visits),
        )
    out_dir = Path(out_dir)
    index = []
    resolved: dict[str, Any] = {}
    for p in range(1, patients + 1):
        for v in range(visits):
            start = time.perf_counter()
            visit = make_visit(seed=seed, patient=p, visit=v, **options)
            truth_path = write_visit(
                visit, out_dir, transfer_syntax=transfer_syntax, overwrite=overwrite
            )
            resolved = {
                "size": visit.truth["generator"]["size"],
                **visit.truth["generator"]["options"],
            }
            index.append(
                {
                    "patient_id": visit.patient_id,
                    "visit": v,
                    "label": visit.truth["visit"]["label"],
                    "month": visit.truth["visit"]["month"],
                    "study_uid": visit.truth["study_uid"],
                    "truth": truth_path.relative_to(out_dir).as_posix(),
                }
            )
            if progress is not None:
                progress(
                    f"{visit.patient_id} V{v}: {visit.truth['graft']['n_deposits']} deposits, "
                    f"{time.perf_counter() - start:.1f} s"
                )
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "generator": {"name": "islet-imaging phantom", "version": _version()},
        "seed": seed,
        "patients": patients,
        "visits": visits,
        "transfer_syntax": transfer_syntax,
        "options": resolved,
        "visits_index": index,
    }
    write_text_atomic(
        out_dir / "phantom.json", json.dumps(manifest, indent=1) + "\n", overwrite=overwrite
    )
    return out_dir
