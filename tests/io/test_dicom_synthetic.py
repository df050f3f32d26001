"""Loader tests on synthetic series written by the tests: geometry, splitting and errors."""

from __future__ import annotations

import shutil

import numpy as np
import pydicom
import pytest
from _dicom_synth import (
    AXIAL,
    csa_blob,
    datasets,
    mosaic_dataset,
    rotation,
    save,
    volume,
    write,
)

import islet_imaging as ii
from islet_imaging.errors import DicomSeriesError, GeometryError, IsletImagingError


def test_oblique_series_round_trip(tmp_path):
    vol = volume(direction=rotation(20, -15, 35))
    write(vol, tmp_path)
    loaded = ii.load_series(tmp_path)
    assert loaded.same_grid(vol, atol=1e-3)
    np.testing.assert_array_equal(loaded.array, vol.array)
    assert loaded.array.dtype == np.float32


def test_left_handed_direction_is_reordered_along_the_normal(tmp_path):
    # slices written along -normal: the loader sorts along +normal (row x column cosine)
    direction = AXIAL * [-1.0, 1.0, 1.0]  # slice axis towards the feet
    vol = volume(direction=direction)
    write(vol, tmp_path)
    loaded = ii.load_series(tmp_path)
    np.testing.assert_array_equal(loaded.array, vol.array[::-1])
    np.testing.assert_allclose(loaded.direction[:, 0], [0, 0, 1])
    np.testing.assert_allclose(
        loaded.origin, vol.index_to_world([vol.shape[0] - 1, 0, 0]), atol=1e-4
    )


def test_shuffled_file_names_and_instance_numbers(tmp_path):
    vol = volume(shape=(8, 6, 5), direction=rotation(0, 0, 10))
    order = [5, 2, 7, 0, 3, 6, 1, 4]
    for k, ds in enumerate(
        datasets(vol, per_slice_tags={"InstanceNumber": [order[k] + 1 for k in range(8)]})
    ):
        save(ds, tmp_path / f"file_{order[k]:02d}.dcm")
    loaded = ii.load_series(tmp_path)
    np.testing.assert_array_equal(loaded.array, vol.array)
    assert loaded.same_grid(vol)


def test_missing_slice_error_names_neighbours(tmp_path):
    files = write(volume(shape=(7, 4, 4)), tmp_path)
    files[3].unlink()
    with pytest.raises(GeometryError) as info:
        ii.load_series(tmp_path)
    err = info.value
    assert err.tag == "ImagePositionPatient"
    assert files[2].name in str(err)
    assert files[4].name in str(err)
    assert "1 slice(s) missing" in str(err)
    resampled = ii.load_series(tmp_path, geometry="resample")
    assert resampled.shape[0] == 7
    assert resampled.spacing[0] == pytest.approx(2.5)


def test_duplicate_slice(tmp_path):
    vol = volume(shape=(5, 4, 4))
    files = write(vol, tmp_path)
    shutil.copy(files[2], tmp_path / "copy_of_slice3.dcm")
    with pytest.raises(GeometryError, match="duplicate slice position") as info:
        ii.load_series(tmp_path)
    assert "copy_of_slice3.dcm" in str(info.value)
    assert files[2].name in str(info.value)
    accepted = ii.load_series(tmp_path, geometry="accept")
    np.testing.assert_array_equal(accepted.array, vol.array)
    assert "duplicate positions" in accepted.meta["geometry_warnings"][0]


def test_per_slice_rescale_pet(tmp_path):
    rng = np.random.default_rng(3)
    activity = rng.uniform(0, 1, (6, 8, 8)) * np.array([1, 10, 100, 1e3, 1e4, 5e4])[:, None, None]
    vol = ii.Volume(activity.astype(np.float32), spacing=(3.27, 2.0, 2.0), direction=AXIAL)
    files = write(vol, tmp_path, modality="PT")
    slopes = [float(pydicom.dcmread(f).RescaleSlope) for f in files]
    assert len(set(slopes)) == 6
    loaded = ii.load_series(tmp_path)
    assert [s for s, _ in loaded.meta["rescale"]] == pytest.approx(slopes)
    assert loaded.meta["units"] == "BQML"
    # error bounded by half a quantisation step of each slice
    err = np.abs(loaded.array - vol.array).reshape(6, -1).max(axis=1)
    assert np.all(err <= np.asarray(slopes) * 0.5 + 1e-3 * np.asarray(slopes))
    assert loaded.meta["modality"] == "PT"


