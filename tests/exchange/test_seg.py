"""DICOM SEG: write from masks / deposit labels, read back pixel-exact on the source grid."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from _exchange_helpers import dciodvfy

from islet_imaging.errors import DicomSeriesError, GeometryError, IsletImagingError
from islet_imaging.io.dicom import load_series
from islet_imaging.io.files import read_mask
from islet_imaging.io.seg import (
    AlgorithmType,
    build_seg,
    read_seg,
    seg_segments,
    tracking_uid,
    write_seg,
    write_seg_labels,
)
from islet_imaging.volume import Volume


@pytest.fixture(scope="module")
def visit0(phantom_study: Path):
    mr = load_series(phantom_study / "dicom" / "ISLET-001" / "V0" / "T2")
    labels = read_mask(phantom_study / "truth" / "ISLET-001" / "V0" / "deposit_labels.nii.gz")
    return mr, labels.with_array(labels.array.astype(np.uint16)).as_mask()


def test_deposit_labels_round_trip_pixel_exact(visit0, tmp_path):
    mr, labels = visit0
    n = int(labels.array.max())
    muscle = mr.with_array(np.zeros(mr.shape, bool)).as_mask()
    muscle_array = np.zeros(mr.shape, bool)
    muscle_array[2:5, 10:20, 10:20] = True
    muscle = muscle.with_array(muscle_array)
    path = write_seg(labels, mr, tmp_path / "seg.dcm", include_graft=True, reference_mask=muscle)
    warnings = dciodvfy(path)
    print("dciodvfy warnings (SEG):", warnings)

    infos = seg_segments(path)
    assert [s.tracking_id for s in infos] == [
        *(f"deposit {k}" for k in range(1, n + 1)),
        "graft",
        "reference",
    ]
    assert {s.property_type for s in infos[:-1]} == {"Graft material"}
    assert infos[-1].property_type == "Skeletal muscle"
    assert all(s.category == "Tissue" for s in infos)
    assert all(s.algorithm_type == "AUTOMATIC" and s.algorithm_name for s in infos)
    assert infos[0].tracking_uid == tracking_uid("ISLET-001", "deposit 1")

    deposits = read_seg(path, reference=mr, segments=range(1, n + 1))
    assert deposits.same_grid(mr)
    np.testing.assert_array_equal(deposits.array, labels.array)
    graft = read_seg(path, reference=mr, segments=[n + 1])
    np.testing.assert_array_equal(graft.array > 0, labels.array > 0)
    ref = read_seg(path, reference=mr, segments=[n + 2])
    np.testing.assert_array_equal(ref.array > 0, muscle_array)
    assert deposits.meta["referenced_series_uid"] == mr.meta["series_uid"]
    with pytest.raises(GeometryError, match="overlap"):
        read_seg(path, reference=mr)

    ds = pydicom.dcmread(path)
    assert ds.StudyInstanceUID == mr.meta["study_uid"]
    assert ds.FrameOfReferenceUID == mr.meta["frame_of_reference_uid"]
    source_sops = {h.SOPInstanceUID for h in mr.meta["headers"]}
    referenced = {
        item.ReferencedSOPInstanceUID
        for item in ds.ReferencedSeriesSequence[0].ReferencedInstanceSequence
    }
    assert referenced <= source_sops


def test_tracking_uid_links_the_same_deposit_across_visits(phantom_study, visit0, tmp_path):
    mr0, labels0 = visit0
    mr1 = load_series(phantom_study / "dicom" / "ISLET-001" / "V1" / "T2")
    labels1 = read_mask(phantom_study / "truth" / "ISLET-001" / "V1" / "deposit_labels.nii.gz")
    labels1 = labels1.with_array(labels1.array.astype(np.uint16)).as_mask()
    seg0 = build_seg(labels0, mr0)
    seg1 = build_seg(labels1, mr1)
    assert seg0.StudyInstanceUID != seg1.StudyInstanceUID
    uids0 = {s.tracking_id: s.tracking_uid for s in seg_segments(seg0)}
    uids1 = {s.tracking_id: s.tracking_uid for s in seg_segments(seg1)}
    assert uids0["deposit 1"] == uids1["deposit 1"]
    assert len(set(uids0.values())) == len(uids0)
    assert tracking_uid("ISLET-002", "deposit 1") != uids0["deposit 1"]


def test_oblique_boolean_mask_and_reading_without_reference(exchange_series, tmp_path):
    mr = load_series(exchange_series["mr"])
    assert not np.allclose(mr.direction, np.eye(3))  # the test grid is oblique
    mask = np.zeros(mr.shape, bool)
    mask[1:4, 3:7, 2:8] = True
    mask[2, 3, 2] = False
    vol = mr.with_array(mask).as_mask()
    path = write_seg(vol, mr, tmp_path / "graft.dcm", algorithm_type="SEMIAUTOMATIC")
    dciodvfy(path)
    (info,) = seg_segments(path)
    assert (info.label, info.tracking_id, info.algorithm_type) == (
        "Graft",
        "graft",
        "SEMIAUTOMATIC",
    )
    back = read_seg(path, reference=mr)
    np.testing.assert_array_equal(back.array.astype(bool), mask)
    # without the source series: highdicom's geometry of the segmented slab (slices 1..3)
    slab = read_seg(path)
    assert slab.shape == (3, *mr.shape[1:])
    np.testing.assert_allclose(slab.affine[:3, :3], mr.affine[:3, :3], atol=1e-4)
    np.testing.assert_allclose(slab.origin, mr.index_to_world([1, 0, 0]), atol=1e-3)
    np.testing.assert_array_equal(slab.array.astype(bool), mask[1:4])


def test_enhanced_multiframe_source(testdata, tmp_path):
    (mr,) = [
        v
        for v in [load_series(testdata / "philips_t1w_ax_enhanced")]
        if v.meta["frame_numbers"] is not None
    ]
    labels = np.zeros(mr.shape, np.uint16)
    labels[5:8, 100:140, 90:130] = 1
    labels[15, 40:60, 50:70] = 2
    path = write_seg(mr.with_array(labels).as_mask(), mr, tmp_path / "enh.dcm")
    dciodvfy(path)
    back = read_seg(path, reference=mr)
    np.testing.assert_array_equal(back.array, labels)


def test_mask_on_another_grid_is_resampled_onto_the_source(exchange_series, tmp_path):
    mr = load_series(exchange_series["mr"])
    # a mask cropped from the image grid: shifted origin, smaller extent
    crop = np.ones((2, 3, 4), bool)
    origin = mr.index_to_world([2, 4, 3])
    small = Volume(crop, spacing=mr.spacing, origin=origin, direction=mr.direction).as_mask()
    path = write_seg(small, mr, tmp_path / "crop.dcm")
    back = read_seg(path, reference=mr)
    expected = np.zeros(mr.shape, bool)
    expected[2:4, 4:7, 3:7] = True
    np.testing.assert_array_equal(back.array.astype(bool), expected)


def test_errors_name_the_problem(exchange_series, tmp_path):
    mr = load_series(exchange_series["mr"])
    pet = load_series(exchange_series["pet"])
    with pytest.raises(IsletImagingError, match="empty"):
        build_seg(mr.with_array(np.zeros(mr.shape, bool)), mr)
    with pytest.raises(IsletImagingError, match="boolean mask or an integer"):
        build_seg(mr, mr)
    with pytest.raises(DicomSeriesError, match="no DICOM headers"):
        build_seg(Volume(np.ones((2, 2, 2), bool)), Volume(np.zeros((2, 2, 2))))
    mask = np.zeros(mr.shape, bool)
    mask[2, 2:4, 2:4] = True
    path = write_seg(mr.with_array(mask), mr, tmp_path / "seg.dcm")
    with pytest.raises(GeometryError, match="different frames of reference"):
        read_seg(path, reference=pet)
    half_voxel_off = Volume(
        mr.array, mr.spacing, mr.index_to_world([0, 0.5, 0]), mr.direction, mr.meta
    )
    with pytest.raises(GeometryError, match="does not lie on a slice"):
        read_seg(path, reference=half_voxel_off)
    with pytest.raises(DicomSeriesError, match="SOPClassUID"):
        read_seg(exchange_series["mr"][0])
    with pytest.raises(IsletImagingError, match="no such segment"):
        read_seg(path, segments=[7])
    with pytest.raises(IsletImagingError, match="refusing to overwrite"):
        write_seg(mr.with_array(mask), mr, path)


def test_labels_writer_for_napari(exchange_series, tmp_path):
    mr = load_series(exchange_series["mr"])
    labels = np.zeros(mr.shape, np.int32)
    labels[3, 5:9, 4:8] = 1
    labels[1, 1:3, 1:3] = 2
    # what the plugin hands over: the labels on the image grid, with the image's source files
    drawn = Volume(labels, mr.spacing, mr.origin, mr.direction,
                   {"kind": "mask", "source_files": mr.meta["source_files"]})  # fmt: skip
    out = write_seg_labels(drawn, tmp_path / "layer.dcm")
    infos = seg_segments(out)
    assert [i.algorithm_type for i in infos] == [AlgorithmType.MANUAL] * 2
    np.testing.assert_array_equal(read_seg(out, reference=mr).array, labels)
    with pytest.raises(IsletImagingError, match="drawn on"):
        write_seg_labels(Volume(labels, mr.spacing).as_mask(), tmp_path / "x.dcm")
