"""RTSTRUCT import: contours with a known area rasterised on an oblique image grid."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from islet_imaging.errors import DicomSeriesError, GeometryError
from islet_imaging.io.dicom import load_series
from islet_imaging.io.rtstruct import RTSTRUCT_SOP_CLASS, read_rtstruct, rtstruct_roi_names


def _rtstruct(path, image, rois: dict[str, list[np.ndarray]]):
    """Write an RT Structure Set whose ROIs are lists of (n, 3) LPS polygons."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = RTSTRUCT_SOP_CLASS
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = RTSTRUCT_SOP_CLASS
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "RTSTRUCT"
    ds.PatientID = image.meta["patient_id"]
    ds.StudyInstanceUID = image.meta["study_uid"]
    ds.SeriesInstanceUID = generate_uid()
    ds.StructureSetLabel = "test"
    structure_set, contours = [], []
    for number, (name, polygons) in enumerate(rois.items(), start=1):
        roi = pydicom.Dataset()
        roi.ROINumber = number
        roi.ReferencedFrameOfReferenceUID = image.meta["frame_of_reference_uid"]
        roi.ROIName = name
        roi.ROIGenerationAlgorithm = "MANUAL"
        structure_set.append(roi)
        items = []
        for polygon in polygons:
            item = pydicom.Dataset()
            item.ContourGeometricType = "CLOSED_PLANAR"
            item.NumberOfContourPoints = len(polygon)
            item.ContourData = [f"{v:.6f}" for v in np.asarray(polygon).ravel()]
            items.append(item)
        roi_contour = pydicom.Dataset()
        roi_contour.ReferencedROINumber = number
        roi_contour.ContourSequence = items
        contours.append(roi_contour)
    ds.StructureSetROISequence = structure_set
    ds.ROIContourSequence = contours
    ds.save_as(path, enforce_file_format=True)
    return path


def _rectangle(image, k, j0, j1, i0, i1):
    """Rectangle in slice k with corners at continuous indices (LPS polygon)."""
    corners = [(k, j0, i0), (k, j0, i1), (k, j1, i1), (k, j1, i0)]
    return image.index_to_world(np.array(corners, float))


def _circle(image, k, centre_ji, radius_mm, n=720):
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    centre = image.index_to_world([k, *centre_ji])
    row_dir, col_dir = image.direction[:, 2], image.direction[:, 1]
    return centre + radius_mm * (np.cos(t)[:, None] * row_dir + np.sin(t)[:, None] * col_dir)


@pytest.fixture(scope="module")
def image(exchange_series):
    return load_series(exchange_series["mr"])


def test_known_areas_and_volume(image, tmp_path):
    pixel_mm2 = image.spacing[1] * image.spacing[2]
    # edges on pixel boundaries: 4 rows x 5 columns of 1.5 x 1.25 mm = 6 mm x 6.25 mm
    block = [_rectangle(image, k, 1.5, 5.5, 2.5, 7.5) for k in (1, 2, 3)]
    ring = [_rectangle(image, 0, 0.5, 9.5, 0.5, 8.5), _rectangle(image, 0, 3.5, 6.5, 2.5, 5.5)]
    circle = [_circle(image, 4, (6.0, 5.0), 5.5)]
    path = _rtstruct(tmp_path / "rs.dcm", image, {"block": block, "ring": ring, "disc": circle})
    assert rtstruct_roi_names(path) == {1: "block", 2: "ring", 3: "disc"}
    masks = read_rtstruct(path, image)

    block_mask = masks["block"]
    assert block_mask.same_grid(image)
    assert block_mask.is_mask
    areas = block_mask.array.sum(axis=(1, 2)) * pixel_mm2
    assert areas.tolist() == pytest.approx([0, 37.5, 37.5, 37.5, 0, 0])
    assert block_mask.array.sum() * block_mask.voxel_volume_ml == pytest.approx(0.3375)
    expected = np.zeros(image.shape, bool)
    expected[1:4, 2:6, 3:8] = True
    np.testing.assert_array_equal(block_mask.array, expected)

    # outer 9 x 8 pixels with a 3 x 3 hole (even-odd rule)
    assert masks["ring"].array.sum() * pixel_mm2 == pytest.approx((9 * 8 - 3 * 3) * pixel_mm2)
    assert not masks["ring"].array[0, 4, 4]
    assert masks["ring"].array[0, 1, 1]

    # disc of radius 5.5 mm: pixel centres within 5.5 mm of the centre, measured in mm
    jj, ii = np.mgrid[: image.shape[1], : image.shape[2]]
    dist = np.hypot((jj - 6.0) * image.spacing[1], (ii - 5.0) * image.spacing[2])
    analytic = dist < 5.5
    disc = masks["disc"].array[4]
    assert abs(int(disc.sum()) - int(analytic.sum())) <= 1
    assert disc.sum() * pixel_mm2 == pytest.approx(np.pi * 5.5**2, rel=0.08)


def test_contour_off_the_slices_or_outside_is_refused(image, tmp_path):
    between = [_rectangle(image, 2.5, 1.5, 5.5, 2.5, 7.5)]
    path = _rtstruct(tmp_path / "off.dcm", image, {"off": between})
    with pytest.raises(GeometryError, match="does not lie in a slice"):
        read_rtstruct(path, image)
    outside = [_rectangle(image, 2, 1.5, 30.5, 2.5, 7.5)]
    path = _rtstruct(tmp_path / "out.dcm", image, {"out": outside})
    with pytest.raises(GeometryError, match="field of view"):
        read_rtstruct(path, image)
    with pytest.raises(DicomSeriesError, match="ROI not found"):
        read_rtstruct(path, image, rois=["nope"])
