"""The phantom: geometry, exact truth, SUV, visits, determinism, DICOM on disk."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from islet_imaging.cli import main
from islet_imaging.io.dicom import load_series
from islet_imaging.io.files import read_mask
from islet_imaging.phantom import GA68_HALF_LIFE_S, generate_study, make_visit


def _ellipsoid_cap(a, b, c, h):
    """Volume of a cap of height h cut perpendicular to semi-axis a (by integration of the
    cross-section area pi*b*c*(1 - x^2/a^2) from a-h to a)."""
    return math.pi * b * c * (h - ((a**3 - (a - h) ** 3) / (3 * a * a)))


def _inside(deposit: dict, points: np.ndarray) -> np.ndarray:
    """Points (n, 3, LPS) inside a truth deposit: ellipsoid and its cut planes."""
    local = (points - np.asarray(deposit["centre_mm"])) @ np.asarray(deposit["axes"])
    a, b, c = deposit["semi_axes_mm"]
    r = (local[:, 0] / a) ** 2 + (local[:, 1] / b) ** 2 + (local[:, 2] / c) ** 2
    return (
        (r <= 1)
        & (local[:, 0] >= -a + deposit["cut_low_mm"])
        & (local[:, 0] <= a - deposit["cut_high_mm"])
    )


# --------------------------------------------------------------------------- in memory
def test_visit_volumes_share_the_mr_grid_and_frame_of_reference(phantom_visit):
    v = phantom_visit
    for mask in (v.graft_mask, v.deposit_labels, v.tissue_labels, v.mr_t2):
        assert mask.same_grid(v.mr_t1)
    assert v.graft_mask.is_mask
    assert v.deposit_labels.is_mask
    assert not v.pet.same_grid(v.mr_t1)
    assert v.pet_deposit_labels.same_grid(v.pet)
    assert v.pet.meta["frame_of_reference_uid"] == v.mr_t1.meta["frame_of_reference_uid"]
    assert v.pet.meta["units"] == "BQML"
    assert v.pet.meta["modality"] == "PT"
    assert v.mr_t1.spacing == (3.0, 1.5, 1.5)  # anisotropic
    assert max(v.pet.spacing) >= 2.0
    assert len(v.pet.meta["headers"]) == v.pet.shape[0]
    assert v.truth["graft"]["n_deposits"] == int(v.deposit_labels.array.max())
    np.testing.assert_array_equal(v.graft_mask.array, v.deposit_labels.array > 0)


def test_deposit_sizes_span_the_required_range_and_some_touch(phantom_visit):
    deposits = phantom_visit.truth["deposits"]
    volumes = [d["volume_ml_analytic"] for d in deposits]
    assert 3 <= len(deposits) <= 8
    assert min(volumes) < 0.03
    assert 1.5 < max(volumes) < 2.5
    touching = phantom_visit.truth["graft"]["touching_pairs"]
    assert touching
    by_label = {d["label"]: d for d in deposits}
    for first, second in touching:
        # touching deposits share a flat face: the same cut height on both sides
        assert by_label[first]["track"] == by_label[second]["track"]
        assert by_label[first]["cut_high_mm"] == pytest.approx(by_label[second]["cut_low_mm"])


def test_analytic_volumes_equal_the_truncated_ellipsoid_formula(phantom_visit):
    rng = np.random.default_rng(1)
    for d in phantom_visit.truth["deposits"]:
        a, b, c = d["semi_axes_mm"]
        expected = 4 / 3 * math.pi * a * b * c
        expected -= _ellipsoid_cap(a, b, c, d["cut_low_mm"]) + _ellipsoid_cap(
            a, b, c, d["cut_high_mm"]
        )
        assert d["volume_ml_analytic"] == pytest.approx(expected / 1000, rel=1e-8)
        # independent Monte Carlo estimate over the bounding box (standard error < 1 %)
        r = max(a, b, c)
        n = 200_000
        points = np.asarray(d["centre_mm"]) + rng.uniform(-r, r, (n, 3))
        fraction = _inside(d, points).mean()
        mc = fraction * (2 * r) ** 3 / 1000
        se = math.sqrt(fraction * (1 - fraction) / n) * (2 * r) ** 3 / 1000
        assert abs(mc - d["volume_ml_analytic"]) < 4 * se


def test_voxelised_volumes_agree_within_the_discretisation_error(phantom_visit):
    """Centre sampling misclassifies only points within h = half a voxel extent (along the
    surface normal, <= half the voxel diagonal D/2) of the surface, so |V_vox - V| is at most
    the volume of that shell: A*D + pi/3*D^3 (Steiner). Statistically the error is much
    smaller: each of the N ~ A*(sx+sy+sz)/(2v) boundary voxels errs by about U(-v/2, v/2), so
    SD ~ v*sqrt(N/12); the totals must agree within 4 SD."""
    v = phantom_visit
    spacing = v.mr_t1.spacing
    voxel = float(np.prod(spacing))
    labels = v.deposit_labels.array
    variance = 0.0
    for d in v.truth["deposits"]:
        count = int((labels == d["label"]).sum())
        assert d["volume_ml_voxelised"] == pytest.approx(count * voxel / 1000)
        error = abs(d["volume_ml_voxelised"] - d["volume_ml_analytic"])
        assert error <= d["discretisation_bound_ml"]
        a, b, c = d["semi_axes_mm"]
        area = 4 * math.pi * (((a * b) ** 1.6 + (a * c) ** 1.6 + (b * c) ** 1.6) / 3) ** (1 / 1.6)
        n_boundary = area * sum(spacing) / 2 / voxel
        variance += voxel**2 * n_boundary / 12
    graft = v.truth["graft"]
    total_error = abs(graft["volume_ml_voxelised"] - graft["volume_ml_analytic"]) * 1000
    assert total_error <= 4 * math.sqrt(variance)
    assert graft["volume_ml_voxelised"] == pytest.approx(v.graft_mask.array.sum() * voxel / 1000)


def test_label_map_matches_the_truth_geometry(phantom_visit):
    """Every labelled voxel centre lies inside its truth deposit (given in LPS) and vice versa."""
    v = phantom_visit
    labels = v.deposit_labels.array
    k, j, i = np.nonzero(np.ones(labels.shape, dtype=bool))
    centres = v.deposit_labels.index_to_world(np.stack([k, j, i], axis=1))
    for d in v.truth["deposits"]:
        inside = _inside(d, centres).reshape(labels.shape)
        np.testing.assert_array_equal(inside, labels == d["label"])


def test_mr_contrast_t2_bright_and_iron_dark(phantom_visit):
    v = phantom_visit
    tissue = v.tissue_labels.array
    muscle = tissue == v.truth["tissues"]["brachioradialis"]["code"]
    from scipy import ndimage

    core = ndimage.binary_erosion(v.graft_mask.array, iterations=1)
    assert core.sum() > 10
    t2 = v.mr_t2.array
    assert t2[core].mean() > 1.8 * t2[muscle].mean()
    assert np.all(np.asarray(v.mr_t1.array) == np.rint(v.mr_t1.array))  # int16 values
    ref = v.truth["reference_muscle"]
    assert ref["t1_mean_image"] == pytest.approx(v.mr_t1.array[muscle].mean(), rel=1e-9)
    bias = (v.truth["mr"]["bias_field_min"], v.truth["mr"]["bias_field_max"])
    assert bias[0] * 0.97 < ref["t1_mean_image"] / ref["t1_signal"] < bias[1] * 1.03

    iron = make_visit(seed=0, size="small", iron_labelled=True)
    t2_iron = iron.mr_t2.array
    assert t2_iron[core].mean() < 0.5 * t2_iron[muscle].mean()


def test_pet_values_reflect_truth_activity(phantom_visit):
    v = phantom_visit
    truth = v.truth
    muscle_code = truth["tissues"]["brachioradialis"]["code"]
    pet_tissue = v.pet_deposit_labels.array  # deposits on the PET grid
    from islet_imaging.register import resample_like

    tissue_on_pet = resample_like(v.tissue_labels, v.pet).array
    far = np.isin(tissue_on_pet, [muscle_code, 11, 12, 13])
    from scipy import ndimage

    far &= ~ndimage.binary_dilation(pet_tissue > 0, iterations=3)
    far = ndimage.binary_erosion(far, iterations=2)
    assert far.sum() > 50
    muscle = truth["reference_muscle"]["activity_bqml"]
    assert v.pet.array[far].mean() == pytest.approx(muscle, rel=0.05)
    biggest = max(truth["deposits"], key=lambda d: d["volume_ml_analytic"])
    smallest = min(truth["deposits"], key=lambda d: d["volume_ml_analytic"])
    centre = np.rint(v.pet.world_to_index(biggest["centre_mm"])).astype(int)
    peak = v.pet.array[tuple(centre)]
    # a 2 mL deposit with a 5 mm PSF keeps most of its activity; a 0.02 mL one does not
    assert 0.5 * biggest["activity_bqml"] < peak < 1.3 * biggest["activity_bqml"]
    small_centre = np.rint(v.pet.world_to_index(smallest["centre_mm"])).astype(int)
    assert v.pet.array[tuple(small_centre)] < 0.6 * smallest["activity_bqml"]
    assert truth["graft"]["graft_to_muscle_ratio"] > 3


def test_noise_free_pet_is_the_normalised_psf_of_the_truth():
    """Far (> 4 sigma of the PSF + half a voxel diagonal) from any other tissue, noise-free PET
    equals the muscle activity: the Gaussian keeps > 99.8 % of its mass within 4 sigma and the
    contrast to any neighbour is < 6x, so the error is < 1 %."""
    from scipy import ndimage

    from islet_imaging.register import resample_like

    v = make_visit(seed=0, size="small", pet_noise_cv=0.0, mr_snr=math.inf)
    assert v.truth["mr"]["t1_noise_sigma"] == 0
    muscle_codes = [v.truth["tissues"][name]["code"] for name in
                    ("brachioradialis", "flexors", "extensors", "deep_muscle")]  # fmt: skip
    tissue = resample_like(v.tissue_labels, v.pet).array
    muscle = np.isin(tissue, muscle_codes)
    sigma = 5.0 / (2 * math.sqrt(2 * math.log(2)))
    distance = ndimage.distance_transform_edt(muscle, sampling=v.pet.spacing)
    # nearest-neighbour resampling misplaces boundaries by up to half an MR voxel diagonal
    margin = 4 * sigma + math.dist((0, 0, 0), v.pet.spacing) / 2 + 2.5
    core = distance > margin
    assert core.sum() >= 5
    expected = v.truth["reference_muscle"]["activity_bqml"]
    np.testing.assert_allclose(v.pet.array[core], expected, rtol=0.01)
    # without noise the graft peak is below the true activity (partial volume), never above
    for d in v.truth["deposits"]:
        inside = v.pet_deposit_labels.array == d["label"]
        if inside.any():
            assert v.pet.array[inside].max() <= d["activity_bqml"] * 1.0001


def test_suv_in_truth_matches_the_qiba_formula_from_the_headers(phantom_visit):
    v = phantom_visit
    header = v.pet.meta["headers"][0]
    assert header.Units == "BQML"
    assert header.DecayCorrection == "START"
    assert {"ATTN", "DECY"} <= set(header.CorrectedImage)
    item = header.RadiopharmaceuticalInformationSequence[0]
    assert float(item.RadionuclideHalfLife) == GA68_HALF_LIFE_S == 4062.6
    injection = dt.datetime.strptime(item.RadiopharmaceuticalStartDateTime, "%Y%m%d%H%M%S")
    series = dt.datetime.strptime(header.SeriesDate + header.SeriesTime, "%Y%m%d%H%M%S")
    assert header.AcquisitionDate + header.AcquisitionTime == header.SeriesDate + header.SeriesTime
    delta_t = (series - injection).total_seconds()
    dose = float(item.RadionuclideTotalDose)
    weight_g = float(header.PatientWeight) * 1000
    factor = weight_g / (dose * 2 ** (-delta_t / 4062.6))
    for d in v.truth["deposits"]:
        assert d["suvbw"] == pytest.approx(d["activity_bqml"] * factor, rel=1e-8)
    ref = v.truth["reference_muscle"]
    assert ref["suvbw"] == pytest.approx(ref["activity_bqml"] * factor, rel=1e-8)
    assert v.truth["pet"]["delta_t_s"] == delta_t
    assert float(header.PatientSize) > 1.4
    assert header.PatientSex in ("F", "M")
    assert 0.3 < ref["suvbw"] < 1.0
    assert 1.5 < v.truth["graft"]["suvbw_mean"] < 6


def test_pet_suv_conversion_of_the_io_module_agrees_with_truth(phantom_visit):
    from islet_imaging.io.pet import to_suv

    suv = to_suv(phantom_visit.pet, "bw")
    factor = phantom_visit.truth["pet"]["suvbw_per_bqml"]
    np.testing.assert_allclose(
        suv.array, np.asarray(phantom_visit.pet.array, np.float64) * factor, rtol=1e-5, atol=1e-6
    )


# --------------------------------------------------------------------------- visits
def test_visits_are_rigidly_repositioned_with_exact_transform():
    baseline = make_visit(seed=4, patient=1, visit=0)
    later = make_visit(seed=4, patient=1, visit=2)
    np.testing.assert_allclose(baseline.transform_to_baseline, np.eye(4), atol=1e-12)
    m = later.transform_to_baseline
    moved = [d["centre_mm"] for d in later.truth["deposits"]]
    base = [d["centre_mm"] for d in baseline.truth["deposits"]]
    mapped = np.asarray(moved) @ m[:3, :3].T + m[:3, 3]
    np.testing.assert_allclose(mapped, base, atol=1e-6)
    rotation = later.truth["transform_to_baseline"]["rotation_deg"]
    assert 1.5 <= rotation <= 10.0
    shift = np.linalg.norm(np.mean(moved, axis=0) - np.mean(base, axis=0))
    assert 2.0 <= shift <= 20.0 + 1e-6 + np.linalg.norm(np.std(base, axis=0)) * 0.2
    # the SimpleITK transform maps baseline (fixed) points to this visit (moving)
    transform = later.sitk_transform_to_baseline()
    back = np.array([transform.TransformPoint(tuple(p)) for p in base])
    np.testing.assert_allclose(back, moved, atol=1e-6)
    assert not later.mr_t1.same_grid(baseline.mr_t1)


@pytest.mark.parametrize(("patient", "trend"), [(1, "shrink"), (2, "grow"), (3, "stable")])
def test_graft_volume_and_uptake_follow_the_patient_trend(patient, trend):
    visits = [make_visit(seed=2, patient=patient, visit=k).truth for k in (0, 2, 4)]
    assert {t["patient"]["trend"] for t in visits} == {trend}
    volumes = [t["graft"]["volume_ml_analytic"] for t in visits]
    suv = [t["graft"]["suvbw_mean"] for t in visits]
    if trend == "shrink":
        assert volumes[0] > volumes[1] > volumes[2]
        assert suv[0] > suv[2]
    elif trend == "grow":
        assert volumes[0] < volumes[1] < volumes[2]
        assert suv[0] < suv[2]
    else:
        assert max(volumes) / min(volumes) < 1.05
    # the number of deposits is a property of the patient
    assert len({t["graft"]["n_deposits"] for t in visits}) == 1


def test_same_seed_same_visit_and_different_seed_differs(phantom_visit):
    again = make_visit(seed=0, patient=1, visit=0, size="small")
    np.testing.assert_array_equal(again.mr_t1.array, phantom_visit.mr_t1.array)
    np.testing.assert_array_equal(again.pet.array, phantom_visit.pet.array)
    assert json.dumps(again.truth) == json.dumps(phantom_visit.truth)
    other = make_visit(seed=1, patient=1, visit=0, size="small")
    assert other.truth["study_uid"] != phantom_visit.truth["study_uid"]
    assert not np.array_equal(other.mr_t1.array, phantom_visit.mr_t1.array)


# --------------------------------------------------------------------------- on disk
def _files(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_generate_study_layout_and_pydicom_reading(phantom_study):
    manifest = json.loads((phantom_study / "phantom.json").read_text())
    assert [v["label"] for v in manifest["visits_index"]] == ["V0", "V1"]
    truth = json.loads((phantom_study / manifest["visits_index"][1]["truth"]).read_text())
    for key in ("t1", "t2", "pet"):
        files = sorted((phantom_study / truth["files"][key]).glob("*.dcm"))
        assert len(files) == truth["grids"]["pet" if key == "pet" else "mr"]["shape"][0]
        ds = pydicom.dcmread(files[0])
        assert ds.PatientID == "ISLET-001"
        assert ds.PatientName == "PHANTOM^P001"
        assert "PatientBirthDate" not in ds or not ds.PatientBirthDate
        assert ds.StudyInstanceUID == truth["study_uid"]
        assert ds.FrameOfReferenceUID == truth["frame_of_reference_uid"]
        assert ds.SeriesInstanceUID == truth["series"][key]["series_uid"]
        ds.pixel_array  # decodes  # noqa: B018


def test_dciodvfy_finds_no_error_or_warning_in_phantom_series(phantom_study):
    dciodvfy = Path(sys.executable).with_name("dciodvfy")
    for series, iod in (("T2", "MRImage"), ("PET", "PETImage")):
        first = sorted((phantom_study / "dicom/ISLET-001/V1" / series).glob("*.dcm"))[0]
        result = subprocess.run([str(dciodvfy), str(first)], capture_output=True, text=True)
        report = (result.stdout + result.stderr).strip()
        assert report == iod, report


def test_dicom_geometry_in_simpleitk_and_loader_matches_truth(phantom_study, phantom_visit):
    truth = json.loads((phantom_study / "truth/ISLET-001/V0/truth.json").read_text())
    assert truth == phantom_visit.truth
    for key, volume in (("t1", phantom_visit.mr_t1), ("pet", phantom_visit.pet)):
        folder = phantom_study / truth["files"][key]
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
        image = reader.Execute()
        np.testing.assert_allclose(image.GetOrigin(), volume.origin, atol=1e-4)
        np.testing.assert_allclose(image.GetSpacing(), volume.spacing[::-1], atol=1e-6)
        np.testing.assert_allclose(
            np.asarray(image.GetDirection()).reshape(3, 3)[:, ::-1], volume.direction, atol=1e-6
        )
        loaded = load_series(folder)
        assert loaded.same_grid(volume, atol=1e-4)
        np.testing.assert_allclose(loaded.array, volume.array, rtol=1e-6, atol=1e-3)
        assert loaded.meta["series_uid"] == volume.meta["series_uid"]
        grid = truth["grids"]["pet" if key == "pet" else "mr"]
        np.testing.assert_allclose(loaded.origin, grid["origin_mm"], atol=1e-4)


def test_truth_nifti_masks_match_memory(phantom_study, phantom_visit):
    labels = read_mask(phantom_study / "truth/ISLET-001/V0/deposit_labels.nii.gz")
    assert labels.same_grid(phantom_visit.deposit_labels, atol=1e-4)
    np.testing.assert_array_equal(labels.array, phantom_visit.deposit_labels.array)
    graft = read_mask(phantom_study / "truth/ISLET-001/V0/graft_mask.nii.gz")
    np.testing.assert_array_equal(graft.array > 0, phantom_visit.graft_mask.array)
    tissues = read_mask(phantom_study / "truth/ISLET-001/V0/tissue_labels.nii.gz")
    np.testing.assert_array_equal(tissues.array, phantom_visit.tissue_labels.array)


def test_generation_is_bit_for_bit_deterministic(tmp_path, phantom_study):
    again = generate_study(tmp_path / "again", patients=1, visits=2, seed=0, size="small")
    assert _files(again) == _files(phantom_study)


_S10, _C10, _S15, _C15 = (f(math.radians(a)) for a in (10, 15) for f in (math.sin, math.cos))


@pytest.mark.parametrize(
    ("orientation", "row", "col"),
    [
        ("axial", (1, 0, 0), (0, 1, 0)),
        ("sagittal", (0, 1, 0), (0, 0, -1)),
        # oblique = Rx(15 deg) @ Ry(-10 deg) applied to the axial row (L) and column (P)
        ("oblique", (_C10, -_S15 * _S10, _C15 * _S10), (0, _C15, _S15)),
    ],
)
def test_orientation_options_give_the_right_iop(orientation, row, col):
    visit = make_visit(seed=9, size="small", orientation=orientation)
    header = visit.mr_t2.meta["headers"][0]
    np.testing.assert_allclose(header.ImageOrientationPatient, [*row, *col], atol=1e-6)
    np.testing.assert_allclose(visit.mr_t1.direction[:, 2], row, atol=1e-9)
    np.testing.assert_allclose(visit.mr_t1.direction[:, 1], col, atol=1e-9)
    assert visit.truth["orientation"] == orientation
    pet = visit.pet.meta["headers"][0]
    np.testing.assert_allclose(pet.ImageOrientationPatient, [1, 0, 0, 0, 1, 0], atol=1e-9)
    # the whole graft is inside the field of view whatever the orientation
    graft = visit.truth["graft"]
    assert graft["volume_ml_voxelised"] == pytest.approx(
        graft["volume_ml_analytic"], abs=graft["discretisation_bound_ml"]
    )
    assert visit.graft_mask.array[[0, -1]].sum() == 0  # not cut by the first / last slice


@pytest.mark.parametrize(
    ("seed", "patient", "visit", "orientation"),
    [(1, 2, 0, "axial"), (1, 2, 5, "sagittal"), (2, 3, 0, "sagittal"), (6, 1, 0, "oblique")],
)
def test_long_grafts_stay_inside_both_fields_of_view(seed, patient, visit, orientation):
    """Two long injection tracks: the grids grow so that no deposit touches an edge."""
    v = make_visit(seed=seed, patient=patient, visit=visit, orientation=orientation)
    for labels in (v.deposit_labels.array, v.pet_deposit_labels.array):
        for axis in range(3):
            edges = np.take(labels, [0, -1], axis=axis)
            assert not edges.any()
    graft = v.truth["graft"]
    assert (
        abs(graft["volume_ml_voxelised"] - graft["volume_ml_analytic"])
        <= 0.06 * graft["volume_ml_analytic"]
    )
    # every deposit is seen on the PET grid too
    sizeable = {d["label"] for d in v.truth["deposits"] if d["volume_ml_analytic"] > 0.1}
    assert set(np.unique(v.pet_deposit_labels.array)) >= sizeable


def test_cli_writes_an_oblique_iron_study_and_refuses_to_overwrite(tmp_path):
    args = ["phantom", str(tmp_path), "--patients", "1", "--visits", "1", "--seed", "9"]
    args += ["--size", "small", "--oblique", "--iron", "--rle", "--psf-fwhm", "6"]
    assert main(args) == 0
    t1 = sorted((tmp_path / "dicom/ISLET-001/V0/T1").glob("*.dcm"))
    ds = pydicom.dcmread(t1[0])
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.5"
    np.testing.assert_allclose(ds.ImageOrientationPatient[3:], (0, _C15, _S15), atol=1e-6)
    truth = json.loads((tmp_path / "truth/ISLET-001/V0/truth.json").read_text())
    assert truth["mr"]["iron_labelled"] is True
    assert truth["pet"]["psf_fwhm_mm"] == 6
    assert truth["orientation"] == "oblique"
    assert main(args) == 2  # refuses to overwrite


def test_bad_parameters_are_rejected():
    from islet_imaging.errors import IsletImagingError

    with pytest.raises(IsletImagingError, match="psf_fwhm_mm"):
        make_visit(seed=0, psf_fwhm_mm=0)
    with pytest.raises(IsletImagingError, match="patient"):
        make_visit(seed=0, patient=0)
    with pytest.raises(ValueError, match="huge"):
        make_visit(seed=0, size="huge")
