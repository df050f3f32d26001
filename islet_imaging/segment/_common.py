"""Helpers shared by the segmentation modules: enums from strings, mask provenance, resampling."""

from __future__ import annotations

import enum
from typing import Any, TypeVar

import numpy as np

from islet_imaging.errors import SegmentationError
from islet_imaging.register import resample_like
from islet_imaging.volume import Volume

E = TypeVar("E", bound=enum.Enum)


class StrEnum(enum.StrEnum):
    """A string Enum whose members are also found from their value, case/dash-insensitively."""

    @classmethod
    def _missing_(cls, value: object) -> Any:
        if isinstance(value, str):
            key = value.strip().lower().replace("-", "_").replace(" ", "_")
            for member in cls:
                if member.value == key:
                    return member
        return None


def as_enum(cls: type[E], value: E | str, name: str) -> E:
    """Return ``cls(value)`` or raise :class:`SegmentationError` naming ``name`` and the choices."""
    try:
        return cls(value)
    except ValueError:
        choices = ", ".join(repr(m.value) for m in cls)
        raise SegmentationError(
            f"unknown {name}", tag=name, value=value, hint=f"choose one of {choices}"
        ) from None


def mask_volume(
    source: Volume, array: np.ndarray, *, method: str, parameters: dict[str, Any], **extra: Any
) -> Volume:
    """A mask Volume on ``source``'s grid with provenance meta (not the source's headers)."""
    meta = {
        "kind": "mask",
        "method": method,
        "parameters": parameters,
        "source_series_uid": source.meta.get("series_uid"),
        "frame_of_reference_uid": source.meta.get("frame_of_reference_uid"),
        "study_uid": source.meta.get("study_uid"),
        "source_modality": source.meta.get("modality"),
        **extra,
    }
    return Volume(array, source.spacing, source.origin, source.direction, meta)


def resample_mask_like(mask: Volume, reference: Volume) -> Volume:
    """Resample a mask onto ``reference``'s grid with nearest-neighbour interpolation."""
    if mask.same_grid(reference):
        return mask
    out = resample_like(mask, reference, interpolation="nearest")
    return out.with_array(out.array.astype(mask.array.dtype, copy=False), **dict(mask.meta))


def nonzero_box(array: np.ndarray) -> tuple[slice, ...] | None:
    """Bounding box (slices) of the non-zero voxels of ``array``; None when there is none."""
    nonzero = array if array.dtype == bool else array != 0
    box = []
    for axis in range(array.ndim):
        hit = np.flatnonzero(nonzero.any(axis=tuple(a for a in range(array.ndim) if a != axis)))
        if hit.size == 0:
            return None
        box.append(slice(int(hit[0]), int(hit[-1]) + 1))
    return tuple(box)


def check_same_grid(a: Volume, b: Volume, name: str) -> None:
    """Raise :class:`SegmentationError` if ``b`` (parameter ``name``) is not on ``a``'s grid."""
    if not a.same_grid(b):
        raise SegmentationError(
            "mask is not on the image grid",
            tag=name,
            value=f"shape {b.shape}",
            hint="resample it with islet_imaging.register.resample_like(mask, image)",
        )
