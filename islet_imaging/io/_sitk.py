"""Volume <-> SimpleITK: the ONLY place where axis order and direction are converted.

SimpleITK orders everything (x, y, z): ``GetSize``, ``GetSpacing`` and the columns of
``GetDirection`` follow the image index (i, j, k), while NumPy arrays from
``GetArrayFromImage`` are (k, j, i). A :class:`~islet_imaging.volume.Volume` keeps everything in
array order (z, y, x), so spacing and direction columns are reversed here and nowhere else.
Both use LPS patient coordinates, so no sign flips are needed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import SimpleITK as sitk

from islet_imaging.volume import Volume

__all__ = ["from_sitk", "to_sitk"]


def to_sitk(volume: Volume) -> sitk.Image:
    """Convert a :class:`Volume` to a ``SimpleITK.Image`` with identical physical geometry.

    Boolean masks become ``sitkUInt8``.
    """
    array = volume.array.astype(np.uint8) if volume.array.dtype == bool else volume.array
    image = sitk.GetImageFromArray(np.ascontiguousarray(array))
    image.SetSpacing(tuple(reversed(volume.spacing)))
    image.SetOrigin(volume.origin)
    image.SetDirection(tuple(np.asarray(volume.direction)[:, ::-1].ravel()))
    return image


def from_sitk(image: sitk.Image, meta: Mapping[str, Any] | None = None) -> Volume:
    """Convert a 3D ``SimpleITK.Image`` to a :class:`Volume`.

    A 4D image with a singleton fourth dimension is squeezed to 3D.
    """
    if image.GetDimension() == 4 and image.GetSize()[3] == 1:
        size = list(image.GetSize())
        size[3] = 0
        image = sitk.Extract(image, size, [0, 0, 0, 0])
    if image.GetDimension() != 3:
        from islet_imaging.errors import IsletImagingError

        raise IsletImagingError(
            "only 3D images can become a Volume", tag="dimension", value=image.GetDimension()
        )
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)[:, ::-1]
    return Volume(
        sitk.GetArrayFromImage(image),
        spacing=tuple(reversed(image.GetSpacing())),
        origin=image.GetOrigin(),
        direction=direction,
        meta=dict(meta or {}),
    )
