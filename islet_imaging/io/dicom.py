"""Load DICOM series into :class:`~islet_imaging.volume.Volume` objects with exact geometry.

The loader reads the header of every file, decodes the few header values it needs with a fast
element walker (pydicom parses the full header only when ``meta['headers']`` is read), groups
the images by SeriesInstanceUID, splits 4D content (echoes, magnitude/phase, dynamics, stacks,
orientations) into separate 3D stacks, orders slices along the slice normal, checks that they
form a regular grid, and scales each slice by its own RescaleSlope/RescaleIntercept into
float32. Uncompressed pixel data of large files are read only then, at the offset the walker
found, through a small reused buffer; compressed transfer syntaxes are decoded by pydicom's
pixel handlers.

``meta`` of each volume holds: ``modality, series_uid, study_uid, patient_id,
frame_of_reference_uid, series_description, series_number, study_date, series_date,
series_time, units`` (DICOM Units such as ``"BQML"``, else None), ``echo_number, image_type,
source_files`` (slice order), ``headers`` (pydicom datasets without PixelData, one per slice;
a 1-tuple for an enhanced multi-frame object), ``frame_numbers`` (1-based, multi-frame only,
else None), ``rescale`` ((slope, intercept) per slice), ``split_keys`` (what separated this
volume from the others of its series), ``geometry_warnings`` and ``skipped_files``. After
``geometry="resample"`` the per-slice keys describe the source slices, not the output grid.
"""

from __future__ import annotations

import enum
import os
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from islet_imaging.errors import DicomSeriesError, IsletImagingError
from islet_imaging.io._dicom_files import DicomFile, LazyHeaders, text_value, thread_pool
from islet_imaging.io._dicom_frames import Frame, file_frames, split_frames
from islet_imaging.io._dicom_geometry import GeometryMode, Stack, plan_stack, resample_stack
from islet_imaging.io._dicom_pixels import PixelReader
from islet_imaging.io.discover import FileProblem, SeriesEntry, list_files, read_headers
from islet_imaging.volume import Volume

__all__ = ["GeometryMode", "SuvKind", "load_series", "load_volumes"]

# SOP classes that carry pixel data but are not images to stack (handled elsewhere)
_NOT_VOLUMES = {
    "1.2.840.10008.5.1.4.1.1.66.4": "Segmentation Storage",
    "1.2.840.10008.5.1.4.1.1.481.2": "RT Dose Storage",
    "1.2.840.10008.5.1.4.1.1.104.1": "Encapsulated PDF Storage",
}


class SuvKind(enum.Enum):
    """SUV kinds accepted by ``units=``, computed by :func:`islet_imaging.io.pet.to_suv`."""

    SUVBW = "suvbw"
    SUVLBM = "suvlbm"
    SUVBSA = "suvbsa"
    SUVIBW = "suvibw"

    @property
    def kind(self) -> str:
        """The ``kind`` argument of :func:`~islet_imaging.io.pet.to_suv`."""
        return self.value[3:]


Source = str | os.PathLike | Sequence[str | os.PathLike] | SeriesEntry


def _resolve_files(source: Source) -> tuple[list[str], list[FileProblem], str | None]:
    if isinstance(source, SeriesEntry):
        return list(source.files), list(source.problems), source.series_uid
    if isinstance(source, str | os.PathLike):
        files, problems = list_files(source)
        return files, problems, None
    files = [os.fspath(p) for p in source]
    if not files:
        raise IsletImagingError("no files given", tag="source", value=[])
    return files, [], None


def _enum(cls: type[enum.Enum], value: Any, name: str) -> Any:
    try:
        return cls(value.lower() if isinstance(value, str) else value)
    except ValueError:
        choices = ", ".join(repr(m.value) for m in cls)
        raise IsletImagingError(
            f"unknown {name}", tag=name, value=value, hint=f"use one of {choices}"
        ) from None


