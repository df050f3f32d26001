"""DICOM identity and tags of the phantom series (private; see :mod:`islet_imaging.phantom`).

:func:`series_options` returns, per series, the keyword arguments of
:func:`islet_imaging.io.dicom_write.write_series`; :func:`image_volume` wraps an array in a
Volume whose ``meta`` matches what the loader fills for the written files.
"""

from __future__ import annotations

import datetime as dt
import math

import numpy as np

from islet_imaging._phantom_visit import (
    FRAME_DURATION_S,
    GA68_HALF_LIFE_S,
    RADIOPHARMACEUTICAL,
    Orientation,
    VisitPlan,
)
from islet_imaging.io.dicom_write import deterministic_uid, series_datasets
from islet_imaging.volume import Volume

SERIES_FOLDERS = {"t1": "T1", "t2": "T2", "pet": "PET"}
_SUFFIX = {Orientation.AXIAL: "ax", Orientation.OBLIQUE: "obl", Orientation.SAGITTAL: "sag"}


def generator_version() -> str:
    from islet_imaging import __version__

    return __version__


def frame_decay() -> tuple[float, float]:
    """(DecayFactor, FrameReferenceTime in s) of a static frame decay-corrected to its start.

    DecayFactor = λT / (1 − e^(−λT)) corrects the decay during the frame of length T; the
    reference time is when the activity equals the frame average: ln(DecayFactor) / λ.
    """
    lam = math.log(2.0) / GA68_HALF_LIFE_S
    factor = lam * FRAME_DURATION_S / (1.0 - math.exp(-lam * FRAME_DURATION_S))
    return factor, math.log(factor) / lam


def series_options(plan: VisitPlan) -> dict[str, dict]:
    """``{"t1" | "t2" | "pet": write_series keyword arguments}`` of a visit."""
    pat, seed = plan.patient, plan.seed
    uid_seed = f"islet-phantom/{seed}/{pat.index}/{plan.visit}"
    date = plan.visit_date.strftime("%Y%m%d")
    common = {
        "patient_id": pat.patient_id,
        "patient_name": pat.name,
        "uid_seed": uid_seed,
        "study_uid": deterministic_uid(uid_seed, "study"),
        "frame_of_reference_uid": deterministic_uid(uid_seed, "frame-of-reference"),
        "study_date": date,
        "study_time": plan.mr_start.strftime("%H%M%S"),
    }
    patient_tags = {
        "PatientSex": pat.sex,
        "PatientAge": f"{pat.age:03d}Y",
        "PatientWeight": f"{plan.weight_kg:.1f}",
        "PatientSize": f"{pat.height_m:.2f}",
        "Laterality": "R",
        "StudyDescription": "Forearm islet graft MR + 68Ga-exendin PET (phantom)",
        "StudyID": plan.label,
        "AccessionNumber": f"PH{seed % 10000:04d}{pat.index:03d}{plan.visit:02d}",
        "InstitutionName": "islet-imaging phantom",
        "StationName": "PHANTOM",
        "DeviceSerialNumber": "0",
        "SoftwareVersions": generator_version(),
    }
    suffix = _SUFFIX[plan.options.orientation]
    options = {}
    for key, number, tr, te, etl, offset_s in (
        ("t1", 3, "600", "12", "3", 0),
        ("t2", 4, "4000", "90", "15", 420),
    ):
        start = plan.mr_start + dt.timedelta(seconds=offset_s)
        options[key] = {
            **common,
            "modality": "MR",
            "series_number": number,
            "series_description": f"{key.upper()} TSE {suffix}",
            "series_time": start.strftime("%H%M%S"),
            "tags": {
                **patient_tags,
                "ScanningSequence": "SE",
                "SequenceVariant": "SK",
                "RepetitionTime": tr,
                "EchoTime": te,
                "EchoTrainLength": etl,
                "EchoNumbers": "1",
                "AcquisitionDate": date,
                "AcquisitionTime": start.strftime("%H%M%S"),
            },
        }
    decay_factor, reference_s = frame_decay()
    injection = plan.injection
    options["pet"] = {
        **common,
        "modality": "PT",
        "series_number": 5,
        "series_description": "PET 68Ga-exendin AC",
        "series_date": plan.pet_start.strftime("%Y%m%d"),
        "series_time": plan.pet_start.strftime("%H%M%S"),
        "tags": {
            **patient_tags,
            "Units": "BQML",
            "DecayCorrection": "START",
            "CorrectedImage": ["ATTN", "DECY", "SCAT", "DTIM"],
            "AcquisitionDate": plan.pet_start.strftime("%Y%m%d"),
            "AcquisitionTime": plan.pet_start.strftime("%H%M%S"),
            "ActualFrameDuration": int(FRAME_DURATION_S * 1000),
            "DecayFactor": f"{decay_factor:.6f}",
            "FrameReferenceTime": f"{reference_s * 1000:.1f}",
            "ConvolutionKernel": f"GAUSS {plan.options.psf_fwhm_mm:g}MM"[:16],
            "RadiopharmaceuticalInformationSequence": [
                {
                    "Radiopharmaceutical": RADIOPHARMACEUTICAL,
                    "RadiopharmaceuticalRoute": "Intravenous route",
                    "RadiopharmaceuticalStartTime": injection.strftime("%H%M%S"),
                    "RadiopharmaceuticalStartDateTime": injection.strftime("%Y%m%d%H%M%S"),
                    "RadionuclideTotalDose": f"{plan.dose_bq:.0f}",
                    "RadionuclideHalfLife": f"{GA68_HALF_LIFE_S}",
                    "RadionuclidePositronFraction": "0.889",
                    "RadionuclideCodeSequence": [
                        {
                            "CodeValue": "35337001",
                            "CodingSchemeDesignator": "SCT",
                            "CodeMeaning": "^68^Gallium",
                        }
                    ],
                }
            ],
        },
    }
    return options


def image_volume(array: np.ndarray, plan: VisitPlan, key: str, options: dict) -> Volume:
    """The Volume of series ``key`` with the loader's ``meta`` (headers without pixels)."""
    grid = plan.pet_grid if key == "pet" else plan.mr_grid
    geometry = Volume(array, grid.spacing, grid.origin, grid.direction)
    headers = series_datasets(geometry, **options, pixel_data=False)
    meta = {
        "modality": options["modality"],
        "series_uid": str(headers[0].SeriesInstanceUID),
        "study_uid": options["study_uid"],
        "patient_id": options["patient_id"],
        "frame_of_reference_uid": options["frame_of_reference_uid"],
        "series_description": options["series_description"],
        "series_number": options["series_number"],
        "study_date": options["study_date"],
        "series_date": options.get("series_date", options["study_date"]),
        "series_time": options["series_time"],
        "units": "BQML" if key == "pet" else None,
        "echo_number": None if key == "pet" else 1,
        "image_type": tuple(headers[0].ImageType),
        "source_files": (),
        "headers": tuple(headers),
        "frame_numbers": None,
        "rescale": tuple(
            (float(h.get("RescaleSlope", 1.0)), float(h.get("RescaleIntercept", 0.0)))
            for h in headers
        ),
    }
    return geometry.with_meta(**meta)
