"""NIfTI and NRRD read/write for volumes and masks, with geometry preserved.

SimpleITK does the format work and the LPS <-> RAS conversion of NIfTI headers. Writes are
atomic and never replace an existing file unless asked. JSON-serialisable metadata travels in
NRRD headers (key ``islet_imaging_meta``); NIfTI keeps geometry and values only.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from islet_imaging._atomic import atomic_path
from islet_imaging.errors import IsletImagingError
from islet_imaging.io._sitk import from_sitk, to_sitk
from islet_imaging.volume import Volume

__all__ = ["SUPPORTED_SUFFIXES", "read_mask", "read_volume", "split_suffix", "write_volume"]

SUPPORTED_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr")
_META_KEY = "islet_imaging_meta"


def split_suffix(path: str | os.PathLike) -> tuple[str, str]:
    """File name of ``path`` split into stem and image suffix (one of ``SUPPORTED_SUFFIXES``).

    The suffix keeps its case; it is ``""`` (and the stem is the whole name) when the file is
    not of a supported type.

    >>> split_suffix("out/graft_mask.NII.GZ")
    ('graft_mask', '.NII.GZ')
    >>> split_suffix("notes.txt")
    ('notes.txt', '')
    """
    name = Path(path).name
    for suffix in SUPPORTED_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)], name[-len(suffix) :]
    return name, ""


def _check_suffix(path: Path) -> None:
    if not path.name.lower().endswith(SUPPORTED_SUFFIXES):
        raise IsletImagingError(
            "unsupported file type",
            path=path,
            hint=f"use one of {', '.join(SUPPORTED_SUFFIXES)}",
        )


def _json_meta(meta: dict[str, Any]) -> str:
    kept = {}
    for key, value in meta.items():
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            continue
        kept[key] = value
    return json.dumps(kept, sort_keys=True)


def read_volume(path: str | os.PathLike) -> Volume:
    """Read a NIfTI (``.nii``, ``.nii.gz``) or NRRD (``.nrrd``, ``.nhdr``) file.

    Parameters
    ----------
    path
        The file to read.

    Returns
    -------
    Volume
        Geometry in LPS, array in (z, y, x) order; ``meta['source_file']`` is set, and NRRD
        files written by :func:`write_volume` also restore their JSON metadata.

    Raises
    ------
    IsletImagingError
        If the file is missing, of an unknown type or unreadable.
    """
    path = Path(path)
    _check_suffix(path)
    if not path.is_file():
        raise IsletImagingError("file not found", path=path)
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        first_line = str(exc).strip().splitlines()[-1] if str(exc).strip() else repr(exc)
        raise IsletImagingError(f"cannot read image: {first_line}", path=path) from exc
    meta: dict[str, Any] = {}
    if image.HasMetaDataKey(_META_KEY):
        meta.update(json.loads(image.GetMetaData(_META_KEY)))
    meta["source_file"] = str(path)
    return from_sitk(image, meta)


def read_mask(path: str | os.PathLike) -> Volume:
    """Read a mask or label map; the result is an integer Volume with ``meta['kind'] = 'mask'``.

    Raises
    ------
    IsletImagingError
        If the file holds non-integer values.
    """
    volume = read_volume(path)
    array = volume.array
    if not (array.dtype == bool or np.issubdtype(array.dtype, np.integer)):
        if not np.all(np.equal(np.mod(array, 1), 0)):
            raise IsletImagingError(
                "a mask must hold integer labels", path=path, value=str(array.dtype)
            )
        array = array.astype(np.int32)
    return volume.with_array(array, kind="mask")


def write_volume(
    volume: Volume, path: str | os.PathLike, *, overwrite: bool = False, compress: bool = True
) -> Path:
    """Write a Volume to NIfTI or NRRD atomically.

    Boolean masks are stored as uint8. Geometry (spacing, origin, oblique direction) is kept
    exactly; NIfTI stores it in RAS as the format requires.

    Parameters
    ----------
    volume
        The image or mask.
    path
        Destination; the suffix chooses the format.
    overwrite
        Replace an existing file (default: refuse).
    compress
        Use compression where the format allows it.

    Returns
    -------
    Path
        The written file.
    """
    path = Path(path)
    _check_suffix(path)
    image = to_sitk(volume)
    if path.name.lower().endswith((".nrrd", ".nhdr")):
        image.SetMetaData(_META_KEY, _json_meta(dict(volume.meta)))
    with atomic_path(path, overwrite=overwrite) as tmp:
        sitk.WriteImage(image, str(tmp), useCompression=compress)
    return path
