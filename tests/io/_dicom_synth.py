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
