"""Small DICOM series written with pydicom for the exchange tests (independent of the phantom).

The geometry is oblique on purpose so that any axis-order or direction mistake in SEG / SR /
RTSTRUCT code shows up. Everything is deterministic (fixed UIDs derived from a seed).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

MR_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
PET_STORAGE = "1.2.840.10008.5.1.4.1.1.128"


def oblique_direction(angle_deg: float = 20.0) -> np.ndarray:
    """Orthonormal direction (columns = LPS of array axes z, y, x), rotated about two axes."""
    a = np.deg2rad(angle_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    # axial-like stack: array z -> +S, y -> +P, x -> +L, then rotated
    base = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    return rz @ rx @ base


def _uid(seed: str) -> str:
    return generate_uid(entropy_srcs=["islet-imaging-tests", seed])


def write_series(
    out_dir: Path,
    array: np.ndarray,
    *,
    spacing: tuple[float, float, float],
    origin: tuple[float, float, float],
    direction: np.ndarray,
    modality: str = "MR",
    seed: str = "s1",
    patient_id: str = "PAT-001",
    patient_name: str = "Doe^Jane",
    birth_date: str = "19700101",
    study_date: str = "20240115",
    study_uid: str | None = None,
    frame_of_reference_uid: str | None = None,
    series_number: int = 1,
    weight_kg: float = 70.0,
    dose_bq: float = 150e6,
    injection_time: str = "100000",
    series_time: str = "110000",
) -> list[Path]:
    """Write ``array`` (z, y, x) as a classic single-frame MR (int16) or PET (BQML) series."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    direction = np.asarray(direction, float)
    study_uid = study_uid or _uid(f"study-{patient_id}-{study_date}")
    series_uid = _uid(f"series-{seed}")
    for_uid = frame_of_reference_uid or _uid(f"for-{seed}")
    row_cos = direction[:, 2]  # along a row = increasing column index
    col_cos = direction[:, 1]
    paths = []
    for k in range(array.shape[0]):
        meta = FileMetaDataset()
        sop_class = PET_STORAGE if modality == "PT" else MR_STORAGE
        sop_uid = _uid(f"sop-{seed}-{k}")
        meta.MediaStorageSOPClassUID = sop_class
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.SOPClassUID = sop_class
        ds.SOPInstanceUID = sop_uid
        ds.PatientName = patient_name
        ds.PatientID = patient_id
        ds.PatientBirthDate = birth_date
        ds.PatientSex = "F"
        ds.PatientAge = "054Y"
        ds.PatientWeight = weight_kg
        ds.PatientSize = 1.68
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = for_uid
        ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = study_date
        ds.StudyTime = "103000"
        ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = series_time
        ds.AccessionNumber = "ACC" + patient_id[-3:]
        ds.StudyID = "1"
        ds.ReferringPhysicianName = "Smith^John"
        ds.InstitutionName = "University Hospital"
        ds.InstitutionAddress = "2 Avenue Oscar Lambret, Lille"
        ds.StationName = "SCANNER01"
        ds.OperatorsName = "Tech^Anne"
        ds.StudyDescription = "Forearm islet graft"
        ds.SeriesDescription = f"{modality} test {seed}"
        ds.Modality = modality
        ds.Manufacturer = "islet-imaging tests"
        ds.DeviceSerialNumber = "SN-12345"
        ds.SeriesNumber = series_number
        ds.InstanceNumber = k + 1
        ds.PositionReferenceIndicator = ""
        ds.BodyPartExamined = "ARM"
        ds.Laterality = "R"
        ds.PatientPosition = "HFS"
        ds.ImagePositionPatient = [
            round(float(v), 6) for v in np.asarray(origin) + direction[:, 0] * spacing[0] * k
        ]
        ds.ImageOrientationPatient = [round(float(v), 8) for v in (*row_cos, *col_cos)]
        ds.PixelSpacing = [spacing[1], spacing[2]]
        ds.SliceThickness = spacing[0]
        ds.Rows, ds.Columns = array.shape[1:]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        plane = np.asarray(array[k], dtype=float)
        if modality == "PT":
            ds.ImageType = ["ORIGINAL", "PRIMARY"]
            ds.PixelRepresentation = 0
            peak = max(float(plane.max()), 1e-3)
            slope = peak / 32000.0
            stored = np.round(plane / slope).astype(np.uint16)
            ds.RescaleSlope = f"{slope:.10g}"[:16]
            slope = float(ds.RescaleSlope)
            ds.RescaleIntercept = 0
            ds.RescaleType = "BQML"
            ds.Units = "BQML"
            ds.CorrectedImage = ["ATTN", "DECY", "NORM"]
            ds.DecayCorrection = "START"
            ds.SeriesType = ["STATIC", "IMAGE"]
            ds.CountsSource = "EMISSION"
            ds.NumberOfSlices = array.shape[0]
            ds.ImageIndex = k + 1
            ds.FrameReferenceTime = 0
            ds.ActualFrameDuration = 600000
            ds.DecayFactor = 1.0
            item = pydicom.Dataset()
            item.Radiopharmaceutical = "Ga-68 NODAGA-exendin-4"
            item.RadiopharmaceuticalStartTime = injection_time
            item.RadiopharmaceuticalStartDateTime = study_date + injection_time
            item.RadionuclideTotalDose = dose_bq
            item.RadionuclideHalfLife = 4062.6
            item.RadionuclidePositronFraction = 0.889
            ds.RadiopharmaceuticalInformationSequence = [item]
        else:
            ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
            ds.PixelRepresentation = 1
            stored = np.round(plane).astype(np.int16)
            ds.ScanningSequence = "SE"
            ds.SequenceVariant = "NONE"
            ds.ScanOptions = ""
            ds.MRAcquisitionType = "2D"
            ds.EchoTime = 80
            ds.RepetitionTime = 3000
            ds.EchoTrainLength = 1
            ds.MagneticFieldStrength = 3
        ds.PixelData = stored.tobytes()
        # a private block with PHI that de-identification must drop ...
        block = ds.private_block(0x0029, "ISLET TEST PRIVATE", create=True)
        block.add_new(0x10, "LO", f"{patient_name} {birth_date}")
        if modality == "PT":  # ... and the vendor SUV tags it must keep (safe private)
            philips = ds.private_block(0x7053, "Philips PET Private Group", create=True)
            philips.add_new(0x00, "DS", "0.000466667")
            philips.add_new(0x09, "DS", "1.0")
            ge = ds.private_block(0x0009, "GEMS_PETD_01", create=True)
            ge.add_new(0x0D, "DT", study_date + series_time)
        path = out_dir / f"{modality}_{k + 1:03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def ramp_volume(
    shape=(6, 12, 10),
    *,
    spacing=(3.0, 1.5, 1.25),
    angle=20.0,
    modality="MR",
    origin=(-20.0, 15.0, 40.0),
) -> tuple[np.ndarray, dict]:
    """A deterministic image array + geometry keywords for :func:`write_series`."""
    z, y, x = np.indices(shape)
    if modality == "PT":
        arr = 1000.0 + 500.0 * z + 40.0 * y + 7.0 * x
    else:
        arr = 100.0 + 10.0 * z + 3.0 * y + x
    geom = {"spacing": spacing, "origin": origin, "direction": oblique_direction(angle)}
    return arr.astype(np.float32), geom
