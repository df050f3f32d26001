"""Real scanner series (../shared/data) against the dcm2niix references in reference.json."""

from __future__ import annotations

import numpy as np
import pytest
from _dicom_synth import AFFINE_TOL_MM, canonical

import islet_imaging as ii
from islet_imaging.errors import GeometryError

FOLDERS = [
    "siemens_t1w_sag_classic",
    "siemens_t1w_sag_enhanced",
    "philips_t1w_ax_classic",
    "philips_t1w_ax_enhanced",
    "philips_dual_echo_mag_phase",
    "ge_epi_ax_ffs_vol1",
    "mixed_series_ge",
    "canon_dti_b0_oblique",
    "pet_nema_phantom",
]
EXPECTED_VOLUMES = {"philips_dual_echo_mag_phase": 4, "mixed_series_ge": 5}


def matches(volume: ii.Volume, ref: dict) -> bool:
    img = canonical(volume)
    if list(img.shape) != ref["shape_canonical_ras"]:
        return False
    if np.max(np.abs(img.affine - np.asarray(ref["affine_canonical_ras"]))) > AFFINE_TOL_MM:
        return False
    mean = float(volume.array.mean(dtype=np.float64))
    return abs(mean - ref["mean"]) <= 1e-5 * abs(ref["mean"]) + 1e-3


@pytest.mark.parametrize("folder", FOLDERS)
def test_real_series_match_dcm2niix(folder, testdata, reference):
    ref = reference[folder]
    outputs = [d for d in ref["dcm2niix"] if not d["interpolated_equidistant"]]
    volumes = ii.load_volumes(testdata / folder)
    assert len(volumes) == EXPECTED_VOLUMES.get(folder, 1) == len(outputs)
    unmatched = list(outputs)
    for volume in volumes:
        assert volume.array.dtype == np.float32
        hit = [d for d in unmatched if matches(volume, d)]
        assert len(hit) == 1, f"{volume} matches {[d['nifti'] for d in hit]}"
        d = hit[0]
        unmatched.remove(d)
        std = float(volume.array.std(dtype=np.float64))
        assert std == pytest.approx(d["std"], rel=1e-5, abs=1e-3)
        assert np.allclose(sorted(volume.spacing), sorted(d["voxel_spacing_mm"]), atol=1e-3)
        # voxel values equal dcm2niix's after canonical reorientation: min / max
        assert float(volume.array.min()) == pytest.approx(d["min"], rel=1e-5, abs=1e-3)
        assert float(volume.array.max()) == pytest.approx(d["max"], rel=1e-5, abs=1e-3)
    assert not unmatched


def test_metadata_of_classic_series(testdata, reference):
    native = reference["philips_t1w_ax_classic"]["dicom_native"][0]
    volume = ii.load_series(testdata / "philips_t1w_ax_classic")
    meta = volume.meta
    assert meta["series_uid"] == native["series_uid"]
    assert meta["series_number"] == native["series_number"]
    assert meta["modality"] == "MR"
    assert len(meta["source_files"]) == len(meta["headers"]) == len(meta["rescale"]) == 24
    # slices in order along the normal, headers in the same order, no pixel data kept
    z = [float(h.ImagePositionPatient[2]) for h in meta["headers"]]
    assert z == sorted(z)
    assert np.allclose(np.diff(z), native["slice_step_mm"]["median"])
    assert all("PixelData" not in h for h in meta["headers"])
    assert all(
        s == pytest.approx(float(h.RescaleSlope))
        for (s, _), h in zip(meta["rescale"], meta["headers"], strict=True)
    )
    assert meta["frame_numbers"] is None
    assert "PatientName" not in {k for k in meta}


def test_enhanced_metadata(testdata):
    volume = ii.load_series(testdata / "philips_t1w_ax_enhanced")
    assert len(volume.meta["headers"]) == 1
    assert volume.meta["headers"][0].SOPClassUID.name == "Enhanced MR Image Storage"
    assert sorted(volume.meta["frame_numbers"]) == list(range(1, 25))
    slopes = np.array([s for s, _ in volume.meta["rescale"]])
    np.testing.assert_allclose(slopes, 37000.34375, rtol=1e-6)


