"""Turn DICOM files into 2D frames (one per slice image) and split them into 3D stacks.

A classic file gives one frame; an enhanced multi-frame object gives one frame per item of its
Per-frame Functional Groups (geometry, rescale, echo, temporal position, stack); a Siemens
mosaic gives one frame per tile. Frames of one series are then split into stacks that can each
form a 3D volume: by orientation and matrix always, and (``split=True``) by the attributes that
make a 4D series (echo, image type, temporal position, stack, b-value, repeated positions).
"""

from __future__ import annotations

import dataclasses
import math
import struct
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from islet_imaging.errors import GeometryError
from islet_imaging.io._dicom_files import DicomFile

__all__ = ["Frame", "file_frames", "orientation_label", "split_frames"]

_IOP_TOL = 1e-3


@dataclasses.dataclass(slots=True, eq=False)
class Frame:
    """One 2D image: where it is, how to scale it, and which 3D/4D volume it belongs to."""

    file: DicomFile
    index: int  # frame index in the file's pixel data (0 for single-frame files)
    frame_number: int | None  # 1-based frame number in a multi-frame object, else None
    position: np.ndarray | None  # ImagePositionPatient, LPS mm
    orientation: np.ndarray | None  # ImageOrientationPatient (6,)
    pixel_spacing: tuple[float, float] | None  # (row step, column step) mm
    rows: int
    columns: int
    slope: float
    intercept: float
    keys: dict[str, Any]  # split keys: echo_number, image_type, temporal, stack, b_value
    times: tuple | None = None  # ordering of repeated acquisitions at one position (lazy)
    mosaic: tuple[int, int] | None = None  # (tile index, tiles per row) for Siemens mosaics

    @property
    def path(self) -> str:
        return self.file.path


def orientation_label(iop: Sequence[float] | None) -> str:
    """``'axial'``, ``'sagittal'``, ``'coronal'`` or ``'oblique'`` from ImageOrientationPatient.

    A plane is named after the patient axis its normal is within about 10 degrees of.

    Examples
    --------
    >>> orientation_label([1, 0, 0, 0, 1, 0])
    'axial'
    >>> orientation_label([0, 1, 0, 0, 0, -1])
    'sagittal'
    """
    if iop is None or len(iop) != 6:
        return "unknown"
    normal = np.cross(np.asarray(iop[:3], float), np.asarray(iop[3:], float))
    norm = np.linalg.norm(normal)
    if norm == 0:
        return "unknown"
    normal = np.abs(normal / norm)
    axis = int(np.argmax(normal))
    if normal[axis] < math.cos(math.radians(10)):
        return "oblique"
    return ("sagittal", "coronal", "axial")[axis]


def _floats(value: Any, n: int) -> np.ndarray | None:
    if value is None:
        return None
    try:
        if isinstance(value, str | bytes | int | float):
            values = [float(value)]
        else:  # tuple, list or pydicom MultiValue
            values = [float(v) for v in value]
    except (TypeError, ValueError):
        return None
    if len(values) != n or not all(map(math.isfinite, values)):
        return None
    return np.array(values)


def _num(value: Any, default: float) -> float:
    if value is None:
        return default
    if isinstance(value, tuple):
        value = value[0]
    try:
        out = float(value)
    except (TypeError, ValueError):
        return default
    return out if math.isfinite(out) else default


