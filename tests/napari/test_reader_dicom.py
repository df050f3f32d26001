"""DICOM reader: physical geometry of oblique / anisotropic MR and PET, SUV, many series."""

from __future__ import annotations

import numpy as np
import pytest
from _plugin_data import AXIAL, expected_suv, write_visit
from napari.layers import Layer
from napari_islet_imaging._layers import lps_to_world
from napari_islet_imaging._reader import napari_get_reader


def _layers(path, *, oblique: bool):
    reader = napari_get_reader(str(path))
    assert callable(reader)
    data = reader(str(path))
    if oblique:  # napari shows oblique data in 2D without the out-of-plane rotation
        with pytest.warns(UserWarning, match="Non-orthogonal slicing"):
            return [Layer.create(*d) for d in data]
    return [Layer.create(*d) for d in data]


def _hot_world(layer) -> np.ndarray:
    hot = np.unravel_index(np.argmax(np.asarray(layer.data)), layer.data.shape)
    return np.asarray(layer.data_to_world(hot))


@pytest.mark.parametrize("oblique", [True, False], ids=["oblique_mr", "axial_mr"])
def test_mr_and_pet_hot_spot_meet_at_the_same_world_point(tmp_path, oblique):
    kwargs = {} if oblique else {"mr_direction": AXIAL}
    visit = write_visit(tmp_path / "visit", **kwargs)
    mr_layer, pet_layer = _layers(visit.folder, oblique=oblique)
    assert mr_layer.name == "T2 TSE MR"
    assert pet_layer.name.startswith("exendin PET PT")
    world = lps_to_world(visit.spot_lps)
    np.testing.assert_allclose(_hot_world(mr_layer), world, atol=1e-3)
    np.testing.assert_allclose(_hot_world(pet_layer), world, atol=1e-3)
    # anisotropic voxel sizes are kept (4 mm slices, 0.7 x 0.55 mm in plane)
    assert sorted(mr_layer.scale) == pytest.approx(sorted(visit.mr.spacing), abs=1e-4)
    assert sorted(pet_layer.scale) == pytest.approx(sorted(visit.pet.spacing), abs=1e-4)


def test_pet_is_shown_in_suv_with_a_pet_colormap(dicom_visit):
    (pet_layer,) = _layers(dicom_visit.folder / "pet", oblique=False)
    meta = pet_layer.metadata["islet_imaging"]["meta"]
    assert meta["units"].lower().startswith("suv")
    hot = float(np.max(pet_layer.data))
    assert hot == pytest.approx(expected_suv(dicom_visit.pet_spot_bqml), rel=1e-4)
    assert pet_layer.colormap.name == "inferno"
    assert pet_layer.blending == "additive"
    assert pet_layer.contrast_limits[0] == 0.0
    assert pet_layer.contrast_limits[1] <= hot


def test_pet_without_suv_tags_falls_back_to_bq_per_ml(testdata):
    (layer,) = _layers(testdata / "pet_nema_phantom", oblique=False)
    assert layer.colormap.name == "inferno"
    assert layer.metadata["islet_imaging"]["meta"].get("suv") is None


def test_single_file_and_real_multi_series_folder(testdata):
    first = sorted((testdata / "philips_t1w_ax_classic").iterdir())[0]
    (single,) = _layers(first, oblique=False)
    assert single.data.shape[0] == 1
    layers = _layers(testdata / "mixed_series_ge", oblique=False)
    names = [layer.name for layer in layers]
    assert len(names) == 5
    assert len(set(names)) == 5
    thin_axis = {"axial": 0, "coronal": 1, "sagittal": 2}  # world axes (S, P, L)
    for layer in layers[:3]:  # each localizer plane is displayed along the world axes
        assert np.argmin(layer.data.shape) == thin_axis[layer.name.rsplit(" ", 1)[-1]]
        np.testing.assert_allclose(layer.affine.affine_matrix[:3, :3], np.eye(3), atol=1e-3)


def test_dicomdir_opens_every_series_it_references(tmp_path, monkeypatch):
    import tempfile

    import pydicom
    from pydicom.fileset import FileSet

    visit = write_visit(tmp_path / "source", mr_direction=AXIAL)
    (tmp_path / "stage").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "stage"))  # FileSet's staging
    fileset = FileSet()
    for path in sorted(visit.folder.rglob("*.dcm")):
        fileset.add(pydicom.dcmread(path))
    fileset.write(tmp_path / "media")  # IHE-style media: DICOMDIR + files without suffix
    fileset._stage["t"].cleanup()  # FileSet keeps a TemporaryDirectory open until GC
    mr_layer, pet_layer = _layers(tmp_path / "media" / "DICOMDIR", oblique=False)
    assert (mr_layer.name, pet_layer.name) == ("T2 TSE MR", "exendin PET PT [SUVbw]")
    world = lps_to_world(visit.spot_lps)
    np.testing.assert_allclose(_hot_world(pet_layer), world, atol=1e-3)