def load_volumes(
    source: Source,
    *,
    series_uid: str | None = None,
    units: str | SuvKind | None = None,
    geometry: str | GeometryMode = "strict",
    split: bool = True,
) -> list[Volume]:
    """Load every volume of the DICOM images in ``source``; always returns a list.

    Parameters
    ----------
    source
        A folder (recursive), a single file, a DICOMDIR, a .zip, a list of files, or a
        :class:`~islet_imaging.io.discover.SeriesEntry` from :func:`~islet_imaging.scan`.
    series_uid
        Keep only this SeriesInstanceUID.
    units
        None: stored values × RescaleSlope + RescaleIntercept (Bq/mL for PET in BQML). Or an
        SUV kind, ``"suvbw"``, ``"suvlbm"``, ``"suvbsa"``, ``"suvibw"``, computed by
        :func:`islet_imaging.io.pet.to_suv`.
    geometry
        ``"strict"`` raises :class:`~islet_imaging.errors.GeometryError` on missing slices,
        duplicates, irregular spacing, gantry tilt or stray orientations; ``"resample"``
        interpolates onto a regular grid along the slice normal; ``"accept"`` keeps the slices
        as they are. Both record what they did in ``meta['geometry_warnings']``.
    split
        Split 4D content (echoes, magnitude/phase, dynamics, orientations) into separate
        volumes; with False such a series raises a GeometryError.

    Returns
    -------
    list of Volume
        float32 arrays (z, y, x), sorted by series number, then echo, image type and time.

    Raises
    ------
    DicomSeriesError
        No DICOM image in ``source``, unknown ``series_uid``, undecodable pixel data.
    GeometryError
        The slices of a series do not form a regular grid (strict mode).
    """
    mode = _enum(GeometryMode, geometry, "geometry")
    suv = None if units is None else _enum(SuvKind, units, "units")
    files, problems, entry_uid = _resolve_files(source)
    if series_uid is not None and entry_uid is None and len(files) > 1:
        # read the headers first so that only the files of the wanted series are read whole
        heads, bad = read_headers(files, headers_only=True, progress=False)
        files = [d.path for d in heads if d.get("SeriesInstanceUID") == series_uid]
        problems = problems + bad
    series_uid = series_uid or entry_uid
    dicoms, bad = read_headers(files, headers_only=False, progress=False)
    problems = problems + bad
    images: dict[str, list[DicomFile]] = defaultdict(list)
    for dicom in dicoms:
        if not dicom.has_pixels:
            continue
        if str(dicom.get("SOPClassUID", "")) in _NOT_VOLUMES:
            continue
        uid = str(dicom.get("SeriesInstanceUID", "") or "")
        if series_uid is not None and uid != series_uid:
            continue
        images[uid].append(dicom)
    where = source.series_uid if isinstance(source, SeriesEntry) else _describe(source)
    if not images:
        reasons = "; ".join(f"{p.path}: {p.reason}" for p in problems[:3])
        raise DicomSeriesError(
            "no DICOM image found"
            + (f" for SeriesInstanceUID {series_uid}" if series_uid else "")
            + (f" ({reasons})" if reasons else ""),
            path=where,
            tag="SeriesInstanceUID" if series_uid else None,
            hint="run `islet-imaging scan` to see the series and the unreadable files",
        )
    volumes: list[Volume] = []
    pixels = PixelReader()
    order = sorted(images, key=lambda u: (_series_no(images[u][0]), u))
    for uid in order:
        volumes.extend(_load_one_series(images[uid], pixels, mode, split, problems))
    if suv is not None:
        from islet_imaging.io.pet import to_suv

        volumes = [to_suv(v, kind=suv.kind) for v in volumes]
    return volumes


def load_series(
    source: Source,
    *,
    series_uid: str | None = None,
    units: str | SuvKind | None = None,
    geometry: str | GeometryMode = "strict",
    split: bool = True,
) -> Volume | list[Volume]:
    """Load one DICOM series: a Volume, or a list when the series holds several volumes.

    Same parameters as :func:`load_volumes`. ``source`` must contain a single series unless
    ``series_uid`` picks one (a :class:`~islet_imaging.io.discover.SeriesEntry` does).

    Raises
    ------
    DicomSeriesError
        If ``source`` holds several series and none was chosen (the message lists them).

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> from islet_imaging import GeometryError, Volume
    >>> from islet_imaging.io.dicom_write import write_series
    >>> axial = [[0, 0, 1], [0, 1, 0], [1, 0, 0]]  # slice normal, column and row cosines
    >>> vol = Volume(np.arange(64, dtype=np.float32).reshape(4, 4, 4), spacing=(5, 1, 1),
    ...              origin=(-10, 20, 30), direction=axial)
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     files = write_series(vol, tmp, modality="MR")
    ...     files[1].unlink()  # a missing slice
    ...     try:
    ...         load_series(tmp)
    ...     except GeometryError as exc:
    ...         print("refused:", exc.tag)
    ...     mr = load_series(tmp, geometry="resample")
    refused: ImagePositionPatient
    >>> mr.shape, mr.spacing, mr.origin, float(mr.array[1, 0, 0])
    ((4, 4, 4), (5.0, 1.0, 1.0), (-10.0, 20.0, 30.0), 16.0)
    """
    volumes = load_volumes(
        source, series_uid=series_uid, units=units, geometry=geometry, split=split
    )
    uids = list(dict.fromkeys(v.meta["series_uid"] for v in volumes))
    if len(uids) > 1:
        listing = "; ".join(
            f"{u} (#{v.meta['series_number']} {v.meta['series_description']!s})"
            for u in uids
            for v in [next(x for x in volumes if x.meta["series_uid"] == u)]
        )
        raise DicomSeriesError(
            f"{len(uids)} series found: {listing}",
            path=_describe(source),
            tag="SeriesInstanceUID",
            hint="pass series_uid=..., or use load_volumes() to load them all",
        )
    return volumes[0] if len(volumes) == 1 else volumes


