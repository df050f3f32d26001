"""write_series: valid classic DICOM series whose geometry and values round-trip exactly."""

from __future__ import annotations

import hashlib
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from hypothesis import given, settings
from hypothesis import strategies as st

from islet_imaging.errors import IsletImagingError
from islet_imaging.io.dicom import load_series
from islet_imaging.io.dicom_write import deterministic_uid, series_datasets, write_series
from islet_imaging.volume import Volume

DCIODVFY = Path(sys.executable).with_name("dciodvfy")


def _frame(angles_deg: tuple[float, float, float]) -> np.ndarray:
    """Volume direction (normal, column, row) from a rotation of the axial frame."""
    ax, ay, az = (math.radians(a) for a in angles_deg)
    rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    rz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
    rot = rz @ ry @ rx
    row, col = rot[:, 0], rot[:, 1]
    return np.stack([np.cross(row, col), col, row], axis=1)


SAGITTAL = np.stack([[-1.0, 0, 0], [0, 0, -1.0], [0, 1.0, 0]], axis=1)


def _volume(direction=None, shape=(5, 64, 70), scale=1000.0, seed=0) -> Volume:
    rng = np.random.default_rng(seed)
    return Volume(
        (rng.random(shape) * scale).astype(np.float32),
        spacing=(3.0, 0.6, 0.75),
        origin=(-12.5, 30.25, -80.0),
        direction=np.eye(3) if direction is None else direction,
    )


def _sitk_read(folder: Path) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


@pytest.mark.parametrize(
    "direction",
    [_frame((0, 0, 0)), _frame((15, -10, 0)), _frame((25, 12, 33)), SAGITTAL],
    ids=["axial", "oblique", "double-oblique", "sagittal"],
)
def test_mr_geometry_matches_simpleitk_and_pydicom(tmp_path, direction):
    vol = _volume(direction)
    files = write_series(vol, tmp_path, modality="MR", uid_seed="geom")
    assert len(files) == vol.shape[0]

    image = _sitk_read(tmp_path)
    assert image.GetSize() == tuple(reversed(vol.shape))
    np.testing.assert_allclose(image.GetSpacing(), tuple(reversed(vol.spacing)), atol=1e-6)
    np.testing.assert_allclose(image.GetOrigin(), vol.origin, atol=1e-5)
    # SimpleITK direction columns are (i, j, k) = Volume columns reversed
    sitk_dir = np.asarray(image.GetDirection()).reshape(3, 3)
    np.testing.assert_allclose(sitk_dir[:, ::-1], vol.direction, atol=1e-6)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), np.rint(vol.array))

    loaded = load_series(tmp_path)  # the project's loader agrees too
    assert loaded.same_grid(vol, atol=1e-5)
    np.testing.assert_array_equal(loaded.array, np.rint(vol.array))

    for k, path in enumerate(files):
        ds = pydicom.dcmread(path)
        row, col = (
            np.asarray(ds.ImageOrientationPatient[:3]),
            np.asarray(ds.ImageOrientationPatient[3:]),
        )
        np.testing.assert_allclose(row, vol.direction[:, 2], atol=1e-6)
        np.testing.assert_allclose(col, vol.direction[:, 1], atol=1e-6)
        expected = np.asarray(vol.origin) + k * 3.0 * vol.direction[:, 0]
        np.testing.assert_allclose(np.asarray(ds.ImagePositionPatient, float), expected, atol=1e-5)
        assert [float(x) for x in ds.PixelSpacing] == [0.6, 0.75]  # (row, column) spacing
        assert float(ds.SliceThickness) == 3.0 == float(ds.SpacingBetweenSlices)
        assert ds.InstanceNumber == k + 1
        assert ds.pixel_array.dtype == np.int16
        np.testing.assert_array_equal(ds.pixel_array, np.rint(vol.array[k]))


def test_pet_per_slice_rescale_slope_from_slice_max(tmp_path):
    vol = _volume(shape=(4, 64, 64), scale=1.0)
    arr = np.asarray(vol.array, dtype=np.float64) * np.array([100.0, 5e3, 2e4, 7.5])[:, None, None]
    vol = vol.with_array(arr.astype(np.float32))
    files = write_series(vol, tmp_path, modality="PET", uid_seed="pet")
    slopes = []
    for k, path in enumerate(files):
        ds = pydicom.dcmread(path)
        assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.128"  # PET Image Storage
        assert ds.Modality == "PT"
        assert ds.Units == "BQML"
        assert float(ds.RescaleIntercept) == 0
        slope = float(ds.RescaleSlope)
        slice_max = float(vol.array[k].max())
        # the stored maximum uses (nearly) the full int16 range
        assert slice_max / 32767 <= slope <= slice_max / 32767 * (1 + 1e-6)
        assert ds.pixel_array.max() in (32766, 32767)
        values = ds.pixel_array * slope
        assert np.abs(values - vol.array[k]).max() <= slope / 2 * (1 + 1e-6)
        assert ds.ImageIndex == k + 1
        assert ds.NumberOfSlices == 4
        slopes.append(slope)
    assert len(set(slopes)) == 4


