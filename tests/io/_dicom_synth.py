"""Synthetic DICOM series for the loader tests (written with islet_imaging.io.dicom_write)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
from scipy.spatial.transform import Rotation

from islet_imaging.io.dicom_write import series_datasets, write_series
from islet_imaging.volume import Volume

AFFINE_TOL_MM = 0.02  # reference.json: IPP rounding and dcm2niix's first-pair slice step

# Volume direction of an axial DICOM stack: columns = slice normal (+z), column cosine (+y),
# row cosine (+x). DICOM stacks slices along row x column cosine, so det(direction) = -1.
AXIAL = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])


def rotation(x_deg: float, y_deg: float, z_deg: float) -> np.ndarray:
    """An oblique DICOM-style direction: the axial one rotated by Euler angles in degrees."""
    return Rotation.from_euler("xyz", [x_deg, y_deg, z_deg], degrees=True).as_matrix() @ AXIAL


def volume(
    shape=(6, 10, 12), spacing=(2.5, 0.8, 0.7), origin=(-30.0, 12.5, 7.25), direction=None, seed=0
) -> Volume:
    """An integer-valued MR-like Volume (values fit int16 exactly)."""
    rng = np.random.default_rng(seed)
    array = rng.integers(-500, 3000, size=shape).astype(np.float32)
    return Volume(
        array, spacing=spacing, origin=origin, direction=AXIAL if direction is None else direction
    )


def write(vol: Volume, folder: Path, *, modality="MR", **options) -> list[Path]:
    """Write ``vol`` as a classic series; options go to :func:`write_series`."""
    return write_series(vol, folder, modality=modality, **options)


def datasets(vol: Volume, *, modality="MR", **options) -> list[pydicom.Dataset]:
    """The datasets of ``vol`` (slice order) to edit before writing."""
    return series_datasets(vol, modality=modality, **options)


def save(ds: pydicom.Dataset, path: Path) -> Path:
    """Write one dataset as a DICOM file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
    return path


def canonical(vol: Volume) -> nib.Nifti1Image:
    """Our Volume as a NIfTI image: voxel order (i, j, k) = (column, row, slice), RAS affine."""
    lps = vol.affine[:, [2, 1, 0, 3]]
    ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
    data = np.ascontiguousarray(vol.array.transpose(2, 1, 0))
    return nib.as_closest_canonical(nib.Nifti1Image(data, ras))


def jpeg_lossless(image: np.ndarray) -> bytes:
    """Encode a uint16 image as a JPEG Lossless (process 14, selection value 1) bitstream.

    A minimal encoder written from ITU-T T.81 (Annex H) so that the tests can check the
    loader's JPEG Lossless decoding path against an independent implementation: one component,
    16-bit precision, predictor 1 (left), one Huffman table with a 5-bit code for each
    difference category 0..16.
    """
    rows, cols = image.shape
    px = image.astype(np.int64)
    out = bytearray(b"\xff\xd8")
    out += b"\xff\xc3" + (11).to_bytes(2, "big") + bytes([16]) + rows.to_bytes(2, "big")
    out += cols.to_bytes(2, "big") + bytes([1, 1, 0x11, 0])
    bits = [0] * 16
    bits[4] = 17  # 17 codes of length 5: category c has code c
    out += b"\xff\xc4" + (2 + 1 + 16 + 17).to_bytes(2, "big") + bytes([0x00, *bits, *range(17)])
    out += b"\xff\xda" + (8).to_bytes(2, "big") + bytes([1, 1, 0x00, 1, 0, 0])
    acc, n_acc, data = 0, 0, bytearray()

    def put(value: int, n: int) -> None:
        nonlocal acc, n_acc
        acc = (acc << n) | (value & ((1 << n) - 1))
        n_acc += n
        while n_acc >= 8:
            n_acc -= 8
            byte = (acc >> n_acc) & 0xFF
            data.append(byte)
            if byte == 0xFF:
                data.append(0x00)
        acc &= (1 << n_acc) - 1

    for r in range(rows):
        for c in range(cols):
            if r == 0 and c == 0:
                pred = 1 << 15
            elif r == 0:
                pred = px[r, c - 1]
            elif c == 0:
                pred = px[r - 1, c]
            else:
                pred = px[r, c - 1]
            diff = int(px[r, c] - pred) % 65536
            if diff >= 32768:
                diff -= 65536
            category = 0 if diff == 0 else abs(diff).bit_length()
            put(category, 5)
            if 0 < category < 16:
                put(diff if diff > 0 else diff - 1, category)
    if n_acc:
        put((1 << (8 - n_acc)) - 1, 8 - n_acc)
    return bytes(out + data + b"\xff\xd9")


def csa_blob(elements: dict[str, list[float]]) -> bytes:
    """A Siemens CSA2 ("SV10") header holding numeric elements, as in (0029,1010)."""
    import struct

    out = bytearray(b"SV10\x04\x03\x02\x01" + struct.pack("<II", len(elements), 77))
    for name, values in elements.items():
        out += name.encode().ljust(64, b"\x00")
        out += struct.pack("<i4sii", len(values), b"FD\x00\x00", 0, len(values)) + struct.pack(
            "<i", 77
        )
        for value in values:
            text = f"{value:.8f}".encode() + b"\x00"
            out += struct.pack("<4i", len(text), len(text), 77, len(text))
            out += text.ljust((len(text) + 3) // 4 * 4, b"\x00")
    return bytes(out)


def mosaic_dataset(slices: Volume, *, per_row: int, csa: bytes | None = None) -> pydicom.Dataset:
    """One Siemens mosaic file holding the slices of ``slices`` (tile t = slice t)."""
    n, rows, cols = slices.shape
    mosaic = np.zeros((rows * per_row, cols * per_row), np.float32)
    for t in range(n):
        r, c = divmod(t, per_row)
        mosaic[r * rows : (r + 1) * rows, c * cols : (c + 1) * cols] = slices.array[t]
    image = Volume(mosaic[None], spacing=slices.spacing, direction=slices.direction)
    ds = datasets(image)[0]
    row, col = slices.direction[:, 2], slices.direction[:, 1]
    # the IPP of a mosaic is the corner of the whole mosaic image, not of tile 0
    corner = (
        np.asarray(slices.origin)
        - row * slices.spacing[2] * (mosaic.shape[1] - cols) / 2
        - col * slices.spacing[1] * (mosaic.shape[0] - rows) / 2
    )
    ds.ImagePositionPatient = [f"{v:.6f}" for v in corner]
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND", "MOSAIC"]
    ds.SpacingBetweenSlices = f"{slices.spacing[0]:g}"
    block = ds.private_block(0x0019, "SIEMENS MR HEADER", create=True)
    block.add_new(0x0A, "US", n)
    if csa is not None:
        ds.private_block(0x0029, "SIEMENS CSA HEADER", create=True).add_new(0x10, "OB", csa)
    return ds