def _describe(source: Source) -> str:
    if isinstance(source, str | os.PathLike):
        return os.fspath(source)
    if isinstance(source, SeriesEntry):
        return source.series_uid
    files = [os.fspath(p) for p in source]
    return files[0] if len(files) == 1 else f"{files[0]} (+{len(files) - 1} files)"


def _series_no(dicom: DicomFile) -> float:
    value = dicom.get("SeriesNumber")
    return float(value) if isinstance(value, int | float) else float("inf")


def _load_one_series(
    dicoms: list[DicomFile],
    pixels: PixelReader,
    mode: GeometryMode,
    split: bool,
    problems: list[FileProblem],
) -> list[Volume]:
    dicoms = sorted(dicoms, key=lambda d: d.path)
    frames: list[Frame] = [f for d in dicoms for f in file_frames(d)]
    stacks = split_frames(frames, split=split, accept_mixed=mode is GeometryMode.ACCEPT)
    volumes = []
    for keys, stack_frames in stacks:
        stack = plan_stack(stack_frames, mode)
        volumes.append(_build_volume(stack, keys, pixels, problems))
    return volumes


def _read_stack(stack: Stack, pixels: PixelReader) -> np.ndarray:
    first = stack.frames[0]
    out = np.empty((len(stack.frames), first.rows, first.columns), dtype=np.float32)

    def chunk(ks: range) -> None:
        for k in ks:
            pixels.read_into(stack.frames[k], out[k])

    n = len(stack.frames)
    if n > 16:  # a few big tasks: numpy releases the GIL while converting
        step = -(-n // 4)
        list(thread_pool().map(chunk, [range(i, min(i + step, n)) for i in range(0, n, step)]))
    else:
        chunk(range(n))
    if stack.resample:
        out = resample_stack(stack, out)
    return out


def _build_volume(
    stack: Stack, keys: dict[str, Any], pixels: PixelReader, problems: list[FileProblem]
) -> Volume:
    array = _read_stack(stack, pixels)
    frames = stack.frames
    first = frames[0].file
    enhanced = first.is_enhanced
    if enhanced:
        headers: Sequence[Any] = (first.dataset(),)
    else:
        headers = LazyHeaders(
            (f.file.data[: f.file.header.header_end], f.path)
            if f.file.header is not None
            else f.file.dataset()
            for f in frames
        )
    image_type = keys.get("image_type") or frames[0].keys.get("image_type")
    echo = keys.get("echo_number", frames[0].keys.get("echo_number"))
    meta = {
        "modality": first.get("Modality"),
        "series_uid": first.get("SeriesInstanceUID"),
        "study_uid": first.get("StudyInstanceUID"),
        "patient_id": first.get("PatientID"),
        "frame_of_reference_uid": first.get("FrameOfReferenceUID"),
        "series_description": first.get("SeriesDescription"),
        "series_number": first.get("SeriesNumber"),
        "study_date": first.get("StudyDate"),
        "series_date": first.get("SeriesDate"),
        "series_time": first.get("SeriesTime"),
        "units": first.get("Units"),
        "echo_number": echo,
        "image_type": tuple(image_type) if image_type else None,
        "photometric": first.get("PhotometricInterpretation"),
        "source_files": tuple(f.path for f in frames),
        "headers": headers,
        "frame_numbers": tuple(f.frame_number for f in frames)
        if frames[0].frame_number is not None
        else None,
        "rescale": tuple((f.slope, f.intercept) for f in frames),
        "split_keys": {k: v for k, v in keys.items() if v is not None},
        "geometry_warnings": tuple(stack.warnings),
        "skipped_files": tuple((p.path, p.reason) for p in problems),
    }
    meta = {
        k: (text_value(v) if k in ("series_description", "study_date") else v)
        for k, v in meta.items()
    }
    if isinstance(meta["series_number"], tuple):
        meta["series_number"] = meta["series_number"][0]
    return Volume(
        array, spacing=stack.spacing, origin=stack.origin, direction=stack.direction, meta=meta
    )