def test_pet_uint16_and_negative_values(tmp_path):
    vol = _volume(shape=(2, 64, 64), scale=3000.0)
    files = write_series(vol, tmp_path / "u16", modality="PT", pixel_dtype="uint16")
    ds = pydicom.dcmread(files[0])
    assert ds.PixelRepresentation == 0
    assert ds.pixel_array.max() in (65534, 65535)
    negative = vol.with_array(vol.array - 10.0)
    with pytest.raises(IsletImagingError, match="uint16"):
        write_series(negative, tmp_path / "neg", modality="PT", pixel_dtype="uint16")


def test_mr_out_of_range_names_the_fix(tmp_path):
    vol = _volume(scale=1e6)
    with pytest.raises(IsletImagingError, match="rescale='per_slice'"):
        write_series(vol, tmp_path, modality="MR")
    files = write_series(vol, tmp_path, modality="MR", rescale="per_slice")
    ds = pydicom.dcmread(files[0])
    np.testing.assert_allclose(
        ds.pixel_array * float(ds.RescaleSlope), vol.array[0], atol=float(ds.RescaleSlope)
    )


def test_rle_lossless_gives_the_same_pixels(tmp_path):
    vol = _volume(_frame((15, -10, 0)))
    plain = write_series(vol, tmp_path / "plain", modality="MR", uid_seed=1)
    rle = write_series(vol, tmp_path / "rle", modality="MR", uid_seed=1, transfer_syntax="rle")
    for a, b in zip(plain, rle, strict=True):
        da, db = pydicom.dcmread(a), pydicom.dcmread(b)
        assert db.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.5"
        np.testing.assert_array_equal(da.pixel_array, db.pixel_array)
    np.testing.assert_array_equal(
        sitk.GetArrayFromImage(_sitk_read(tmp_path / "rle")), np.rint(vol.array)
    )


def test_bytes_are_deterministic_and_uids_follow_the_seed(tmp_path):
    vol = _volume()

    def digest(folder, seed, transfer_syntax=None):
        files = write_series(
            vol, folder, modality="PT", uid_seed=seed, transfer_syntax=transfer_syntax
        )
        return [hashlib.sha256(f.read_bytes()).hexdigest() for f in files]

    first = digest(tmp_path / "a", 7)
    assert first == digest(tmp_path / "b", 7)
    assert set(digest(tmp_path / "c", 8)).isdisjoint(first)
    assert digest(tmp_path / "rle1", 7, "rle") == digest(tmp_path / "rle2", 7, "rle")
    rle_uids = [pydicom.dcmread(f).SOPInstanceUID for f in sorted((tmp_path / "rle1").iterdir())]
    plain_uids = [pydicom.dcmread(f).SOPInstanceUID for f in sorted((tmp_path / "a").iterdir())]
    assert rle_uids == plain_uids
    ds = pydicom.dcmread(tmp_path / "a" / "IM0001.dcm")
    assert ds.StudyInstanceUID == deterministic_uid(7, "ISLET-000", "study")
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert len({pydicom.dcmread(f).SOPInstanceUID for f in (tmp_path / "a").iterdir()}) == 5


