"""Mask clean-up in physical units: islands, holes, minimum deposit volume (mm³, never voxels).

All functions take and return :class:`~islet_imaging.volume.Volume` masks on the same grid.
Connectivity is "full" (26-neighbourhood in 3D): two voxels touching by a corner belong to
the same object, as in 3D Slicer's islands tool.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage as ndi

from islet_imaging.errors import SegmentationError
from islet_imaging.segment._common import nonzero_box
from islet_imaging.volume import Volume

__all__ = [
    "ball_footprint",
    "fill_holes",
    "keep_largest",
    "label_components",
    "remove_small_objects",
    "seeds_to_indices",
]

_FULL = np.ones((3, 3, 3), bool)


def _bool(mask: Volume | np.ndarray) -> np.ndarray:
    array = mask.array if isinstance(mask, Volume) else np.asarray(mask)
    return array.astype(bool, copy=False)


def label_components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Label the 26-connected components of a boolean array; return ``(labels int32, n)``."""
    labels, n = ndi.label(np.asarray(mask, bool), structure=_FULL)
    return labels.astype(np.int32, copy=False), int(n)


def _as_mask(reference: Volume, array: np.ndarray, **meta) -> Volume:
    return reference.with_array(array, kind="mask", **meta)


def remove_small_objects(mask: Volume, *, min_volume_mm3: float) -> Volume:
    """Drop connected components smaller than ``min_volume_mm3`` (mm³).

    Works on a boolean mask (components are found) or an integer label Volume (each label is
    one object and is dropped, i.e. set to 0, when too small).

    Parameters
    ----------
    mask : Volume
        Boolean mask or label map.
    min_volume_mm3 : float
        Smallest kept object volume in mm³ (voxel count × voxel volume ≥ this value).

    Examples
    --------
    >>> import numpy as np
    >>> from islet_imaging.volume import Volume
    >>> a = np.zeros((1, 5, 5), bool); a[0, 0, 0] = True; a[0, 2:5, 2:5] = True
    >>> m = Volume(a, spacing=(2.0, 1.0, 1.0))
    >>> int(remove_small_objects(m, min_volume_mm3=5.0).array.sum())
    9
    """
    if min_volume_mm3 < 0:
        raise SegmentationError("must be >= 0 mm³", tag="min_volume_mm3", value=min_volume_mm3)
    voxel_mm3 = float(np.prod(mask.spacing))
    array = mask.array
    out = np.zeros(mask.shape, array.dtype)
    box = nonzero_box(array)
    if box is None:
        return _as_mask(mask, out)
    # everything outside the box of the non-zero voxels is background: work inside it
    crop = array[box]
    if array.dtype == bool:
        labels, n = label_components(crop)
    else:
        labels, n = crop.astype(np.int32, copy=False), int(array.max(initial=0))
    if n == 0:
        return _as_mask(mask, out)
    counts = np.bincount(labels.ravel(), minlength=n + 1)
    keep = counts * voxel_mm3 >= min_volume_mm3
    keep[0] = False
    if array.dtype == bool:
        out[box] = keep[labels]
    else:
        out[box] = np.where(keep[labels], crop, 0).astype(array.dtype)
    return _as_mask(mask, out)


def fill_holes(mask: Volume) -> Volume:
    """Fill cavities fully enclosed by the mask (3D binary hole filling)."""
    return _as_mask(mask, ndi.binary_fill_holes(_bool(mask)))


def keep_largest(mask: Volume) -> Volume:
    """Keep only the largest connected component (empty stays empty)."""
    labels, n = label_components(_bool(mask))
    if n <= 1:
        return _as_mask(mask, labels > 0)
    counts = np.bincount(labels.ravel())
    counts[0] = 0
    return _as_mask(mask, labels == int(np.argmax(counts)))


def seeds_to_indices(volume: Volume, seeds_mm: Sequence[Sequence[float]]) -> np.ndarray:
    """Convert seed points (LPS mm, shape (n, 3)) to integer voxel indices (k, j, i), (n, 3).

    Raises
    ------
    SegmentationError
        If a seed lies outside the image.
    """
    points = np.asarray(seeds_mm, dtype=float).reshape(-1, 3)
    indices = np.rint(volume.world_to_index(points)).astype(int)
    for point, index in zip(points, indices, strict=True):
        if np.any(index < 0) or np.any(index >= np.asarray(volume.shape)):
            raise SegmentationError(
                "seed point lies outside the image",
                tag="seeds_mm",
                value=point.round(2).tolist(),
                hint="give seeds in LPS millimetres inside the image field of view",
            )
    return indices


def ball_footprint(spacing: Sequence[float], radius_mm: float) -> np.ndarray:
    """Boolean footprint of a ball of ``radius_mm`` on a grid of ``spacing`` (z, y, x) mm.

    A voxel belongs to the ball when its centre is within ``radius_mm`` of the centre voxel's
    centre; at least the centre voxel is included.
    """
    half = [int(np.floor(radius_mm / s)) for s in spacing]
    grids = np.ogrid[tuple(slice(-h, h + 1) for h in half)]
    dist2 = sum((g * s) ** 2 for g, s in zip(grids, spacing, strict=True))
    return dist2 <= radius_mm**2 + 1e-9
