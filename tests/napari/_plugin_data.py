"""Test data of the napari plugin tests: small DICOM visits written with known geometry."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

from islet_imaging.io.dicom_write import write_series
from islet_imaging.volume import Volume

AXIAL = np.array([[0.0, 0, 1], [0, 1, 0], [1, 0, 0]])  # columns: slice normal, column, row dir
CORONAL = np.array([[0.0, 0, 1], [-1, 0, 0], [0, 1, 0]])
OBLIQUE = Rotation.from_euler("xyz", [18, -12, 22], degrees=True).as_matrix() @ AXIAL

# SUV tags written on the PET, and the body-weight SUV factor computed by hand (QIBA)
WEIGHT_KG = 72.0
DOSE_BQ = 150e6
HALF_LIFE_S = 4062.6  # 68Ga
UPTAKE_S = 3600.0  # injection 10:00:00, series 11:00:00
SUV_PER_BQML = WEIGHT_KG * 1000.0 / (DOSE_BQ * 2.0 ** (-UPTAKE_S / HALF_LIFE_S))


@dataclasses.dataclass(frozen=True)
class DicomVisit:
    """A folder with an MR and a PET series and the LPS position (mm) of a hot spot in both."""

    folder: Path
    spot_lps: np.ndarray
    mr: Volume
    pet: Volume
    pet_spot_bqml: float


def write_visit(folder: Path, *, mr_direction: np.ndarray = OBLIQUE) -> DicomVisit:
    """MR (anisotropic, ``mr_direction``) and PET (coronal, own grid) sharing a hot spot."""
    mr = Volume(
        np.full((10, 36, 40), 200.0, np.float32), spacing=(4.0, 0.7, 0.55),
        origin=(-11.0, -13.0, 40.0), direction=mr_direction,
    )  # fmt: skip
    spot_index_mr = (6, 20, 17)
    spot = mr.index_to_world(spot_index_mr)
    mr_array = np.array(mr.array)
    mr_array[spot_index_mr] = 1500.0
    mr = mr.with_array(mr_array)

    pet_spacing = np.array([3.0, 2.5, 2.0])
    spot_index_pet = np.array([5, 4, 6])
    pet_origin = spot - CORONAL @ (pet_spacing * spot_index_pet)
    pet_array = np.full((10, 12, 14), 800.0, np.float32)
    pet_array[tuple(spot_index_pet)] = 24000.0
    pet = Volume(pet_array, spacing=tuple(pet_spacing), origin=pet_origin, direction=CORONAL)

    common = {
        "study_uid": "1.2.826.0.1.3680043.8.498.1",
        "frame_of_reference_uid": "1.2.826.0.1.3680043.8.498.2",
        "patient_id": "ANON01",
        "study_date": "20260102",
        "series_date": "20260102",
        "series_time": "110000",
    }
    write_series(
        mr, folder / "mr", modality="MR", series_number=3, series_description="T2 TSE",
        uid_seed=1, **common,
    )  # fmt: skip
    radiopharmaceutical = {
        "Radiopharmaceutical": "68Ga-NODAGA-exendin-4",
        "RadionuclideTotalDose": DOSE_BQ,
        "RadionuclideHalfLife": HALF_LIFE_S,
        "RadiopharmaceuticalStartDateTime": "20260102100000",
        "RadiopharmaceuticalStartTime": "100000",
    }
    write_series(
        pet, folder / "pet", modality="PT", series_number=4, series_description="exendin PET",
        uid_seed=2, tags={"PatientWeight": WEIGHT_KG,
                          "RadiopharmaceuticalInformationSequence": [radiopharmaceutical]},
        **common,
    )  # fmt: skip
    return DicomVisit(folder, spot, mr, pet, 24000.0)


def expected_suv(bq_per_ml: float) -> float:
    """SUVbw computed by hand from the tags written by :func:`write_visit`."""
    return bq_per_ml * SUV_PER_BQML