def test_tags_sequences_deletion_and_per_slice_values(tmp_path):
    vol = _volume(shape=(3, 64, 64))
    files = write_series(
        vol,
        tmp_path,
        modality="PT",
        patient_id="ISLET-042",
        series_description="test",
        frame_of_reference_uid="1.2.3.4",
        tags={
            "PatientWeight": "71.5",
            "DecayCorrection": "ADMIN",
            "CorrectedImage": None,
            "RadiopharmaceuticalInformationSequence": [
                {"RadionuclideHalfLife": "4062.6", "RadionuclideTotalDose": "1.1e8"}
            ],
        },
        per_slice_tags={
            "AcquisitionTime": lambda k: f"1200{k:02d}",
            "InstanceNumber": [30, 20, 10],
        },
    )
    headers = [pydicom.dcmread(f) for f in files]
    assert all(h.PatientID == "ISLET-042" and h.FrameOfReferenceUID == "1.2.3.4" for h in headers)
    assert all(float(h.PatientWeight) == 71.5 and h.DecayCorrection == "ADMIN" for h in headers)
    assert all("CorrectedImage" not in h for h in headers)
    item = headers[0].RadiopharmaceuticalInformationSequence[0]
    assert float(item.RadionuclideHalfLife) == 4062.6
    assert [h.AcquisitionTime for h in headers] == ["120000", "120001", "120002"]
    assert [h.InstanceNumber for h in headers] == [30, 20, 10]
    # files are named after the slice position unless asked otherwise
    assert [f.name for f in files] == ["IM0001.dcm", "IM0002.dcm", "IM0003.dcm"]
    named = write_series(vol, tmp_path / "named", modality="MR", filename="{instance}.dcm",
                         per_slice_tags={"InstanceNumber": [30, 20, 10]})  # fmt: skip
    assert [f.name for f in named] == ["30.dcm", "20.dcm", "10.dcm"]
    # duplicate InstanceNumbers (a broken series for loader tests) can be written
    duplicates = write_series(vol, tmp_path / "dup", modality="MR", tags={"InstanceNumber": 1})
    assert {pydicom.dcmread(f).InstanceNumber for f in duplicates} == {1}


def test_bad_arguments_raise_clear_errors(tmp_path):
    vol = _volume(shape=(2, 64, 64))
    with pytest.raises(IsletImagingError, match="PatientWeigth"):
        write_series(vol, tmp_path / "a", modality="MR", tags={"PatientWeigth": "70"})
    with pytest.raises(IsletImagingError, match=r"per-slice"):
        write_series(vol, tmp_path / "b", modality="MR", per_slice_tags={"EchoTime": [1, 2, 3]})
    with pytest.raises(ValueError, match="CT"):
        write_series(vol, tmp_path / "c", modality="CT")
    with pytest.raises(IsletImagingError, match="transfer syntax"):
        write_series(vol, tmp_path / "d", modality="MR", transfer_syntax="1.2.840.10008.1.2.4.50")
    write_series(vol, tmp_path / "e", modality="MR")
    with pytest.raises(IsletImagingError, match="overwrite"):
        write_series(vol, tmp_path / "e", modality="MR")
    write_series(vol, tmp_path / "e", modality="MR", overwrite=True)


def test_headers_only_datasets_match_written_files(tmp_path):
    vol = _volume(shape=(3, 64, 64))
    headers = series_datasets(vol, modality="PT", uid_seed=3, pixel_data=False)
    files = write_series(vol, tmp_path, modality="PT", uid_seed=3)
    for header, path in zip(headers, files, strict=True):
        ds = pydicom.dcmread(path)
        assert "PixelData" not in header
        assert header.SOPInstanceUID == ds.SOPInstanceUID
        assert header.RescaleSlope == ds.RescaleSlope
        assert header.ImagePositionPatient == ds.ImagePositionPatient


@pytest.mark.parametrize("modality", ["MR", "PT"])
def test_dciodvfy_finds_no_error(tmp_path, modality):
    vol = _volume(_frame((15, -10, 0)), shape=(2, 64, 64))
    files = write_series(vol, tmp_path, modality=modality, tags={"Laterality": "R"})
    result = subprocess.run([str(DCIODVFY), str(files[0])], capture_output=True, text=True)
    report = result.stdout + result.stderr
    assert ("MRImage" if modality == "MR" else "PETImage") in report
    assert "Error" not in report, report


@settings(max_examples=12, deadline=None, database=None)
@given(
    angles=st.tuples(*[st.floats(-180, 180)] * 3),
    spacing=st.tuples(st.floats(0.3, 5.0), st.floats(0.2, 2.0), st.floats(0.2, 2.0)),
    origin=st.tuples(*[st.floats(-500, 500)] * 3),
)
def test_geometry_round_trip_property(tmp_path_factory, angles, spacing, origin):
    """Any orthonormal direction, spacing and origin survive write -> SimpleITK read."""
    vol = Volume(
        np.arange(3 * 64 * 64, dtype=np.float32).reshape(3, 64, 64) % 1000,
        spacing=spacing,
        origin=origin,
        direction=_frame(angles),
    )
    folder = tmp_path_factory.mktemp("prop")
    write_series(vol, folder, modality="MR")
    image = _sitk_read(folder)
    np.testing.assert_allclose(image.GetOrigin(), vol.origin, atol=2e-5)
    np.testing.assert_allclose(image.GetSpacing(), tuple(reversed(vol.spacing)), atol=2e-6)
    direction = np.asarray(image.GetDirection()).reshape(3, 3)[:, ::-1]
    np.testing.assert_allclose(direction, vol.direction, atol=2e-6)
