"""Test helper: a tiny DICOM cohort (2 patients, 2-3 visits, MR T2 + PET each) for workspace tests.

The images are small and meaningless: these tests check the catalogue, not the measurements
(the end-to-end tests use the phantom). Patient names and birth dates are set so tests can check
they never reach the catalogue or the report.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from islet_imaging.io.dicom_write import write_series
from islet_imaging.volume import Volume

#: (PatientID, PatientName, birth date, visit dates)
PATIENTS = (
    ("HOSP-12345", "DOE^JANE", "19611224", ("20240110", "20240410", "20240710")),
    ("HOSP-67890", "ROE^RICHARD", "19550302", ("20240201", "20240801")),
)


def write_tiny_cohort(root: Path) -> Path:
    """Write the cohort under ``root/dicom`` (one folder per series) and return that folder."""
    rng = np.random.default_rng(0)
    out = root / "dicom"
    for p, (pid, name, birth, dates) in enumerate(PATIENTS):
        for v, date in enumerate(dates):
            study_uid = f"1.2.826.0.1.3680043.8.498.9{p}{v}"
            common = {
                "patient_id": pid,
                "patient_name": name,
                "study_uid": study_uid,
                "study_date": date,
                "series_date": date,
                "tags": {"PatientBirthDate": birth},
                "uid_seed": f"{p}-{v}",
            }
            mr = Volume(rng.normal(300, 20, (4, 8, 8)).astype(np.float32), spacing=(3, 1, 1))
            write_series(
                mr, out / f"p{p}v{v}mr", modality="MR", series_number=2,
                series_description="t2_tse_tra", series_uid=f"{study_uid}.2", **common,
            )  # fmt: skip
            pet = Volume(rng.uniform(100, 900, (3, 4, 4)).astype(np.float32), spacing=(4, 2, 2))
            write_series(
                pet, out / f"p{p}v{v}pet", modality="PT", series_number=3,
                series_description="PET AC", series_uid=f"{study_uid}.3", **common,
            )  # fmt: skip
    return out
