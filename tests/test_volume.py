"""Volume: geometry, immutability, derivation and the SimpleITK bridge."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

from islet_imaging import IsletImagingError, Volume


def oblique() -> Volume:
    direction = Rotation.from_euler("xyz", [10, 20, 30], degrees=True).as_matrix()
    array = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    return Volume(
        array,
        spacing=(3.0, 0.5, 0.25),
        origin=(10.0, -5.0, 2.0),
        direction=direction,
        meta={"modality": "MR"},
    )


def test_affine_by_hand():
    vol = oblique()
    k, j, i = 1, 2, 3
    expected = np.asarray(vol.origin) + vol.direction @ (np.asarray(vol.spacing) * [k, j, i])
    np.testing.assert_allclose(vol.index_to_world([k, j, i]), expected)
    np.testing.assert_allclose(vol.affine @ [k, j, i, 1], [*expected, 1])
    np.testing.assert_allclose(vol.world_to_index(expected), [k, j, i], atol=1e-12)
    assert vol.voxel_volume_ml == pytest.approx(3.0 * 0.5 * 0.25 / 1000)
    assert vol.shape == (2, 3, 4)


def test_immutable():
    vol = oblique()
    with pytest.raises(ValueError, match="read-only"):
        vol.array[0, 0, 0] = 1
    with pytest.raises(TypeError):
        vol.meta["modality"] = "PT"
    with pytest.raises(AttributeError):
        vol.spacing = (1, 1, 1)
    with pytest.raises(ValueError, match="read-only"):
        vol.direction[0, 0] = 2


def test_with_array_keeps_geometry_and_checks_shape():
    vol = oblique()
    derived = vol.with_array(vol.array * 2, units="x2")
    assert derived.same_grid(vol)
    assert derived.meta == {"modality": "MR", "units": "x2"}
    assert vol.meta == {"modality": "MR"}
    with pytest.raises(IsletImagingError, match="with_array needs an array of shape"):
        vol.with_array(np.zeros((2, 3, 5)))
    mask = vol.with_array(vol.array > 5).as_mask(label="graft")
    assert mask.is_mask
    assert mask.meta["kind"] == "mask"
    labels = vol.with_array(vol.array.astype(np.int32))
    assert not labels.is_mask
    assert labels.as_mask().is_mask


@pytest.mark.parametrize(
    ("kwargs", "tag"),
    [
        ({"array": np.zeros((2, 2))}, "array"),
        ({"spacing": (1, 0, 1)}, "spacing"),
        ({"spacing": (1, np.nan, 1)}, "spacing"),
        ({"origin": (1, 2)}, "origin"),
        ({"direction": np.diag([1.0, 2.0, 1.0])}, "direction"),
    ],
)
def test_invalid_volumes_name_the_parameter(kwargs, tag):
    args = {"array": np.zeros((2, 2, 2)), **kwargs}
    with pytest.raises(IsletImagingError) as info:
        Volume(**args)
    assert info.value.tag == tag


def test_same_grid():
    vol = oblique()
    moved = Volume(
        vol.array, spacing=vol.spacing, origin=(10.0, -5.0, 2.01), direction=vol.direction
    )
    assert not vol.same_grid(moved)
    assert vol.same_grid(moved, atol=0.02)


def test_sitk_bridge_by_hand():
    vol = oblique()
    image = vol.to_sitk()
    assert image.GetSize() == (4, 3, 2)  # (x, y, z)
    assert image.GetSpacing() == (0.25, 0.5, 3.0)
    # the physical point of index (i, j, k) equals index_to_world((k, j, i))
    np.testing.assert_allclose(
        image.TransformIndexToPhysicalPoint((3, 2, 1)), vol.index_to_world([1, 2, 3])
    )
    assert image[3, 2, 1] == vol.array[1, 2, 3]
    back = Volume.from_sitk(image, {"modality": "MR"})
    assert back.same_grid(vol, atol=1e-9)
    np.testing.assert_array_equal(back.array, vol.array)
    assert Volume(np.zeros((2, 2, 2), bool)).to_sitk().GetPixelID() == sitk.sitkUInt8


def test_from_sitk_4d_singleton_and_2d():
    image = sitk.Image([4, 3, 2, 1], sitk.sitkFloat32)
    assert Volume.from_sitk(image).shape == (2, 3, 4)
    with pytest.raises(IsletImagingError, match="only 3D images"):
        Volume.from_sitk(sitk.Image([4, 3], sitk.sitkFloat32))


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.floats(-170, 170), min_size=3, max_size=3),
    st.lists(st.floats(0.1, 10), min_size=3, max_size=3),
    st.lists(st.floats(-500, 500), min_size=3, max_size=3),
)
def test_sitk_round_trip_property(angles, spacing, origin):
    direction = Rotation.from_euler("xyz", angles, degrees=True).as_matrix()
    vol = Volume(
        np.random.default_rng(0).random((3, 4, 5)),
        spacing=spacing,
        origin=origin,
        direction=direction,
    )
    back = Volume.from_sitk(vol.to_sitk())
    assert back.same_grid(vol, atol=1e-6)
    np.testing.assert_array_equal(back.array, vol.array)