def test_rescale_intercept_and_slope_applied(tmp_path):
    vol = volume(shape=(3, 4, 4))
    dss = datasets(
        vol,
        per_slice_tags={
            "RescaleSlope": ["2", "0.5", "1"],
            "RescaleIntercept": ["-1024", "0", "10"],
        },
    )
    for k, ds in enumerate(dss):
        save(ds, tmp_path / f"{k}.dcm")
    loaded = ii.load_series(tmp_path)
    stored = vol.array
    np.testing.assert_allclose(loaded.array[0], stored[0] * 2 - 1024)
    np.testing.assert_allclose(loaded.array[1], stored[1] * 0.5)
    np.testing.assert_allclose(loaded.array[2], stored[2] + 10)
    assert loaded.meta["rescale"] == ((2.0, -1024.0), (0.5, 0.0), (1.0, 10.0))


def test_gantry_tilt_strict_and_resample(tmp_path):
    # every slice holds the same image but is shifted 1 row (1 mm) per 2 mm slice: 26.6 degrees
    base = np.zeros((16, 12), np.float32)
    base[4:9, 3:8] = 1000
    vol = ii.Volume(np.repeat(base[None], 6, axis=0), spacing=(2.0, 1.0, 1.0), direction=AXIAL)
    dss = datasets(
        vol, per_slice_tags={"ImagePositionPatient": [[0, k * 1.0, 2.0 * k] for k in range(6)]}
    )
    for k, ds in enumerate(dss):
        save(ds, tmp_path / f"t{k}.dcm")
    with pytest.raises(GeometryError, match="gantry tilt") as info:
        ii.load_series(tmp_path)
    assert "t5.dcm" in str(info.value)
    assert "26.6 degrees" in str(info.value)
    fixed = ii.load_series(tmp_path, geometry="resample")
    assert fixed.shape == (6, 16, 12)
    for k in range(6):  # slice k's content moved down k rows on the common grid
        np.testing.assert_allclose(fixed.array[k, 4 + k : 9 + k, 3:8], 1000)
        assert fixed.array[k].sum() == pytest.approx(base.sum())
    np.testing.assert_allclose(fixed.direction[:, 0], [0, 0, 1])
    accepted = ii.load_series(tmp_path, geometry="accept")
    np.testing.assert_array_equal(accepted.array, vol.array)
    assert "ignored" in accepted.meta["geometry_warnings"][0]


def test_stray_orientation_in_a_series_is_an_error(tmp_path):
    vol = volume(shape=(5, 6, 6))
    dss = datasets(vol)
    dss[2].ImageOrientationPatient = [0, 1, 0, 0, 0, -1]  # one sagittal slice
    for k, ds in enumerate(dss):
        save(ds, tmp_path / f"{k}.dcm")
    with pytest.raises(GeometryError, match="odd slice") as info:
        ii.load_series(tmp_path)
    assert info.value.tag == "ImageOrientationPatient"
    assert "2.dcm" in str(info.value)
    parts = ii.load_series(tmp_path, geometry="accept")
    assert sorted(v.shape[0] for v in parts) == [1, 4]


def test_missing_position_tag(tmp_path):
    dss = datasets(volume(shape=(3, 4, 4)))
    del dss[1].ImagePositionPatient
    for k, ds in enumerate(dss):
        save(ds, tmp_path / f"{k}.dcm")
    with pytest.raises(GeometryError) as info:
        ii.load_series(tmp_path)
    assert info.value.tag == "ImagePositionPatient"
    assert info.value.path.endswith("1.dcm")


