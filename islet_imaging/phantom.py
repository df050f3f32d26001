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
The MR field of view (112 × 96 mm across the arm, 84 / 90 / 120 mm along it) and the PET
field of view (2 × FWHM larger) are centred on the arm at the level of the graft and grow when
needed, so the whole graft is always imaged.

Folder layout written by :func:`generate_study`
-----------------------------------------------
::

    OUT/
      phantom.json                          generator, version, seed, options, patients, visits
      implantation.csv                      patient_id,implantation_date (for study import)
      dicom/<PatientID>/V<k>/T1/IM0001.dcm  MR T1 series (one file per slice)
      dicom/<PatientID>/V<k>/T2/IM0001.dcm  MR T2 series (same grid as T1)
      dicom/<PatientID>/V<k>/PET/IM0001.dcm PET series (own grid, same frame of reference)
      truth/<PatientID>/V<k>/truth.json
      truth/<PatientID>/V<k>/graft_mask.nii.gz      uint8 0/1 on the MR grid
      truth/<PatientID>/V<k>/deposit_labels.nii.gz  int16 deposit label (1..n) on the MR grid
      truth/<PatientID>/V<k>/tissue_labels.nii.gz   uint8 tissue codes (see Tissue) on the MR grid
      truth/<PatientID>/V<k>/pet_deposit_labels.nii.gz  int16 deposit labels on the PET grid

