"""NIfTI / NRRD read and write: geometry, masks, metadata, atomic and refusing overwrite."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

from islet_imaging import IsletImagingError, Volume, read_mask, read_volume, write_volume


def oblique(array=None) -> Volume:
    direction = Rotation.from_euler("xyz", [15, -25, 40], degrees=True).as_matrix()
    if array is None:
        array = np.random.default_rng(1).normal(size=(3, 4, 5)).astype(np.float32)
    return Volume(
        array,
        spacing=(2.5, 0.7, 0.9),
        origin=(-12.0, 30.5, 4.0),
        direction=direction,
        meta={"modality": "MR", "series_uid": "1.2.3"},
    )


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz", ".nrrd"])
def test_round_trip_oblique(tmp_path, suffix):
    vol = oblique()
    path = write_volume(vol, tmp_path / f"v{suffix}")
    back = read_volume(path)
    assert back.same_grid(vol, atol=1e-5)
    np.testing.assert_array_equal(back.array, vol.array)
    assert back.meta["source_file"] == str(path)
    if suffix == ".nrrd":
        assert back.meta["series_uid"] == "1.2.3"


def test_nifti_affine_is_ras_by_hand(tmp_path):
    vol = oblique()
    write_volume(vol, tmp_path / "v.nii")
    img = nib.load(tmp_path / "v.nii")
    assert img.shape == (5, 4, 3)  # (i, j, k) = (x, y, z)
    lps = vol.affine[:, [2, 1, 0, 3]]
    np.testing.assert_allclose(img.affine, np.diag([-1, -1, 1, 1]) @ lps, atol=1e-4)
    np.testing.assert_array_equal(np.asarray(img.dataobj), vol.array.transpose(2, 1, 0))


def test_masks(tmp_path):
    vol = oblique()
    mask = vol.with_array(vol.array > 0)
    write_volume(mask, tmp_path / "m.nii.gz")
    back = read_mask(tmp_path / "m.nii.gz")
    assert back.is_mask
    assert back.meta["kind"] == "mask"
    np.testing.assert_array_equal(back.array, mask.array.astype(np.uint8))
    write_volume(vol.with_array(np.full(vol.shape, 2.0, np.float32)), tmp_path / "f.nrrd")
    assert read_mask(tmp_path / "f.nrrd").array.dtype == np.int32
    write_volume(vol, tmp_path / "real.nrrd")
    with pytest.raises(IsletImagingError, match="integer labels"):
        read_mask(tmp_path / "real.nrrd")


def test_errors(tmp_path):
    vol = oblique()
    write_volume(vol, tmp_path / "v.nii.gz")
    with pytest.raises(IsletImagingError, match="refusing to overwrite") as info:
        write_volume(vol, tmp_path / "v.nii.gz")
    assert info.value.path == str(tmp_path / "v.nii.gz")
    write_volume(vol.with_array(vol.array * 0), tmp_path / "v.nii.gz", overwrite=True)
    assert read_volume(tmp_path / "v.nii.gz").array.max() == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.nii.gz"]  # no temp files left
    with pytest.raises(IsletImagingError, match="unsupported file type"):
        write_volume(vol, tmp_path / "v.mha")
    with pytest.raises(IsletImagingError, match="file not found"):
        read_volume(tmp_path / "missing.nrrd")
    (tmp_path / "bad.nii").write_bytes(b"garbage")
    with pytest.raises(IsletImagingError, match="cannot read image") as info:
        read_volume(tmp_path / "bad.nii")
    assert info.value.path == str(tmp_path / "bad.nii")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("files")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    angles=st.lists(st.floats(-180, 180), min_size=3, max_size=3),
    spacing=st.lists(st.floats(0.2, 8), min_size=3, max_size=3),
    origin=st.lists(st.floats(-400, 400), min_size=3, max_size=3),
    suffix=st.sampled_from([".nii.gz", ".nrrd"]),
    n=st.integers(0, 10**6),
)
def test_file_round_trip_property(workdir, angles, spacing, origin, suffix, n):
    direction = Rotation.from_euler("xyz", angles, degrees=True).as_matrix()
    array = np.random.default_rng(n).normal(size=(2, 3, 4)).astype(np.float32)
    vol = Volume(array, spacing=spacing, origin=origin, direction=direction)
    path = write_volume(vol, workdir / f"p{n}{suffix}", overwrite=True)
    back = read_volume(path)
    assert back.same_grid(vol, atol=1e-4)
    np.testing.assert_array_equal(back.array, vol.array)