def test_dynamic_series_split_by_temporal_position(tmp_path):
    a, b = volume(shape=(4, 5, 5), seed=1), volume(shape=(4, 5, 5), seed=2)
    uid = "1.2.826.0.1.3680043.8.498.777"
    for t, vol in enumerate((a, b), start=1):
        for k, ds in enumerate(
            datasets(vol, series_uid=uid, tags={"TemporalPositionIdentifier": t})
        ):
            save(ds, tmp_path / f"t{t}_{k}.dcm")
    vols = ii.load_series(tmp_path)
    assert [v.meta["split_keys"]["temporal"] for v in vols] == [1, 2]
    np.testing.assert_array_equal(vols[0].array, a.array)
    np.testing.assert_array_equal(vols[1].array, b.array)
    with pytest.raises(GeometryError, match="duplicate"):
        ii.load_series(tmp_path, split=False)


def test_dynamic_series_split_by_acquisition_time(tmp_path):
    a, b = volume(shape=(3, 4, 4), seed=4), volume(shape=(3, 4, 4), seed=5)
    uid = "1.2.826.0.1.3680043.8.498.778"
    for t, vol in enumerate((b, a)):  # written in reverse time order
        time = ["100500", "100000"][t]
        for k, ds in enumerate(datasets(vol, series_uid=uid, tags={"AcquisitionTime": time})):
            save(ds, tmp_path / f"x{t}_{k}.dcm")
    vols = ii.load_series(tmp_path)
    np.testing.assert_array_equal(vols[0].array, a.array)
    np.testing.assert_array_equal(vols[1].array, b.array)
    assert [v.meta["split_keys"]["repetition"] for v in vols] == [1, 2]


def test_mosaic_is_unpacked(tmp_path):
    slices = volume(shape=(5, 6, 7), spacing=(3.0, 2.0, 2.5), direction=rotation(10, 0, 0))
    save(mosaic_dataset(slices, per_row=3), tmp_path / "mosaic.dcm")
    loaded = ii.load_series(tmp_path)
    assert loaded.shape == (5, 6, 7)
    np.testing.assert_array_equal(loaded.array, slices.array)
    assert loaded.same_grid(slices, atol=1e-4)


def test_mosaic_slice_order_from_csa_slice_normal(tmp_path):
    # tiles acquired against row x column cosine: the CSA SliceNormalVector says so
    direction = rotation(0, 15, 0) * [-1.0, 1.0, 1.0]
    slices = volume(shape=(4, 6, 6), spacing=(2.0, 1.5, 1.5), direction=direction, seed=3)
    csa = csa_blob({"SliceNormalVector": list(direction[:, 0]), "NumberOfImagesInMosaic": [4]})
    save(mosaic_dataset(slices, per_row=2, csa=csa), tmp_path / "mosaic.dcm")
    loaded = ii.load_series(tmp_path)
    np.testing.assert_array_equal(loaded.array, slices.array[::-1])
    np.testing.assert_allclose(loaded.origin, slices.index_to_world([3, 0, 0]), atol=1e-4)
    np.testing.assert_allclose(loaded.direction[:, 0], -direction[:, 0], atol=1e-6)


def test_legacy_multiframe_without_functional_groups(tmp_path):
    vol = volume(shape=(3, 5, 4), spacing=(4.0, 1.0, 1.0), seed=6)
    ds = datasets(vol)[0]
    ds.NumberOfFrames = 3
    ds.PixelData = vol.array.astype("<i2").tobytes()
    save(ds, tmp_path / "multi.dcm")
    loaded = ii.load_series(tmp_path)
    np.testing.assert_array_equal(loaded.array, vol.array)
    assert loaded.same_grid(vol, atol=1e-4)
    assert loaded.meta["frame_numbers"] == (1, 2, 3)


def test_single_orientation_split_false_dual_echo_fails(testdata):
    with pytest.raises(GeometryError, match="duplicate"):
        ii.load_series(testdata / "philips_dual_echo_mag_phase", split=False)


def test_bad_arguments(tmp_path):
    write(volume(shape=(2, 3, 3)), tmp_path)
    with pytest.raises(IsletImagingError, match="unknown geometry") as info:
        ii.load_series(tmp_path, geometry="fix")
    assert info.value.tag == "geometry"
    with pytest.raises(IsletImagingError, match="unknown units"):
        ii.load_series(tmp_path, units="suv")
    with pytest.raises(
        DicomSeriesError, match=r"no DICOM image found for SeriesInstanceUID 1\.2\."
    ):
        ii.load_series(tmp_path, series_uid="1.2.3")
    with pytest.raises(IsletImagingError, match="path not found"):
        ii.load_series(tmp_path / "nope")


