"""The plugin as napari sees it: npe2 manifest, viewer.open, sample data on screen."""

from __future__ import annotations

import numpy as np
import pytest
from napari_islet_imaging._layers import layer_to_volume, lps_to_world
from npe2 import PluginManifest
from npe2.manifest.utils import import_python_name
from qtpy.QtWidgets import QWidget

from islet_imaging.phantom import make_visit

PLUGIN = "islet-imaging"


def test_manifest_is_valid_and_every_command_imports():
    manifest = PluginManifest.from_distribution("islet-imaging")
    manifest.validate_imports()  # what `npe2 validate islet-imaging --imports` runs
    contributions = manifest.contributions
    assert contributions.readers[0].accepts_directories
    assert {w.layer_types[0] for w in contributions.writers} == {"labels", "image"}
    assert [s.key for s in contributions.sample_data] == ["phantom_visit"]
    commands = {c.id: c.python_name for c in contributions.commands}
    widgets = [import_python_name(commands[w.command]) for w in contributions.widgets]
    assert len(widgets) == 5
    assert all(issubclass(w, QWidget) for w in widgets)


def test_viewer_opens_a_dicom_visit_with_the_plugin(make_napari_viewer, dicom_visit):
    viewer = make_napari_viewer()
    with pytest.warns(UserWarning, match="Non-orthogonal slicing"):  # the MR is oblique
        layers = viewer.open(str(dicom_visit.folder), plugin=PLUGIN)
    assert [layer.name for layer in layers] == ["T2 TSE MR", "exendin PET PT [SUVbw]"]
    world = lps_to_world(dicom_visit.spot_lps)
    for layer in layers:
        hot = np.unravel_index(np.argmax(np.asarray(layer.data)), layer.data.shape)
        np.testing.assert_allclose(layer.data_to_world(hot), world, atol=1e-3)


def _canvas_pixel(viewer, world_point: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Screen position (row, col) of a world point on the 2D canvas (displayed dims 1, 2)."""
    camera = viewer.scene.camera
    centre = np.asarray(camera.center)[-2:]
    return (world_point[-2:] - centre) * camera.zoom + np.array(shape) / 2.0


def test_sample_data_screenshot_shows_the_graft_overlay(make_napari_viewer):
    viewer = make_napari_viewer(show=True)  # the canvas renders only in a shown window (Xvfb)
    layers = viewer.open_sample(PLUGIN, "phantom_visit")
    assert [type(layer).__name__ for layer in layers] == ["Image", "Image", "Labels"]
    mr, pet, truth = layers
    assert mr.colormap.name == "gray"
    assert pet.colormap.name == "inferno"
    assert pet.metadata["islet_imaging"]["meta"]["units"] == "SUVbw"

    # go to the slice through the centre of the largest deposit
    visit = make_visit(seed=0, size="sample")
    deposit = max(visit.truth["deposits"], key=lambda d: d["volume_ml_analytic"])
    world = lps_to_world(deposit["centre_mm"])
    assert layer_to_volume(truth).same_grid(visit.deposit_labels)
    viewer.dims.set_point(0, world[0])
    viewer.reset_view()
    with_graft = viewer.screenshot(canvas_only=True, flash=False)
    truth.visible = False
    without = viewer.screenshot(canvas_only=True, flash=False)

    changed = np.any(with_graft[..., :3] != without[..., :3], axis=-1)
    assert changed.sum() > 50  # the labels overlay is drawn
    # every labelled voxel of the displayed slice is drawn where it projects on the canvas
    k = int(np.round(truth.world_to_data(viewer.dims.point)[0]))
    voxels = np.argwhere(np.asarray(truth.data[k]) > 0)
    assert len(voxels) > 10
    pixels = np.array(
        [
            _canvas_pixel(viewer, np.asarray(truth.data_to_world((k, *v))), changed.shape)
            for v in voxels
        ]
    )
    pixels = np.round(pixels).astype(int)
    assert np.mean(changed[pixels[:, 0], pixels[:, 1]]) > 0.9
    # and nothing is drawn far from the graft (the overlay is not shifted or mirrored)
    rows, cols = np.nonzero(changed)
    distance = np.min(
        np.hypot(rows[:, None] - pixels[None, :, 0], cols[:, None] - pixels[None, :, 1]), axis=1
    )
    assert np.percentile(distance, 99) < 2 * viewer.scene.camera.zoom * max(truth.scale)
