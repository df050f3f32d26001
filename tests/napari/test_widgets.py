"""Widget flow on a phantom study: load → segment → edit → measure → save, and the timeline."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
from napari_islet_imaging._layers import layer_to_volume, lps_to_world
from napari_islet_imaging._widgets.measurements import Measurements
from napari_islet_imaging._widgets.save_annotation import SaveAnnotation
from napari_islet_imaging._widgets.segmentation import GRAFT_NAME, PREVIEW_NAME, GraftSegmentation
from napari_islet_imaging._widgets.study_browser import StudyBrowser
from napari_islet_imaging._widgets.timeline import Timeline

from islet_imaging.io.files import read_mask
from islet_imaging.phantom import generate_study
from islet_imaging.register import resample_like
from islet_imaging.study.workspace import Workspace


@pytest.fixture(scope="module")
def phantom_study(tmp_path_factory):
    """One phantom patient, two visits (small grids), DICOM + truth."""
    return generate_study(
        tmp_path_factory.mktemp("phantom") / "study", patients=1, visits=2, seed=0, size="small"
    )


@pytest.fixture
def workspace_dir(tmp_path, phantom_study):
    ws = Workspace.init(tmp_path / "workspace")
    ws.import_paths(phantom_study / "dicom")
    ws.close()
    return tmp_path / "workspace"


def _truth(study, visit: str):
    folder = study / "truth" / "ISLET-001" / visit
    return json.loads((folder / "truth.json").read_text()), read_mask(
        folder / "deposit_labels.nii.gz"
    )


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


def _visit_item(browser: StudyBrowser, label: str):
    return next(item for item in browser.items() if item.text(0) == label)


def test_load_segment_edit_measure_save(make_napari_viewer, qtbot, workspace_dir, phantom_study):
    viewer = make_napari_viewer()
    truth, deposits = _truth(phantom_study, "V0")

    # -- load: study browser, patient -> visit
    browser = StudyBrowser(viewer)
    viewer.window.add_dock_widget(browser)
    assert browser.open(workspace_dir)
    assert [item.text(0) for item in browser.items()][:3] == ["P001", "V0", "MR T1 TSE ax"]
    loaded = browser.load_items([_visit_item(browser, "V0")])
    names = [layer.name for layer in loaded]
    assert names[-1].startswith("PET 68Ga-exendin AC PT [SUVbw")  # PET last, in SUV
    t2 = next(layer for layer in loaded if layer.name.startswith("T2"))
    assert t2.metadata["islet_imaging"]["visit_label"] == "P001/V0"
    assert layer_to_volume(t2).same_grid(deposits)

    # -- segment: default method (reference muscle + k SD), a seed in deposit 1 (LPS -> world);
    #    deposits 1-3 touch along the injection track, deposit 4 lies apart
    seg = GraftSegmentation(viewer)
    viewer.window.add_dock_widget(seg)
    seg.image_combo.set_layer(t2)
    assert seg.method_combo.currentText() == "reference"
    seg.split_check.setChecked(False)
    seeds = seg.new_seeds_layer()
    centres = {d["label"]: np.array(d["centre_mm"]) for d in truth["deposits"]}
    track = np.isin(deposits.array, [1, 2, 3])
    seeds.add(lps_to_world(centres[1]))
    preview = seg.preview()
    assert preview.name == PREVIEW_NAME
    assert _dice(layer_to_volume(preview).array > 0, track) > 0.8

    # live preview: moving the seed to deposit 4 re-segments after a short pause
    seeds.data = lps_to_world(centres[4])[None]
    qtbot.waitUntil(lambda: _dice(layer_to_volume(preview).array > 0, deposits.array == 4) > 0.6)
    seeds.data = lps_to_world(centres[1])[None]
    qtbot.waitUntil(lambda: _dice(layer_to_volume(preview).array > 0, track) > 0.8)
    graft = seg.accept()
    assert graft.name == GRAFT_NAME
    assert PREVIEW_NAME not in viewer.layers
    assert "mr_reference" in graft.metadata["islet_imaging"]["method"]

    # -- measure, then paint and erase: the volume follows the edits
    meas = Measurements(viewer)
    viewer.window.add_dock_widget(meas)
    meas.labels_combo.set_layer(graft)
    meas.mr_combo.set_layer(t2)
    meas.pet_combo.set_layer(viewer.layers[names[-1]])
    table = meas.measure()
    voxel_ml = layer_to_volume(t2).voxel_volume_ml
    start = meas.value("volume")
    assert start == pytest.approx(np.count_nonzero(graft.data) * voxel_ml)
    assert meas.value("deposit_count") == 1
    assert meas.value("suv_max") >= meas.value("suv_peak") > 0
    assert meas.value("suv_mean_ratio_to_reference") > 1
    assert meas.value("mr_ratio_to_reference") > 0
    assert set(table["unit"]) >= {"mL", "SUVbw"}

    empty = np.argwhere(np.asarray(graft.data) == 0)[:20]
    graft.data_setitem(tuple(empty.T), 1)  # what the brush does (undo history + paint event)
    qtbot.waitUntil(lambda: meas.value("volume") == pytest.approx(start + 20 * voxel_ml))
    painted = np.argwhere(np.asarray(graft.data) == 1)[:5]
    graft.data_setitem(tuple(painted.T), 0)  # eraser
    qtbot.waitUntil(lambda: meas.value("volume") == pytest.approx(start + 15 * voxel_ml))
    assert "mL" in meas.summary_label.text()

    # -- save: a new version with the annotator's name, never overwriting
    save = SaveAnnotation(viewer)
    viewer.window.add_dock_widget(save)
    save.labels_combo.set_layer(graft)
    assert save.workspace_edit.text() == str(workspace_dir)
    assert save.visit_edit.text() == "P001/V0"
    save.author_edit.setText("A. Annotator")
    first = save.save()
    graft.data_setitem(tuple(np.argwhere(np.asarray(graft.data) == 1)[:3].T), 0)
    second = save.save()
    ws = Workspace.open(workspace_dir)
    versions = ws.mask_versions("P001/V0")
    assert [v.version for v in versions] == [1, 2]
    assert [v.id for v in versions] == [first.id, second.id]
    assert versions[1].author == "A. Annotator"
    assert versions[1].parent_id == first.id
    assert versions[1].reference_series_uid == t2.metadata["islet_imaging"]["meta"]["series_uid"]
    assert "mr_reference" in versions[1].method
    assert "manual edit" in versions[1].method
    saved = versions[1].read()
    assert saved.same_grid(layer_to_volume(t2))
    np.testing.assert_array_equal(saved.array > 0, layer_to_volume(graft).array > 0)
    assert np.count_nonzero(versions[0].read().array) == np.count_nonzero(saved.array) + 3

    # the next pipeline run (and so the report) uses the saved human version
    from islet_imaging.study.pipeline import plan_visit

    assert plan_visit(ws, "P001/V0").mask_id == second.id
    ws.close()

    # -- reopening the visit brings the latest version back, ready for the next correction
    reloaded = browser.load_items([_visit_item(browser, "V0")])[-1]
    assert reloaded.name == "graft v2"
    assert reloaded.metadata["islet_imaging"]["mask_id"] == second.id
    np.testing.assert_array_equal(layer_to_volume(reloaded).array > 0, saved.array > 0)

    # -- export through the writer contribution; an existing file is never replaced
    out = workspace_dir.parent / "graft.nii.gz"
    assert save.export(out) == [str(out)]
    np.testing.assert_array_equal(read_mask(out).array > 0, saved.array > 0)
    assert save.export(out) == []
    assert "not exported" in save.status.text()


def _save_transform(path, truth_visit: dict, baseline) -> str:
    from islet_imaging.register import Registration

    spec = truth_visit["transform_to_baseline"]["sitk"]
    transform = sitk.Euler3DTransform()
    transform.SetFixedParameters(spec["fixed_parameters"])
    transform.SetParameters(spec["parameters"])
    grid = {
        "shape": list(baseline.shape),
        "spacing": list(baseline.spacing),
        "origin": list(baseline.origin),
        "direction": np.asarray(baseline.direction).tolist(),
    }
    return str(Registration(transform, 0.0, grid, {}).save(path))


def test_timeline_shows_visits_on_the_baseline_grid(
    make_napari_viewer, workspace_dir, phantom_study, tmp_path
):
    import pandas as pd

    _truth0, labels0 = _truth(phantom_study, "V0")
    truth1, labels1 = _truth(phantom_study, "V1")
    ws = Workspace.open(workspace_dir)
    for label, labels in (("P001/V0", labels0), ("P001/V1", labels1)):
        ws.save_mask(label, labels, author="truth", method="phantom truth")
    # the pipeline's visit -> baseline transform (here: the phantom's exact one)
    run = ws.start_run("P001/V1")
    tfm = _save_transform(tmp_path / "to_baseline.tfm", truth1, labels0)
    measurements = pd.DataFrame([{"object": "graft", "metric": "volume", "value": 0.0}])
    ws.finish_run(run, measurements=measurements, artifacts={"to_baseline": {"transform": tfm}})
    ws.close()

    viewer = make_napari_viewer()
    timeline = Timeline(viewer)
    viewer.window.add_dock_widget(timeline)
    assert timeline.open(workspace_dir)
    data = timeline.show_patient("P001")
    assert [layer.name for layer in viewer.layers] == ["V0 MR", "V0 graft", "V1 MR", "V1 graft"]
    assert viewer.canvas.grid.enabled
    assert viewer.canvas.grid.stride == 2
    assert list(data.trend["registration"]) == ["baseline", "pipeline"]
    expected = [labels0.voxel_volume_ml * np.count_nonzero(m.array) for m in (labels0, labels1)]
    np.testing.assert_allclose(data.trend["volume_ml"], expected)
    assert timeline.axes.lines[0].get_ydata().tolist() == pytest.approx(expected)

    # visit 1's graft, moved onto the baseline grid, lies on the baseline graft
    base = layer_to_volume(viewer.layers["V0 graft"]).array > 0
    moved = layer_to_volume(viewer.layers["V1 graft"])
    assert moved.same_grid(labels0)
    inside = np.count_nonzero(moved.array.astype(bool) & base) / np.count_nonzero(moved.array)
    identity = resample_like(labels1, labels0).array > 0  # same LPS position, no registration
    unregistered = np.count_nonzero(identity & base) / max(np.count_nonzero(identity), 1)
    assert inside > 0.7 > unregistered + 0.3


def test_background_preview_and_its_errors(make_napari_viewer, qtbot):
    from napari.layers import Layer
    from napari_islet_imaging._sample_data import phantom_layers

    viewer = make_napari_viewer()
    _mr, pet, _truth = (viewer.add_layer(Layer.create(*d)) for d in phantom_layers(size="small"))
    seg = GraftSegmentation(viewer)
    viewer.window.add_dock_widget(seg)
    seg.image_combo.set_layer(pet)  # PET: SUV methods and parameters
    assert seg.method_combo.currentText() == "percent_max"
    seg.preview_in_background()  # context and mask computed in a worker thread
    qtbot.waitUntil(lambda: PREVIEW_NAME in viewer.layers and seg._worker is None)
    hot = layer_to_volume(viewer.layers[PREVIEW_NAME])
    assert hot.same_grid(layer_to_volume(pet))
    assert hot.array.any()
    assert "preview:" in seg.status.text()

    seg.method_combo.setCurrentText("region_growing")  # needs seeds: reported, not raised
    qtbot.waitUntil(lambda: "segmentation failed" in seg.status.text() and seg._worker is None)
    assert "seeds_mm" in seg.status.text()