def test_folder_without_dicom(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DicomSeriesError, match="no DICOM image found") as info:
        ii.load_series(tmp_path)
    assert "notes.txt: not a DICOM file" in str(info.value)


def test_list_of_files_and_single_file_source(tmp_path):
    vol = volume(shape=(4, 3, 3))
    files = write(vol, tmp_path)
    loaded = ii.load_series([str(f) for f in reversed(files)])
    np.testing.assert_array_equal(loaded.array, vol.array)
    one = ii.load_series(files[1])
    assert one.shape == (1, 3, 3)
    assert one.spacing[0] == pytest.approx(2.5)  # SpacingBetweenSlices for a single slice
    np.testing.assert_allclose(one.origin, vol.index_to_world([1, 0, 0]), atol=1e-4)


def test_headers_are_lazy_pydicom_datasets_in_slice_order(tmp_path):
    vol = volume(shape=(4, 3, 3))
    files = write(vol, tmp_path, per_slice_tags={"InstanceNumber": [4, 3, 2, 1]})
    loaded = ii.load_series(tmp_path)
    headers = loaded.meta["headers"]
    assert len(headers) == 4
    assert [int(h.InstanceNumber) for h in headers] == [4, 3, 2, 1]
    assert headers[0].PatientName == "PHANTOM^ANONYMOUS"
    assert all("PixelData" not in h for h in headers)
    assert loaded.meta["source_files"] == tuple(str(f) for f in files)
    assert isinstance(headers[1:3], tuple)
    assert len(headers[1:3]) == 2


def test_units_suvbw_delegates_to_pet_module(tmp_path):
    activity = np.random.default_rng(8).uniform(0, 20000, (4, 6, 6)).astype(np.float32)
    vol = ii.Volume(activity, spacing=(3.0, 2.0, 2.0), direction=AXIAL)
    half_life, dose, weight = 4062.6, 1.5e8, 72.5  # 68Ga, Bq, kg
    radiopharm = {
        "RadionuclideTotalDose": str(dose),
        "RadionuclideHalfLife": str(half_life),
        "RadiopharmaceuticalStartTime": "100000",
        "RadiopharmaceuticalStartDateTime": "20240101100000",
    }
    tags = {"PatientWeight": str(weight), "RadiopharmaceuticalInformationSequence": [radiopharm]}
    write(vol, tmp_path, modality="PT", series_time="110000", tags=tags)
    bqml = ii.load_series(tmp_path)
    suv = ii.load_series(tmp_path, units="suvbw")
    # hand-computed SUVbw: weight in g / dose decayed to series time (1 h after injection)
    factor = weight * 1000 / (dose * 2 ** (-3600 / half_life))
    np.testing.assert_allclose(suv.array, bqml.array * factor, rtol=1e-5)
    assert suv.meta["units"] == "SUVbw"
    assert bqml.meta["units"] == "BQML"


def test_different_matrix_sizes_in_one_series(tmp_path):
    uid = "1.2.826.0.1.3680043.8.498.779"
    small, large = volume(shape=(3, 4, 4), seed=1), volume(shape=(3, 6, 6), seed=2)
    write(small, tmp_path / "a", series_uid=uid)
    write(large, tmp_path / "b", series_uid=uid)
    with pytest.raises(GeometryError, match="different matrix size") as info:
        ii.load_series(tmp_path, split=False)
    assert info.value.tag == "Rows/Columns/PixelSpacing"
    shapes = sorted(v.shape for v in ii.load_series(tmp_path))
    assert shapes == [(3, 4, 4), (3, 6, 6)]


def test_pixel_data_shorter_than_the_matrix(tmp_path):
    ds = datasets(volume(shape=(1, 4, 4)))[0]
    ds.Rows = 8  # header claims 8 x 4 pixels, the file holds 4 x 4
    save(ds, tmp_path / "short.dcm")
    with pytest.raises(DicomSeriesError, match="pixel data too short") as info:
        ii.load_series(tmp_path)
    assert info.value.tag == "PixelData"
    assert info.value.path.endswith("short.dcm")