def test_pet_monochrome1_is_not_inverted(testdata, reference):
    volume = ii.load_series(testdata / "pet_nema_phantom")
    stats = reference["pet_nema_phantom"]["dicom_native"][0]["pixel_stats_rescaled"]
    assert volume.meta["photometric"] == "MONOCHROME1"
    assert volume.meta["modality"] == "PT"
    assert float(volume.array.mean(dtype=np.float64)) == pytest.approx(stats["mean"], rel=1e-6)
    assert float(volume.array.min()) == pytest.approx(stats["min"], abs=1e-3)


def test_dual_echo_split_by_echo_and_image_type(testdata):
    volumes = ii.load_series(testdata / "philips_dual_echo_mag_phase")
    assert isinstance(volumes, list)
    keys = sorted((v.meta["echo_number"], v.meta["image_type"][3]) for v in volumes)
    assert keys == [(1, "M"), (1, "P"), (2, "M"), (2, "P")]
    for v in volumes:
        assert v.shape == (30, 96, 96)
        assert len(set(v.meta["source_files"])) == 30


def test_localizer_split_per_orientation(testdata, reference):
    uid = next(
        s["series_uid"]
        for s in reference["mixed_series_ge"]["dicom_native"]
        if len(s["distinct_orientations"]) == 3
    )
    volumes = ii.load_series(testdata / "mixed_series_ge", series_uid=uid)
    assert len(volumes) == 3
    normals = {tuple(np.round(np.abs(v.direction[:, 0]))) for v in volumes}
    assert normals == {(1, 0, 0), (0, 1, 0), (0, 0, 1)}
    with pytest.raises(GeometryError, match="3 different slice orientations"):
        ii.load_series(testdata / "mixed_series_ge", series_uid=uid, split=False)


def test_mixed_folder_needs_a_series_choice(testdata):
    with pytest.raises(ii.DicomSeriesError, match="3 series found") as info:
        ii.load_series(testdata / "mixed_series_ge")
    assert info.value.tag == "SeriesInstanceUID"


def test_missing_slice_strict_names_the_files_around_the_gap(testdata):
    with pytest.raises(GeometryError) as info:
        ii.load_series(testdata / "philips_t1w_ax_missing_slice")
    message = str(info.value)
    assert "0011.dcm" in message
    assert "0013.dcm" in message
    assert "ImagePositionPatient" in message
    assert "11.000 mm" in message
    assert "geometry=" in message


def test_missing_slice_resample_restores_the_grid(testdata, reference):
    truth = ii.load_series(testdata / "philips_t1w_ax_classic")
    volume = ii.load_series(testdata / "philips_t1w_ax_missing_slice", geometry="resample")
    assert volume.shape == (24, 256, 256)
    assert volume.same_grid(truth, atol=1e-3)
    keep = [k for k in range(24) if k != 11]
    np.testing.assert_allclose(volume.array[keep], truth.array[keep], rtol=1e-6)
    # the interpolated slice is the mean of its neighbours, close to the real one
    np.testing.assert_allclose(
        volume.array[11], (truth.array[10] + truth.array[12]) / 2, rtol=1e-5, atol=1e-2
    )
    assert volume.meta["geometry_warnings"]
    eq = next(
        d
        for d in reference["philips_t1w_ax_missing_slice"]["dcm2niix"]
        if d["interpolated_equidistant"]
    )
    assert (
        np.max(np.abs(canonical(volume).affine - np.asarray(eq["affine_canonical_ras"])))
        < AFFINE_TOL_MM
    )


def test_missing_slice_accept_keeps_23_slices_with_warning(testdata):
    volume = ii.load_series(testdata / "philips_t1w_ax_missing_slice", geometry="accept")
    assert volume.shape[0] == 23
    assert volume.spacing[0] == pytest.approx(5.75)
    assert "irregular slice spacing" in volume.meta["geometry_warnings"][0]


def test_raw_data_object_is_skipped(testdata):
    volume = ii.load_series(testdata / "philips_t1w_ax_enhanced")
    assert all("_Raw" not in f for f in volume.meta["source_files"])


def test_ffs_geometry_from_iop_ipp_only(testdata, reference):
    volume = ii.load_series(testdata / "ge_epi_ax_ffs_vol1")
    assert volume.meta["headers"][0].PatientPosition == "FFS"
    native = reference["ge_epi_ax_ffs_vol1"]["dicom_native"][0]
    d = [
        float(np.dot(h.ImagePositionPatient, native["slice_normal_lps"]))
        for h in volume.meta["headers"]
    ]
    assert np.allclose(d, native["positions_along_normal_mm"], atol=1e-3)