Patient IDs are pseudonymous (``ISLET-001``...), names synthetic (``PHANTOM^P001``), no birth
date. ``k`` is the visit index (0 = baseline); each visit is one DICOM study. ``truth.json`` is
written last, so a visit folder holding it is complete.

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
    graft             {n_deposits, n_tracks, volume_ml_analytic, volume_ml_voxelised,
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
    files             {graft_mask, deposit_labels, tissue_labels, pet_deposit_labels, t1, t2,
                       pet} (paths relative to OUT)

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
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from islet_imaging._atomic import write_text_atomic
from islet_imaging._phantom_dicom import generator_version, image_volume, series_options
from islet_imaging._phantom_model import T1_SIGNAL, T2_SIGNAL, Tissue
from islet_imaging._phantom_render import bias_field, label_maps, render_mr, render_pet, rician
from islet_imaging._phantom_truth import SCHEMA_VERSION, build_truth
from islet_imaging._phantom_visit import (
    GA68_HALF_LIFE_S,
    Options,
    Orientation,
    Size,
    Trend,
    VisitPlan,
    plan_visit,
)
from islet_imaging.errors import IsletImagingError
from islet_imaging.io.dicom_write import Rescale, quantise
from islet_imaging.volume import Volume

__all__ = [
    "GA68_HALF_LIFE_S",
    "Orientation",
    "PhantomVisit",
    "Size",
    "Tissue",
    "Trend",
    "generate_study",
    "make_visit",
    "write_visit",
]


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
        uint8 :class:`Tissue` codes, MR grid.
    pet_deposit_labels : Volume
        int16 deposit labels on the PET grid (voxel centres).
    truth : dict
        JSON-ready ground truth (schema in the module docstring).
    transform_to_baseline : ndarray, shape (4, 4)
        Maps LPS points of this visit to the same anatomy at baseline.
    series_options : dict
        ``{"t1" | "t2" | "pet": keyword arguments of write_series}`` used by
        :func:`write_visit` (UIDs, dates, tags).
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
        PET noise SD relative to the value at the muscle level (SD ∝ sqrt(activity),
        correlated over about one voxel); 0 gives the noise-free PSF-blurred activity.
    mr_snr
        Muscle signal / noise SD on T1 (T2 uses 5/6 of it); ``math.inf`` gives noise-free
        MR (still with the bias field).
    max_rotation_deg, max_shift_mm
        Largest rigid repositioning of the arm relative to baseline (mm, degrees).

    Returns
    -------
    PhantomVisit
        Volumes, masks and truth (see the module docstring for the truth schema).
    """
    options = Options(
        size=Size(size),
        orientation=Orientation(orientation),
        iron_labelled=bool(iron_labelled),
        psf_fwhm_mm=float(psf_fwhm_mm),
        pet_noise_cv=float(pet_noise_cv),
        mr_snr=float(mr_snr),
        max_rotation_deg=float(max_rotation_deg),
        max_shift_mm=float(max_shift_mm),
    )
    if patient < 1 or visit < 0:
        raise IsletImagingError(
            "patient is 1-based and visit 0-based", tag="patient/visit", value=(patient, visit)
        )
    for name in ("psf_fwhm_mm", "mr_snr"):
        if getattr(options, name) <= 0:
            raise IsletImagingError("must be positive", tag=name, value=getattr(options, name))
    plan = plan_visit(seed, patient, visit, options)
    pat, grid = plan.patient, plan.mr_grid

    tissue_codes, labels = label_maps(grid, plan.pose, pat.anatomy, plan.states)
    _, pet_labels = label_maps(plan.pet_grid, plan.pose, pat.anatomy, plan.states)
    t1, t2, bias, sigmas = _mr_images(plan)
    series = series_options(plan)
    images = {
        "t1": image_volume(t1, plan, "t1", series["t1"]),
        "t2": image_volume(t2, plan, "t2", series["t2"]),
        "pet": image_volume(_pet_image(plan), plan, "pet", series["pet"]),
    }

    def mask(array, on, name):
        return Volume(array, on.spacing, on.origin, on.direction, {"kind": "mask", "name": name})

    truth = build_truth(
        plan,
        labels=labels,
        tissue_codes=tissue_codes,
        images=images,
        series=series,
        bias=bias,
        noise_sigmas=sigmas,
    )
    return PhantomVisit(
        patient_id=pat.patient_id,
        visit=visit,
        mr_t1=images["t1"],
        mr_t2=images["t2"],
        pet=images["pet"],
        graft_mask=mask(labels > 0, grid, "graft"),
        deposit_labels=mask(labels, grid, "deposits"),
        tissue_labels=mask(tissue_codes, grid, "tissues"),
        pet_deposit_labels=mask(pet_labels, plan.pet_grid, "deposits"),
        truth=truth,
        transform_to_baseline=plan.to_baseline,
        series_options=series,
    )


def _mr_images(plan: VisitPlan):
    """T1 and T2 (float32 holding int16 values), the bias field and the noise SDs."""
    pat, grid, rng = plan.patient, plan.mr_grid, plan.rng
    t1_clean, t2_clean = render_mr(
        grid,
        plan.pose,
        pat.anatomy,
        plan.states,
        iron=plan.options.iron_labelled,
        supersample=plan.preset.mr_supersample,
    )
    bias = bias_field(grid, plan.fov_centre, rng.normal(0, 0.08, 6))
    sigma_t1 = T1_SIGNAL[Tissue.BRACHIORADIALIS] / plan.options.mr_snr
    sigma_t2 = T2_SIGNAL[Tissue.BRACHIORADIALIS] / (plan.options.mr_snr * 5 / 6)
    t1 = np.clip(np.rint(rician(t1_clean * bias, sigma_t1, rng)), 0, 32767).astype(np.float32)
    t2 = np.clip(np.rint(rician(t2_clean * bias, sigma_t2, rng)), 0, 32767).astype(np.float32)
    return t1, t2, bias, (sigma_t1, sigma_t2)


def _correlated_noise(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Unit-SD Gaussian noise with the short-range correlation of reconstructed PET."""
    noise = ndimage.gaussian_filter(rng.standard_normal(shape), 0.7, mode="wrap")
    return noise / noise.std()


def _pet_image(plan: VisitPlan) -> np.ndarray:
    """Bq/mL after PSF and noise, quantised exactly as the DICOM stores it (float32)."""
    clean = render_pet(
        plan.pet_grid,
        plan.pose,
        plan.patient.anatomy,
        plan.states,
        muscle_bqml=plan.muscle_bqml,
        graft_bqml=plan.graft_bqml,
        fwhm_mm=plan.options.psf_fwhm_mm,
        oversample=plan.preset.pet_oversample,
    )
    noise_sd = plan.options.pet_noise_cv * np.sqrt(plan.muscle_bqml * np.clip(clean, 0, None))
    noisy = np.clip(clean + noise_sd * _correlated_noise(plan.rng, clean.shape), 0, None)
    stored, slopes = quantise(noisy, Rescale.PER_SLICE, np.dtype(np.int16))
    return (stored.astype(np.float64) * np.asarray(slopes)[:, None, None]).astype(np.float32)


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
    write_volume(
        visit.pet_deposit_labels, out_dir / files["pet_deposit_labels"], overwrite=overwrite
    )
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
    implantation: dict[str, dt.date] = {}
    resolved: dict[str, Any] = {}
    for p in range(1, patients + 1):
        for v in range(visits):
            start = time.perf_counter()
            visit = make_visit(seed=seed, patient=p, visit=v, **options)
            truth_path = write_visit(
                visit, out_dir, transfer_syntax=transfer_syntax, overwrite=overwrite
            )
            implantation[visit.patient_id] = dt.date.fromisoformat(
                visit.truth["visit"]["date"]
            ) - dt.timedelta(days=visit.truth["visit"]["days_after_implantation"])
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
        "generator": {"name": "islet-imaging phantom", "version": generator_version()},
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
    write_text_atomic(
        out_dir / "implantation.csv", _implantation_csv(implantation), overwrite=overwrite
    )
    return out_dir


def _implantation_csv(dates: dict[str, dt.date]) -> str:
    """``patient_id,implantation_date`` lines, the input of ``study import --implantation-csv``."""
    rows = [f"{patient},{date.isoformat()}" for patient, date in sorted(dates.items())]
    return "\n".join(["patient_id,implantation_date", *rows]) + "\n"
