"""Pixel data of frames: raw little-endian bytes straight from the file buffer or read from the
file at the offset the header walker found, or decoded once per file by pydicom's pixel
handlers (JPEG baseline/extended/lossless, JPEG-LS, JPEG 2000, RLE, big endian, deflate), then
scaled per frame with RescaleSlope/RescaleIntercept into float32.

MONOCHROME1 data are never inverted: stored × slope + intercept is the quantity (e.g. Bq/mL).
"""

from __future__ import annotations

import threading

import numpy as np

from islet_imaging.errors import DicomSeriesError
from islet_imaging.io._dicom_files import DicomFile
from islet_imaging.io._dicom_frames import Frame

__all__ = ["PixelReader"]

_NATIVE = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1")


class PixelReader:
    """Reads frames of many files, decoding each compressed file only once (thread-safe)."""

    def __init__(self) -> None:
        self._decoded: dict[int, np.ndarray] = {}
        self._locks: dict[int, threading.Lock] = {}
        self._guard = threading.Lock()
        self._local = threading.local()  # per-thread buffer for pixel bytes read from disk

    def _buffer(self, nbytes: int) -> memoryview:
        buffer = getattr(self._local, "buffer", None)
        if buffer is None or len(buffer) < nbytes:
            buffer = self._local.buffer = bytearray(nbytes)
        return memoryview(buffer)[:nbytes]

    def _check(self, file: DicomFile) -> tuple[int, int, int]:
        spp = int(file.get("SamplesPerPixel", 1) or 1)
        if spp != 1:
            raise DicomSeriesError(
                "colour images cannot form a quantitative volume",
                path=file.path,
                tag="SamplesPerPixel",
                value=spp,
                hint="load a greyscale series",
            )
        bits = int(file.get("BitsAllocated", 16) or 16)
        if bits not in (8, 16, 32):
            raise DicomSeriesError(
                "unsupported pixel size", path=file.path, tag="BitsAllocated", value=bits
            )
        stored = int(file.get("BitsStored", bits) or bits)
        return bits, stored, int(file.get("PixelRepresentation", 0) or 0)

    def raw(self, frame: Frame) -> np.ndarray:
        """Stored values of ``frame`` as an integer array (rows, columns), not scaled.

        The array may be a view of a per-thread buffer: use it before the next call.
        """
        file = frame.file
        bits, stored, signed = self._check(file)
        header = file.header
        if (
            header is not None
            and header.pixel_length is not None
            and header.transfer_syntax in _NATIVE
        ):
            image = self._native(frame, np.dtype(f"<{'i' if signed else 'u'}{bits // 8}"))
            image = _fix_bits(image, stored, bits, signed)
        else:
            image = self._decoded_frame(file, frame.index)
            if frame.mosaic is not None:
                r = frame.mosaic[0] // frame.mosaic[1]
                image = image[r * frame.rows : (r + 1) * frame.rows]
        if frame.mosaic is not None:
            c = frame.mosaic[0] % frame.mosaic[1]
            image = image[:, c * frame.columns : (c + 1) * frame.columns]
        return image

    def _native(self, frame: Frame, dtype: np.dtype) -> np.ndarray:
        """Uncompressed little-endian pixels of ``frame`` (for a mosaic tile: its band of rows),
        from the file bytes in memory or read from the file at their offset."""
        file, header = frame.file, frame.file.header
        rows, cols = int(file.get("Rows", 0)), int(file.get("Columns", 0))
        row_bytes = cols * dtype.itemsize
        offset = header.pixel_offset + frame.index * rows * row_bytes
        if offset + rows * row_bytes > header.pixel_offset + header.pixel_length:
            raise DicomSeriesError(
                f"pixel data too short for frame {frame.index + 1} of {rows}x{cols} pixels",
                path=file.path,
                tag="PixelData",
                value=header.pixel_length,
            )
        if frame.mosaic is not None:
            rows = frame.rows
            offset += frame.mosaic[0] // frame.mosaic[1] * rows * row_bytes
        nbytes = rows * row_bytes
        if offset + nbytes <= len(file.data):
            data = file.data
        else:
            data = self._buffer(nbytes)
            file.read_at(offset, data)
            offset = 0
        return np.frombuffer(data, dtype, count=rows * cols, offset=offset).reshape(rows, cols)

    def _decoded_frame(self, file: DicomFile, index: int) -> np.ndarray:
        key = id(file)
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            array = self._decoded.get(key)
            if array is None:
                try:
                    array = _decode_encapsulated(file)
                    if array is None:
                        array = file.dataset(pixels=True).pixel_array
                except Exception as exc:  # decoder plugins raise many types
                    ts = file.get("TransferSyntaxUID")
                    raise DicomSeriesError(
                        f"cannot decode pixel data ({type(exc).__name__}: {exc})",
                        path=file.path,
                        tag="PixelData",
                        value=ts,
                        hint="install the pylibjpeg / pyjpegls decoder plugins or "
                        "decompress the file (e.g. with dcmdjpeg)",
                    ) from exc
                n_frames = int(file.get("NumberOfFrames", 1) or 1)
                if n_frames == 1 or array.ndim == 2:
                    array = array.reshape((1, *array.shape[-2:]))
                self._decoded[key] = array
        return array[index]

    def read_into(self, frame: Frame, out: np.ndarray) -> None:
        """Write ``stored × slope + intercept`` of ``frame`` into ``out`` (float32, in place)."""
        image = self.raw(frame)
        if frame.slope == 1.0:
            np.copyto(out, image, casting="unsafe")
        else:
            np.multiply(image, np.float32(frame.slope), out=out, dtype=np.float32, casting="unsafe")
        if frame.intercept != 0.0:
            out += np.float32(frame.intercept)


def _decode_encapsulated(file: DicomFile) -> np.ndarray | None:
    """Decode compressed pixel data straight from the file bytes (no full pydicom parse).

    Returns None when the fast walker did not read this file (pydicom decodes it instead).
    """
    header = file.header
    if header is None or header.pixel_offset is None or header.pixel_length is not None:
        return None
    from pydicom.pixels import get_decoder

    bits = int(file.get("BitsAllocated", 16) or 16)
    array, _ = get_decoder(header.transfer_syntax).as_array(
        file.whole()[header.pixel_offset :],
        rows=int(file.get("Rows")),
        columns=int(file.get("Columns")),
        samples_per_pixel=1,
        bits_allocated=bits,
        bits_stored=int(file.get("BitsStored", bits) or bits),
        pixel_representation=int(file.get("PixelRepresentation", 0) or 0),
        photometric_interpretation=str(file.get("PhotometricInterpretation", "MONOCHROME2")),
        number_of_frames=int(file.get("NumberOfFrames", 1) or 1),
    )
    return array


def _fix_bits(image: np.ndarray, stored: int, bits: int, signed: int) -> np.ndarray:
    """Mask unused high bits (and sign-extend) when BitsStored < BitsAllocated."""
    if stored >= bits or stored <= 0:
        return image
    if signed:
        low, high = -(1 << (stored - 1)), (1 << (stored - 1)) - 1
        if image.min() >= low and image.max() <= high:
            return image
        shift = bits - stored
        return (image << shift) >> shift
    mask = (1 << stored) - 1
    if image.max() <= mask:
        return image
    return image & image.dtype.type(mask)
