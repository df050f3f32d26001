"""The one image type of islet-imaging: a voxel array with its physical geometry and metadata."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np

from islet_imaging.errors import IsletImagingError

if TYPE_CHECKING:
    import SimpleITK as sitk

__all__ = ["Volume"]

_ORTHONORMAL_TOL = 1e-3


def _vector3(name: str, value: Any) -> tuple[float, float, float]:
    arr = np.asarray(value, dtype=float).reshape(-1)
    if arr.shape != (3,) or not np.all(np.isfinite(arr)):
        raise IsletImagingError("must be three finite numbers", tag=name, value=value)
    return (float(arr[0]), float(arr[1]), float(arr[2]))


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class Volume:
    """A 3D image or mask in physical space.

    Everything is given in array index order ``(z, y, x)``: ``array[k, j, i]``, ``spacing`` =
    (slice step, row step, column step) and the columns of ``direction`` are the unit vectors,
    in DICOM patient coordinates (LPS, mm), along array axes 0, 1 and 2. ``origin`` is the LPS
    position of the centre of voxel ``(0, 0, 0)``. Hence
    ``world = origin + direction @ (spacing * (k, j, i))``, which :attr:`affine` encodes.

    The instance is immutable: the array is made read-only and ``meta`` is a read-only mapping.
    Derive new images with :meth:`with_array` / :meth:`with_meta` so geometry is never lost.

    Parameters
    ----------
    array : ndarray, shape (nz, ny, nx)
        Voxel values. Images are usually float32; masks are bool or an integer label array.
    spacing : 3 floats
        Voxel size in mm along (z, y, x); all positive.
    origin : 3 floats
        LPS position (mm) of the centre of the first voxel.
    direction : (3, 3) array_like
        Orthonormal matrix whose columns are the LPS directions of array axes (z, y, x).
    meta : mapping
        Modality, UIDs, units, provenance... (see the loader for the keys it fills).

    Examples
    --------
    >>> import numpy as np
    >>> v = Volume(np.zeros((2, 3, 4), np.float32), spacing=(3.0, 0.5, 0.5))
    >>> v.shape, v.voxel_volume_ml
    ((2, 3, 4), 0.00075)
    >>> v.affine[:3, 3].tolist()
    [0.0, 0.0, 0.0]
    """

    array: np.ndarray
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: np.ndarray = dataclasses.field(default_factory=lambda: np.eye(3))
    meta: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        array = np.asarray(self.array)
        if array.ndim != 3:
            raise IsletImagingError(
                "a Volume holds a 3D array (z, y, x)",
                tag="array",
                value=array.shape,
                hint="split 4D data into a list of volumes",
            )
        array = array.view()
        array.flags.writeable = False
        spacing = _vector3("spacing", self.spacing)
        if min(spacing) <= 0:
            raise IsletImagingError("spacing must be positive (mm)", tag="spacing", value=spacing)
        origin = _vector3("origin", self.origin)
        direction = np.array(self.direction, dtype=float)
        if direction.shape != (3, 3) or not np.allclose(
            direction.T @ direction, np.eye(3), atol=_ORTHONORMAL_TOL
        ):
            raise IsletImagingError(
                "direction must be an orthonormal 3x3 matrix",
                tag="direction",
                value=np.round(direction, 4).tolist(),
            )
        direction.flags.writeable = False
        object.__setattr__(self, "array", array)
        object.__setattr__(self, "spacing", spacing)
        object.__setattr__(self, "origin", origin)
        object.__setattr__(self, "direction", direction)
        object.__setattr__(self, "meta", MappingProxyType(dict(self.meta)))

    # ------------------------------------------------------------------ geometry
    @property
    def shape(self) -> tuple[int, int, int]:
        """Array shape ``(nz, ny, nx)``."""
        return self.array.shape  # type: ignore[return-value]

    @property
    def affine(self) -> np.ndarray:
        """4x4 matrix mapping homogeneous indices ``(k, j, i, 1)`` to LPS mm."""
        affine = np.eye(4)
        affine[:3, :3] = self.direction * np.asarray(self.spacing)
        affine[:3, 3] = self.origin
        return affine

    @property
    def voxel_volume_ml(self) -> float:
        """Volume of one voxel in mL (1 mL = 1000 mm³)."""
        return float(np.prod(self.spacing)) / 1000.0

    @property
    def is_mask(self) -> bool:
        """True for bool or integer label arrays (resampled nearest-neighbour)."""
        return self.array.dtype == bool or (
            np.issubdtype(self.array.dtype, np.integer) and self.meta.get("kind") == "mask"
        )

    def index_to_world(self, indices: Any) -> np.ndarray:
        """Map voxel indices ``(..., 3)`` in (k, j, i) order to LPS mm ``(..., 3)``."""
        idx = np.asarray(indices, dtype=float)
        # a contiguous matrix lets NumPy use BLAS (same values, ~50x faster on many points)
        return idx @ np.ascontiguousarray(self.affine[:3, :3].T) + np.asarray(self.origin)

    def world_to_index(self, points: Any) -> np.ndarray:
        """Map LPS points ``(..., 3)`` in mm to continuous voxel indices (k, j, i)."""
        pts = np.asarray(points, dtype=float) - np.asarray(self.origin)
        return pts @ np.ascontiguousarray(np.linalg.inv(self.affine[:3, :3]).T)

    def same_grid(self, other: Volume, *, atol: float = 1e-3) -> bool:
        """True if ``other`` has the same shape and affine (within ``atol`` mm)."""
        return self.shape == other.shape and np.allclose(self.affine, other.affine, atol=atol)

    # ------------------------------------------------------------------ derivation
    def with_array(self, array: Any, **meta_updates: Any) -> Volume:
        """Return a Volume on the same grid holding ``array`` (same shape), meta updated."""
        array = np.asarray(array)
        if array.shape != self.shape:
            raise IsletImagingError(
                f"with_array needs an array of shape {self.shape}", tag="array", value=array.shape
            )
        return dataclasses.replace(self, array=array, meta={**self.meta, **meta_updates})

    def with_meta(self, **meta_updates: Any) -> Volume:
        """Return the same image with ``meta`` updated by ``meta_updates``."""
        return dataclasses.replace(self, meta={**self.meta, **meta_updates})

    def as_mask(self, **meta_updates: Any) -> Volume:
        """Return a mask Volume (``meta['kind'] = 'mask'``) from this array, same grid."""
        return self.with_meta(kind="mask", **meta_updates)

    # ------------------------------------------------------------------ SimpleITK
    def to_sitk(self) -> sitk.Image:
        """Convert to a SimpleITK image (see :mod:`islet_imaging.io._sitk`)."""
        from islet_imaging.io._sitk import to_sitk

        return to_sitk(self)

    @classmethod
    def from_sitk(cls, image: sitk.Image, meta: Mapping[str, Any] | None = None) -> Volume:
        """Build a Volume from a SimpleITK image (see :mod:`islet_imaging.io._sitk`)."""
        from islet_imaging.io._sitk import from_sitk

        return from_sitk(image, meta)

    def __repr__(self) -> str:
        spacing = ", ".join(f"{s:g}" for s in self.spacing)
        modality = self.meta.get("modality", "?")
        return (
            f"Volume(shape={self.shape}, dtype={self.array.dtype}, spacing=({spacing}) mm, "
            f"modality={modality})"
        )
