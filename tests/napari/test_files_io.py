"""Reader and writer contributions for NIfTI / NRRD: geometry kept, masks as Labels, no raising."""

from __future__ import annotations

import numpy as np
import pytest
from napari.layers import Layer
from napari_islet_imaging._layers import lps_to_world, volume_to_layer_data
from napari_islet_imaging._reader import napari_get_reader
from napari_islet_imaging._writer import write_image, write_labels

from islet_imaging.errors import IsletImagingError
from islet_imaging.io.files import read_mask, read_volume, write_volume
from islet_imaging.volume import Volume

SAGITTAL = np.array([[1.0, 0, 0], [0, 0, 1], [0, -1, 0]])


def _image(tmp_path):
    rng = np.random.default_rng(0)
    array = rng.normal(100, 10, (6, 20, 24)).astype(np.float32)
    return Volume(array, spacing=(4.0, 0.8, 0.6), origin=(3, -7, 11), direction=SAGITTAL)


def _read(path):
    reader = napari_get_reader(str(path))
    assert callable(reader)
    return [Layer.create(*data) for data in reader(str(path))]


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd"])
def test_reader_opens_image_files_with_geometry(tmp_path, suffix):
    volume = _image(tmp_path)
    path = write_volume(volume, tmp_path / f"t2{suffix}")
    (layer,) = _read(path)
    assert type(layer).__name__ == "Image"
    assert layer.scale[0] > 0
    assert sorted(layer.scale) == pytest.approx(sorted(volume.spacing))
    for kji in [(0, 0, 0), (5, 19, 23), (2, 7, 13)]:
        data_index = np.round(layer.world_to_data(lps_to_world(volume.index_to_world(kji))))
        assert layer.data[tuple(data_index.astype(int))] == volume.array[kji]


def test_reader_opens_masks_as_labels(tmp_path):
    volume = _image(tmp_path)
    mask = np.zeros(volume.shape, np.uint8)
    mask[2:4, 5:9, 6:12] = 1
    mask[4, 10:12, 1:3] = 2
    path = write_volume(volume.with_array(mask).as_mask(), tmp_path / "graft_mask.nii.gz")
    (layer,) = _read(path)
    assert type(layer).__name__ == "Labels"
    assert (
        np.bincount(np.asarray(layer.data).ravel()).tolist() == np.bincount(mask.ravel()).tolist()
    )


def test_reader_declines_unknown_files_and_never_raises(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    assert napari_get_reader(str(text)) is None
    assert napari_get_reader(str(tmp_path / "missing.dcm")) is None
    empty = tmp_path / "empty"
    empty.mkdir()
    assert napari_get_reader(str(empty)) is None
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"\x1f\x8b not really gzip")
    reader = napari_get_reader(str(broken))
    assert reader(str(broken)) == [(None,)]  # notified, not raised


def test_writer_round_trip_keeps_original_grid_and_never_overwrites(tmp_path):
    volume = _image(tmp_path).with_meta(modality="MR")
    mask = np.zeros(volume.shape, np.int32)
    mask[1:5, 3:15, 4:20] = 1
    data, kwargs, layer_type = volume_to_layer_data(volume.with_array(mask).as_mask())
    layer = Layer.create(data, kwargs, layer_type)
    layer.data[...] = 0
    layer.data[0, 0, 0] = 3  # an edit in display axes
    out = tmp_path / "edited.nii.gz"
    assert write_labels(str(out), *layer.as_layer_data_tuple()[:2]) == [str(out)]
    written = read_mask(out)
    assert written.same_grid(volume, atol=1e-4)
    assert int(written.array.sum()) == 3
    assert (written.array > 0).sum() == 1
    with pytest.raises(IsletImagingError, match="refusing to overwrite"):
        write_labels(str(out), *layer.as_layer_data_tuple()[:2])

    image_layer = Layer.create(*volume_to_layer_data(volume))
    image_out = tmp_path / "image.nrrd"
    write_image(str(image_out), *image_layer.as_layer_data_tuple()[:2])
    back = read_volume(image_out)
    assert back.same_grid(volume, atol=1e-4)
    np.testing.assert_array_equal(back.array, volume.array)


def test_reader_opens_a_folder_of_images_and_masks(tmp_path):
    volume = _image(tmp_path)
    write_volume(volume, tmp_path / "t2.nii.gz")
    mask = np.zeros(volume.shape, np.uint8)
    mask[1:3, 4:8, 5:9] = 1
    write_volume(volume.with_array(mask).as_mask(), tmp_path / "graft_mask.nrrd")
    (tmp_path / "notes.txt").write_text("ignored")
    layers = _read(tmp_path)
    assert [(layer.name, type(layer).__name__) for layer in layers] == [
        ("graft_mask", "Labels"),
        ("t2", "Image"),
    ]
    assert int(np.count_nonzero(layers[0].data)) == int(mask.sum())
