"""Volume <-> napari layer geometry: every voxel lands on its LPS position in world space."""

from __future__ import annotations

import numpy as np
import pytest
from napari.layers import Layer
from napari_islet_imaging._layers import (
    display_axes,
    labels_like,
    layer_grid,
    layer_to_volume,
    lps_to_world,
    volume_to_layer_data,
    world_to_lps,
)
from scipy.spatial.transform import Rotation

from islet_imaging.volume import Volume

AXIAL = np.array([[0.0, 0, 1], [0, 1, 0], [1, 0, 0]])  # columns: slice normal, column, row dir
SAGITTAL = np.array([[1.0, 0, 0], [0, 0, 1], [0, -1, 0]])
CORONAL = np.array([[0.0, 0, 1], [-1, 0, 0], [0, 1, 0]])
OBLIQUE = Rotation.from_euler("xyz", [20, -15, 25], degrees=True).as_matrix() @ AXIAL

ORIENTATIONS = {
    "axial": (AXIAL, False),
    "axial_feet_first_flipped": (AXIAL @ np.diag([-1.0, 1, -1]), False),
    "sagittal": (SAGITTAL, False),
    "coronal": (CORONAL, False),
    "double_oblique": (OBLIQUE, True),
}


def _make_layer(volume: Volume, *, oblique: bool) -> Layer:
    data, kwargs, layer_type = volume_to_layer_data(volume)
    if oblique:  # napari slices oblique data in 2D without the out-of-plane rotation
        with pytest.warns(UserWarning, match="Non-orthogonal slicing"):
            return Layer.create(data, kwargs, layer_type)
    return Layer.create(data, kwargs, layer_type)


def _coded_volume(direction: np.ndarray) -> Volume:
    """Anisotropic volume whose voxel values are their flat index (each voxel unique)."""
    array = np.arange(5 * 6 * 7, dtype=np.float32).reshape(5, 6, 7)
    return Volume(array, spacing=(3.3, 0.7, 0.45), origin=(12.5, -40.0, 88.0), direction=direction)


@pytest.mark.parametrize("orientation", list(ORIENTATIONS))
def test_every_voxel_lands_on_its_lps_position(orientation):
    direction, oblique = ORIENTATIONS[orientation]
    volume = _coded_volume(direction)
    layer = _make_layer(volume, oblique=oblique)
    kji = np.stack(np.meshgrid(*[np.arange(n) for n in volume.shape], indexing="ij"), -1)
    kji = kji.reshape(-1, 3)
    world = lps_to_world(volume.index_to_world(kji))
    data_index = np.array([layer.world_to_data(w) for w in world])
    np.testing.assert_allclose(data_index, np.round(data_index), atol=1e-6)
    shown = layer.data[tuple(np.round(data_index).astype(int).T)]
    np.testing.assert_array_equal(shown, volume.array[tuple(kji.T)])
    # the displayed axes follow the world axes: the remaining rotation is small or none
    linear = np.asarray(layer.affine.affine_matrix)[:3, :3]
    assert np.all(np.diag(linear) > 0.8)
    if not oblique:
        np.testing.assert_allclose(linear, np.eye(3), atol=1e-12)


@pytest.mark.parametrize("orientation", list(ORIENTATIONS))
def test_layer_to_volume_restores_the_original_grid(orientation):
    direction, oblique = ORIENTATIONS[orientation]
    volume = _coded_volume(direction)
    back = layer_to_volume(_make_layer(volume, oblique=oblique))
    assert back.same_grid(volume, atol=1e-9)
    np.testing.assert_array_equal(back.array, volume.array)


@pytest.mark.parametrize("orientation", list(ORIENTATIONS))
def test_layer_grid_reads_geometry_from_the_transform_alone(orientation):
    direction, oblique = ORIENTATIONS[orientation]
    volume = _coded_volume(direction)
    layer = _make_layer(volume, oblique=oblique)
    grid = layer_grid(layer)  # display axes, no metadata used
    kji = np.array([[0, 0, 0], [4, 5, 6], [2, 1, 3]])
    for index in kji:
        display_index = np.round(grid.world_to_index(volume.index_to_world(index))).astype(int)
        assert grid.array[tuple(display_index)] == volume.array[tuple(index)]
    assert grid.voxel_volume_ml == pytest.approx(volume.voxel_volume_ml)


def test_foreign_layer_geometry_from_scale_and_translate():
    layer = Layer.create(np.zeros((4, 5, 6)), {"scale": (2, 0.5, 0.25), "translate": (9, 8, 7)})
    grid = layer_grid(layer)
    assert grid.spacing == pytest.approx((2, 0.5, 0.25))
    np.testing.assert_allclose(grid.index_to_world([1, 2, 3]), world_to_lps([11, 9, 7.75]))


def test_mr_and_pet_on_different_grids_meet_in_world_space():
    """A hot spot at a known LPS position lands on one world coordinate in both layers."""
    spot_lps = np.array([5.0, -12.0, 31.0])
    mr = Volume(
        np.zeros((12, 40, 48), np.float32), spacing=(3.0, 0.6, 0.5), origin=(-6, -24, 10),
        direction=AXIAL, meta={"modality": "MR"},
    )  # fmt: skip
    pet = Volume(
        np.zeros((10, 12, 12), np.float32), spacing=(2.0, 2.5, 2.5), origin=(-10, 0, 21),
        direction=CORONAL, meta={"modality": "PT", "units": "SUVbw"},
    )  # fmt: skip
    layers = []
    for volume in (mr, pet):
        index = tuple(np.round(volume.world_to_index(spot_lps)).astype(int))
        assert np.allclose(volume.index_to_world(index), spot_lps)  # the spot is a voxel centre
        array = np.array(volume.array)
        array[index] = 100.0
        layers.append(_make_layer(volume.with_array(array), oblique=False))
    mr_layer, pet_layer = layers
    assert pet_layer.colormap.name == "inferno"
    assert pet_layer.blending == "additive"
    assert mr_layer.colormap.name == "gray"
    for layer in layers:
        hot = np.argwhere(layer.data == 100.0)[0]
        np.testing.assert_allclose(layer.data_to_world(hot), lps_to_world(spot_lps), atol=1e-9)


def test_labels_like_is_writable_and_on_the_image_grid():
    volume = _coded_volume(SAGITTAL).with_meta(series_uid="1.2.3")
    mask = np.zeros(volume.shape, np.uint8)
    mask[1:3, 2:4, 3:6] = 1
    data, kwargs, layer_type = labels_like(volume, mask)
    assert layer_type == "labels"
    layer = Layer.create(data, kwargs, layer_type)
    layer.data[0, 0, 0] = 2  # painting works on the layer data
    back = layer_to_volume(layer)
    assert back.is_mask
    assert back.same_grid(volume)
    assert back.meta["series_uid"] == "1.2.3"
    assert int((back.array == 1).sum()) == int(mask.sum())
    order, flips = display_axes(SAGITTAL)
    assert order == (1, 2, 0)
    assert flips == (True, False, False)


def test_docstring_examples_of_the_plugin_run():
    import doctest

    import napari_islet_imaging._layers as layers_module

    result = doctest.testmod(layers_module)
    assert result.attempted > 0
    assert result.failed == 0
