"""Transfer syntaxes: pydicom's bundled files and series compressed by the tests."""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
from _dicom_synth import datasets, jpeg_lossless, rotation, save, volume
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.encaps import encapsulate
from pydicom.uid import (
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
)

import islet_imaging as ii
from islet_imaging.errors import DicomSeriesError, GeometryError

MR_SMALL_VARIANTS = [
    "MR_small_RLE.dcm",
    "MR_small_jp2klossless.dcm",
    "MR_small_jpeg_ls_lossless.dcm",
    "MR_small_implicit.dcm",
    "MR_small_bigendian.dcm",
    "MR_small_expb.dcm",
    "MR_small_padded.dcm",
]


def reference_pixels(name: str) -> np.ndarray:
    ds = pydicom.dcmread(get_testdata_file(name))
    return ds.pixel_array.astype(np.float64) * float(ds.get("RescaleSlope", 1)) + float(
        ds.get("RescaleIntercept", 0)
    )


@pytest.mark.parametrize("name", MR_SMALL_VARIANTS)
def test_mr_small_variants_decode_identically(name):
    reference = ii.load_series(get_testdata_file("MR_small.dcm"))
    np.testing.assert_array_equal(reference.array[0], reference_pixels("MR_small.dcm"))
    loaded = ii.load_series(get_testdata_file(name))
    assert loaded.shape == (1, 64, 64)
    np.testing.assert_array_equal(loaded.array, reference.array)
    assert loaded.same_grid(reference)


@pytest.mark.parametrize("name", ["JPGExtended.dcm", "JPEG2000.dcm"])
def test_jpeg_nm_without_geometry(name):
    path = get_testdata_file(name)
    with pytest.raises(GeometryError) as info:
        ii.load_series(path)
    assert info.value.tag == "ImagePositionPatient"
    assert info.value.path == path
    loaded = ii.load_series(path, geometry="accept")
    np.testing.assert_array_equal(loaded.array[0], reference_pixels(name))
    assert "ImagePositionPatient missing" in loaded.meta["geometry_warnings"][0]


@pytest.mark.parametrize(
    ("syntax", "kwargs"),
    [(RLELossless, {"encoding_plugin": "pydicom"}), (JPEGLSLossless, {}), (JPEG2000Lossless, {})],
)
def test_compressed_series_round_trip(tmp_path, syntax, kwargs):
    vol = volume(shape=(4, 32, 32), direction=rotation(5, 10, 0), seed=7)  # J2K needs >= 32 px
    for k, ds in enumerate(datasets(vol)):
        ds.compress(syntax, **kwargs)
        save(ds, tmp_path / f"{k}.dcm")
    assert pydicom.dcmread(tmp_path / "0.dcm").file_meta.TransferSyntaxUID == syntax
    loaded = ii.load_series(tmp_path)
    np.testing.assert_array_equal(loaded.array, vol.array)
    assert loaded.same_grid(vol, atol=1e-4)


def test_jpeg_baseline_decoded(tmp_path):
    rng = np.random.default_rng(0)
    image = np.clip(rng.normal(120, 30, (32, 40)), 0, 255).astype(np.uint8)
    image[8:20, 10:30] = 220
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=95)
    ds = datasets(ii.Volume(image[None].astype(np.float32), direction=rotation(0, 0, 0)))[0]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = encapsulate([buffer.getvalue()])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    save(ds, tmp_path / "jpeg.dcm")
    loaded = ii.load_series(tmp_path)
    decoded_by_pillow = np.asarray(Image.open(io.BytesIO(buffer.getvalue())), dtype=np.float32)
    assert np.max(np.abs(loaded.array[0] - decoded_by_pillow)) <= 2  # IDCT rounding differences
    assert np.mean(np.abs(loaded.array[0] - image)) < 5  # lossy, but the same image


def test_undecodable_pixel_data_names_file_and_tag():
    # pydicom's JPEG-lossy.dcm has a damaged JPEG stream (scan start/stop markers)
    path = get_testdata_file("JPEG-lossy.dcm")
    with pytest.raises(DicomSeriesError, match="cannot decode pixel data") as info:
        ii.load_series(path, geometry="accept")
    assert info.value.tag == "PixelData"
    assert info.value.path == path
    assert info.value.value == "1.2.840.10008.1.2.4.51"


def test_colour_image_rejected():
    path = get_testdata_file("SC_rgb_small_odd.dcm")
    with pytest.raises(DicomSeriesError) as info:
        ii.load_series(path, geometry="accept")
    assert info.value.tag == "SamplesPerPixel"
    assert info.value.path == path


def test_truncated_file_is_reported(tmp_path):
    with open(get_testdata_file("MR_small.dcm"), "rb") as fh:
        data = fh.read()
    (tmp_path / "cut.dcm").write_bytes(data[: len(data) - 1000])
    with pytest.raises(DicomSeriesError, match="truncated file") as info:
        ii.load_series(tmp_path)
    assert "cut.dcm" in str(info.value)
    assert "PixelData" in str(info.value)


def test_jpeg_lossless_decoded(tmp_path):
    vol = volume(shape=(3, 24, 20), direction=rotation(0, 30, 0), seed=11)
    vol = vol.with_array(vol.array + 500)  # unsigned 16-bit values
    for k, ds in enumerate(datasets(vol, pixel_dtype="uint16")):
        ds.PixelData = encapsulate([jpeg_lossless(vol.array[k].astype(np.uint16))])
        ds["PixelData"].VR = "OB"
        ds.file_meta.TransferSyntaxUID = JPEGLosslessSV1
        save(ds, tmp_path / f"{k}.dcm")
    loaded = ii.load_series(tmp_path)
    np.testing.assert_array_equal(loaded.array, vol.array)
    assert loaded.same_grid(vol, atol=1e-4)
