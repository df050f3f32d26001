"""The loader's pixel paths give the same arrays: pixel bytes read from the file at the offset
the header walker found, pixel bytes held in memory, and pydicom's general decoder."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from _dicom_synth import datasets, mosaic_dataset, save, volume, write

import islet_imaging as ii
from islet_imaging.errors import DicomSeriesError
from islet_imaging.io import _dicom_files
from islet_imaging.io._dicom_files import ZipReader, read_dicom_file
from islet_imaging.io._dicom_frames import file_frames
from islet_imaging.io._dicom_pixels import PixelReader

# files with a slice of 192 x 256 int16 pixels (96 KiB) are not read whole by the loader
LARGE = (4, 192, 256)


def _deferred(path) -> bool:
    """True if the loader leaves the pixel data of ``path`` on disk after the header read."""
    dicom = read_dicom_file(str(path), ZipReader(), headers_only=False)
    return dicom.header is not None and len(dicom.data) <= dicom.header.pixel_offset


def _load_three_ways(folder, monkeypatch) -> list[ii.Volume]:
    """Default load; whole files in memory; every file through pydicom (no header walker)."""
    volumes = [ii.load_series(folder)]
    with monkeypatch.context() as m:
        m.setattr(_dicom_files, "_HEAD", 1 << 24)
        assert not _deferred(next(folder.iterdir()))
        volumes.append(ii.load_series(folder))
    with monkeypatch.context() as m:
        m.setattr(_dicom_files, "_parse_or_none", lambda data, stop_after: None)
        volumes.append(ii.load_series(folder))
    return volumes


def _stored_times_rescale(paths) -> np.ndarray:
    """Hand computation with pydicom: stored values x slope + intercept, per file."""
    out = []
    for path in paths:
        ds = pydicom.dcmread(path)
        slope, intercept = float(ds.get("RescaleSlope", 1)), float(ds.get("RescaleIntercept", 0))
        out.append(ds.pixel_array.astype(np.float64) * slope + intercept)
    return np.stack(out)


@pytest.mark.parametrize("shape", [(3, 10, 12), LARGE], ids=["in_memory", "read_at_offset"])
def test_per_slice_rescale_identical_on_every_path(tmp_path, monkeypatch, shape):
    vol = volume(shape=shape, seed=3)
    vol = vol.with_array(vol.array * np.array([0.5, 3.0, 40.0, 7.0][: shape[0]])[:, None, None])
    files = write(vol, tmp_path, modality="PT")
    assert _deferred(files[0]) == (shape == LARGE)
    fast, in_memory, general = _load_three_ways(tmp_path, monkeypatch)
    np.testing.assert_array_equal(fast.array, in_memory.array)
    np.testing.assert_array_equal(fast.array, general.array)
    assert fast.same_grid(general)
    assert fast.meta["rescale"] == general.meta["rescale"]
    truth = _stored_times_rescale(fast.meta["source_files"])
    np.testing.assert_allclose(fast.array, truth, rtol=1e-6)
    assert len({s for s, _ in fast.meta["rescale"]}) == shape[0]  # really per slice


def test_element_after_the_pixel_data(tmp_path, monkeypatch):
    vol = volume(shape=LARGE, seed=4)
    for k, ds in enumerate(datasets(vol)):
        ds.DataSetTrailingPadding = b"\x00" * 200  # (FFFC,FFFC) comes after (7FE0,0010)
        save(ds, tmp_path / f"im{k}.dcm")
    path = tmp_path / "im0.dcm"
    dicom = read_dicom_file(str(path), ZipReader(), headers_only=False)
    header = dicom.header
    assert header.pixel_offset + header.pixel_length + 12 + 200 == path.stat().st_size
    assert _deferred(path)
    for loaded in _load_three_ways(tmp_path, monkeypatch):
        np.testing.assert_array_equal(loaded.array, vol.array)
        assert loaded.same_grid(vol, atol=1e-4)


def test_odd_length_8_bit_pixel_data(tmp_path, monkeypatch):
    # 257 x 263 bytes: odd, padded to an even length by one byte; not read whole
    rng = np.random.default_rng(5)
    stored = rng.integers(0, 256, size=(3, 257, 263)).astype(np.uint8)
    vol = volume(shape=stored.shape)
    for k, ds in enumerate(datasets(vol)):
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
        ds.PixelData = stored[k].tobytes()
        ds["PixelData"].VR = "OB"
        save(ds, tmp_path / f"im{k}.dcm")
    header = read_dicom_file(str(tmp_path / "im0.dcm"), ZipReader(), headers_only=False).header
    assert header.pixel_length == 257 * 263 + 1
    assert _deferred(tmp_path / "im0.dcm")
    for loaded in _load_three_ways(tmp_path, monkeypatch):
        np.testing.assert_array_equal(loaded.array, stored.astype(np.float32))


def test_mosaic_tiles_read_at_offset_match_in_memory(tmp_path, monkeypatch):
    slices = volume(shape=(4, 96, 128), seed=6)  # mosaic of 2 x 2 tiles: 192 x 256 int16
    save(mosaic_dataset(slices, per_row=2), tmp_path / "mosaic.dcm")
    assert _deferred(tmp_path / "mosaic.dcm")
    fast, in_memory, general = _load_three_ways(tmp_path, monkeypatch)
    np.testing.assert_array_equal(fast.array, slices.array)
    np.testing.assert_array_equal(in_memory.array, slices.array)
    np.testing.assert_array_equal(general.array, slices.array)


def test_file_truncated_after_its_header_was_read(tmp_path):
    path = write(volume(shape=(1, *LARGE[1:])), tmp_path)[0]
    dicom = read_dicom_file(str(path), ZipReader(), headers_only=False)
    (frame,) = file_frames(dicom)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DicomSeriesError, match="shorter than its header says") as info:
        PixelReader().raw(frame)
    assert info.value.tag == "PixelData"
    assert info.value.path == str(path)