def _image_type(value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return (value,)
    return tuple(str(v) for v in value)


def file_frames(file: DicomFile) -> list[Frame]:
    """The frames of one image file (classic, legacy multi-frame, enhanced, mosaic)."""
    if file.is_enhanced:
        return _enhanced_frames(file)
    rows = int(file.get("Rows", 0))
    columns = int(file.get("Columns", 0))
    iop = _floats(file.get("ImageOrientationPatient"), 6)
    ipp = _floats(file.get("ImagePositionPatient"), 3)
    spacing = _floats(file.get("PixelSpacing"), 2)
    image_type = _image_type(file.get("ImageType"))
    keys = {
        "echo_number": file.get("EchoNumbers"),
        "image_type": image_type,
        "temporal": file.get("TemporalPositionIdentifier"),
        "b_value": file.get("DiffusionBValue"),
    }
    common = dict(
        file=file,
        orientation=iop,
        pixel_spacing=None if spacing is None else (float(spacing[0]), float(spacing[1])),
        slope=_num(file.get("RescaleSlope"), 1.0),
        intercept=_num(file.get("RescaleIntercept"), 0.0),
        keys=keys,
    )
    n_mosaic = _mosaic_count(file, image_type)
    if n_mosaic:
        return _mosaic_frames(file, n_mosaic, rows, columns, ipp, common)
    n_frames = int(_num(file.get("NumberOfFrames"), 1))
    if n_frames <= 1:
        return [
            Frame(index=0, frame_number=None, position=ipp, rows=rows, columns=columns, **common)
        ]
    # Legacy multi-frame without functional groups: frames are successive slices along the
    # normal, SpacingBetweenSlices apart (e.g. NM, old MR exports).
    step = _num(file.get("SpacingBetweenSlices"), _num(file.get("SliceThickness"), math.nan))
    frames = []
    for f in range(n_frames):
        pos = None
        if ipp is not None and iop is not None and math.isfinite(step):
            pos = ipp + f * step * np.cross(iop[:3], iop[3:])
        frames.append(
            Frame(index=f, frame_number=f + 1, position=pos, rows=rows, columns=columns, **common)
        )
    return frames


def frame_times(frame: Frame) -> tuple:
    """Attributes ordering repeated acquisitions of one position (classic files).

    (FrameReferenceTime, TriggerTime, AcquisitionTime in s, AcquisitionNumber, InstanceNumber)
    """
    if frame.times is None:
        file = frame.file
        frame.times = (
            _num(file.get("FrameReferenceTime"), math.nan),
            _num(file.get("TriggerTime"), math.nan),
            _time_seconds(file.get("AcquisitionTime")),
            _num(file.get("AcquisitionNumber"), math.nan),
            _num(file.get("InstanceNumber"), math.nan),
        )
    return frame.times


def _time_seconds(value: Any) -> float:
    if not value:
        return math.nan
    text = str(value[0] if isinstance(value, tuple) else value).replace(":", "")
    try:
        hh, mm, ss = int(text[0:2]), int(text[2:4] or 0), float(text[4:] or 0)
    except ValueError:
        return math.nan
    return hh * 3600 + mm * 60 + ss


# ---------------------------------------------------------------------------------- mosaic
def _mosaic_count(file: DicomFile, image_type: tuple[str, ...] | None) -> int:
    if not image_type or "MOSAIC" not in image_type:
        return 0
    creator = file.get("SiemensMRHeaderCreator")
    if creator is not None and "SIEMENS MR HEADER" not in str(creator).upper():
        return 0
    n = file.get("NumberOfImagesInMosaic")
    if n is None:
        csa = file.get("CSAImageHeaderInfo")
        n = csa_value(csa, "NumberOfImagesInMosaic") if csa else None
        n = n[0] if n else None
    return int(n) if n else 0


def csa_value(blob: bytes | None, name: str) -> list[float] | None:
    """Numeric values of element ``name`` in a Siemens CSA2 header blob, or None."""
    if not blob or blob[:4] != b"SV10":
        return None
    try:
        n_tags = struct.unpack_from("<I", blob, 8)[0]
        pos = 16
        for _ in range(min(n_tags, 1000)):
            tag_name = blob[pos : pos + 64].split(b"\x00", 1)[0].decode("ascii", "replace")
            n_items = struct.unpack_from("<i", blob, pos + 76)[0]
            pos += 84
            values = []
            for _ in range(max(n_items, 0)):
                length = struct.unpack_from("<i", blob, pos + 4)[0]
                pos += 16
                if length > 0:
                    text = blob[pos : pos + length].split(b"\x00", 1)[0].strip()
                    if text:
                        values.append(text.decode("ascii", "replace"))
                pos += (length + 3) // 4 * 4
            if tag_name == name:
                return [float(v) for v in values] if values else None
    except (struct.error, ValueError):
        return None
    return None


def _mosaic_frames(
    file: DicomFile, n: int, rows: int, columns: int, ipp: np.ndarray | None, common: dict
) -> list[Frame]:
    per_row = math.ceil(math.sqrt(n))
    tile_rows, tile_cols = rows // per_row, columns // per_row
    iop, spacing = common["orientation"], common["pixel_spacing"]
    frames = []
    step = _num(file.get("SpacingBetweenSlices"), _num(file.get("SliceThickness"), math.nan))
    normal = None
    if iop is not None:
        normal = np.cross(iop[:3], iop[3:])
        csa_normal = csa_value(file.get("CSAImageHeaderInfo"), "SliceNormalVector")
        if csa_normal and len(csa_normal) == 3 and float(np.dot(csa_normal, normal)) < 0:
            normal = -normal
    for t in range(n):
        pos = None
        if ipp is not None and iop is not None and spacing is not None and math.isfinite(step):
            # IPP of a mosaic is the corner of the whole mosaic image; move it to tile 0
            corner = (
                ipp
                + iop[:3] * spacing[1] * (columns - tile_cols) / 2
                + iop[3:] * spacing[0] * (rows - tile_rows) / 2
            )
            pos = corner + t * step * normal
        frames.append(
            Frame(
                index=0,
                frame_number=None,
                position=pos,
                rows=tile_rows,
                columns=tile_cols,
                mosaic=(t, per_row),
                **common,
            )
        )
    return frames


# -------------------------------------------------------------------------------- enhanced
def _item(ds: Dataset | None, keyword: str) -> Dataset | None:
    if ds is None:
        return None
    seq = ds.get(keyword)
    return seq[0] if seq else None


def _group_value(groups: Sequence[Dataset | None], seq: str, keyword: str) -> Any:
    for group in groups:
        item = _item(group, seq)
        if item is not None and keyword in item and item[keyword].value not in (None, ""):
            return item[keyword].value
    return None


def _enhanced_frames(file: DicomFile) -> list[Frame]:
    ds = file.dataset()
    shared = _item(ds, "SharedFunctionalGroupsSequence")
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
    n_frames = int(_num(ds.get("NumberOfFrames"), 1))
    rows, columns = int(ds.get("Rows", 0)), int(ds.get("Columns", 0))
    top_type = _image_type(ds.get("ImageType"))
    frames = []
    for f in range(n_frames):
        groups = (per_frame[f] if f < len(per_frame) else None, shared)
        spacing = _floats(_group_value(groups, "PixelMeasuresSequence", "PixelSpacing"), 2)
        content = _item(groups[0], "FrameContentSequence")
        frame_type = None
        for seq in ("MRImageFrameTypeSequence", "PETFrameTypeSequence", "CTImageFrameTypeSequence"):
            frame_type = frame_type or _image_type(_group_value(groups, seq, "FrameType"))
        echo = _group_value(groups, "MREchoSequence", "EffectiveEchoTime")
        b_value = _group_value(groups, "MRDiffusionSequence", "DiffusionBValue")
        temporal = content.get("TemporalPositionIndex") if content is not None else None
        stack = content.get("StackID") if content is not None else None
        acq_time = content.get("FrameAcquisitionDateTime") if content is not None else None
        frames.append(
            Frame(
                file=file,
                index=f,
                frame_number=f + 1,
                position=_floats(
                    _group_value(groups, "PlanePositionSequence", "ImagePositionPatient"), 3
                ),
                orientation=_floats(
                    _group_value(groups, "PlaneOrientationSequence", "ImageOrientationPatient"), 6
                ),
                pixel_spacing=None if spacing is None else (float(spacing[0]), float(spacing[1])),
                rows=rows,
                columns=columns,
                slope=_num(
                    _group_value(groups, "PixelValueTransformationSequence", "RescaleSlope"),
                    _num(ds.get("RescaleSlope"), 1.0),
                ),
                intercept=_num(
                    _group_value(groups, "PixelValueTransformationSequence", "RescaleIntercept"),
                    _num(ds.get("RescaleIntercept"), 0.0),
                ),
                keys={
                    "echo_number": None if echo is None else float(echo),
                    "image_type": frame_type or top_type,
                    "temporal": None if temporal is None else int(temporal),
                    "stack": None if stack is None else str(stack),
                    "b_value": None if b_value is None else float(b_value),
                },
                times=(_time_seconds(str(acq_time)[8:]) if acq_time else math.nan, f),
            )
        )
    return frames


# ------------------------------------------------------------------------------- splitting
def _orientation_clusters(frames: list[Frame]) -> list[list[Frame]]:
    clusters: list[tuple[np.ndarray, list[Frame]]] = []
    exact: dict[tuple | None, list[Frame]] = {}  # fast path: identical IOP values
    for frame in frames:
        iop = frame.orientation
        key = None if iop is None else tuple(iop.tolist())
        if key in exact:
            exact[key].append(frame)
            continue
        for ref, members in clusters:
            if iop is None and ref is None:
                members.append(frame)
                break
            if iop is not None and ref is not None and np.max(np.abs(iop - ref)) < _IOP_TOL:
                members.append(frame)
                exact[key] = members
                break
        else:
            clusters.append((iop, [frame]))
            exact[key] = clusters[-1][1]
    return [members for _, members in clusters]


def _sort_key(value: Any) -> tuple:
    return (value is None, str(type(value)), value if value is not None else 0)


def _names(frames: Sequence[Frame], limit: int = 4) -> str:
    paths = sorted({f.path for f in frames})
    more = f" and {len(paths) - limit} more" if len(paths) > limit else ""
    return ", ".join(paths[:limit]) + more


def split_frames(
    frames: list[Frame], *, split: bool, accept_mixed: bool
) -> list[tuple[dict[str, Any], list[Frame]]]:
    """Split the frames of one series into stacks; returns ``(keys, frames)`` pairs.

    Frames are always separated by matrix size and pixel spacing and by orientation; with
    ``split`` also by echo, image type, temporal position, stack and b-value, and repeated
    acquisitions of the same positions (dynamic series) become one stack per repetition.

    Raises
    ------
    GeometryError
        If orientations differ and some orientation has a single slice (a localizer or a stray
        image inside a stack) unless ``accept_mixed``; or, without ``split``, if the series
        holds several orientations or 4D content.
    """
    by_matrix: dict[tuple, list[Frame]] = defaultdict(list)
    for frame in frames:
        spacing = (
            None if frame.pixel_spacing is None else tuple(round(v, 4) for v in frame.pixel_spacing)
        )
        by_matrix[(frame.rows, frame.columns, spacing)].append(frame)
    if len(by_matrix) > 1 and not split:
        raise GeometryError(
            "images of different matrix size or pixel spacing in one series",
            path=frames[0].path,
            tag="Rows/Columns/PixelSpacing",
            value=sorted(by_matrix, key=str),
            hint="load with split=True to get one volume per matrix",
        )
    stacks: list[tuple[dict[str, Any], list[Frame]]] = []
    for matrix_frames in by_matrix.values():
        clusters = _orientation_clusters(matrix_frames)
        if len(clusters) > 1:
            singles = [c for c in clusters if len(c) == 1]
            if not split or (singles and not accept_mixed):
                main = max(clusters, key=len)
                odd = singles or [c for c in clusters if c is not main]
                raise GeometryError(
                    f"{len(clusters)} different slice orientations in one series "
                    f"(largest stack: {len(main)} slices, e.g. {main[0].path}); "
                    f"odd slice(s): {_names([f for c in odd for f in c])}",
                    path=odd[0][0].path,
                    tag="ImageOrientationPatient",
                    value=[round(float(v), 4) for v in odd[0][0].orientation]
                    if odd[0][0].orientation is not None
                    else None,
                    hint='a localizer or stray image? load with split=True and geometry="accept" '
                    "to get one volume per orientation, or remove the odd files",
                )
        for cluster in clusters:
            if not split:
                stacks.append(({}, cluster))
                continue
            groups: dict[tuple, list[Frame]] = defaultdict(list)
            for frame in cluster:
                groups[tuple(sorted(frame.keys.items()))].append(frame)
            for key in sorted(groups, key=lambda k: tuple(_sort_key(v) for _, v in k)):
                stacks.extend(_split_repeats(dict(key), groups[key]))
    return stacks


def _position_key(frame: Frame) -> tuple:
    if frame.position is None:
        return ("?", id(frame))
    return tuple(round(float(v), 2) for v in frame.position)


def _split_repeats(
    keys: dict[str, Any], frames: list[Frame]
) -> list[tuple[dict[str, Any], list[Frame]]]:
    """Split repeated acquisitions of the same positions (dynamic series) into stacks.

    Applied only if every position holds the same number of frames and the repetitions can be
    ordered by time (FrameReferenceTime, TriggerTime, AcquisitionTime, AcquisitionNumber); true
    duplicates are left in place for the geometry check to report.
    """
    at: dict[tuple, list[Frame]] = defaultdict(list)
    for frame in frames:
        at[_position_key(frame)].append(frame)
    counts = {len(v) for v in at.values()}
    if len(counts) != 1 or counts == {1}:
        return [(keys, frames)]
    n_rep = counts.pop()
    times = {id(f): frame_times(f) for f in frames}
    # the first time attribute that separates the repetitions at every position
    for t in range(len(times[id(frames[0])]) - 1):  # the last one (InstanceNumber) is no time
        ok = True
        for members in at.values():
            values = [times[id(m)][t] for m in members]
            if any(math.isnan(v) for v in values) or len(set(values)) != n_rep:
                ok = False
                break
        if ok:
            out = []
            for rep in range(n_rep):
                stack = [sorted(m, key=lambda f: times[id(f)][t])[rep] for m in at.values()]
                out.append(({**keys, "repetition": rep + 1}, stack))
            return out
    return [(keys, frames)]
