"""Stack geometry: order frames along the slice normal and check they form a regular grid.

Slices are sorted by the projection of ImagePositionPatient on the slice normal (row cosine ×
column cosine), never by InstanceNumber or file name. A regular grid needs unique positions,
uniform steps and positions moving along the normal (no gantry tilt / sheared stacks). When
one of these fails, ``geometry="strict"`` raises a :class:`GeometryError` naming the files,
``"resample"`` interpolates onto a regular grid along the normal and ``"accept"`` keeps the
slices as they are and records a warning.
"""

from __future__ import annotations

import dataclasses
import enum
import math

import numpy as np

from islet_imaging.errors import GeometryError
from islet_imaging.io._dicom_frames import Frame

__all__ = ["GeometryMode", "Stack", "plan_stack", "resample_stack"]

_STEP_REL_TOL = 0.01  # uniform spacing: every step within 1 % (+ 0.01 mm) of the median step
_STEP_ABS_TOL = 0.01
_SHEAR_TOL = 0.05  # mm of in-plane drift allowed over the whole stack


class GeometryMode(enum.Enum):
    """What to do when slices do not form a regular grid."""

    STRICT = "strict"
    RESAMPLE = "resample"
    ACCEPT = "accept"


@dataclasses.dataclass
class Stack:
    """Frames in slice order with the grid they define.

    ``positions`` are distances along the normal (mm) of the kept frames; ``resample`` is set
    when the frames must be interpolated onto the grid (irregular spacing or in-plane drift).
    """

    frames: list[Frame]
    spacing: tuple[float, float, float]
    origin: np.ndarray
    direction: np.ndarray
    positions: np.ndarray
    shifts: np.ndarray  # (n, 2) in-plane offset of each frame in (row, column) pixels
    n_slices: int
    resample: bool
    warnings: list[str]


def _frame_axes(iop: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    row = iop[:3] / np.linalg.norm(iop[:3])
    col = iop[3:] - np.dot(iop[3:], row) * row
    col /= np.linalg.norm(col)
    return row, col, np.cross(row, col)


def _hint(mode_needed: str) -> str:
    return (
        f'pass geometry="resample" to interpolate onto a regular grid along the slice normal, '
        f'or geometry="accept" to {mode_needed}'
    )


def plan_stack(frames: list[Frame], mode: GeometryMode) -> Stack:
    """Sort ``frames`` (one orientation, one matrix) and check or plan their 3D grid.

    Raises
    ------
    GeometryError
        Missing geometry tags, duplicate positions, irregular spacing or non-orthogonal
        stacking, in strict mode (duplicates also in resample mode); the message names the
        files and the tag.
    """
    warnings: list[str] = []
    first = frames[0]
    if any(f.position is None or f.orientation is None for f in frames):
        bad = next(f for f in frames if f.position is None or f.orientation is None)
        tag = "ImagePositionPatient" if bad.position is None else "ImageOrientationPatient"
        if mode is not GeometryMode.ACCEPT:
            raise GeometryError(
                "slice position or orientation missing: cannot place the image in space",
                path=bad.path,
                tag=tag,
                hint='geometry="accept" assumes an axial grid at the origin with 1 mm spacing',
            )
        warnings.append(f"{tag} missing: axial grid at the origin with 1 mm slices assumed")
        n = len(frames)
        ps = first.pixel_spacing or (1.0, 1.0)
        return Stack(
            frames,
            (1.0, ps[0], ps[1]),
            np.zeros(3),
            np.eye(3),
            np.arange(n, dtype=float),
            np.zeros((n, 2)),
            n,
            False,
            warnings,
        )
    row, col, normal = _frame_axes(first.orientation)
    if first.pixel_spacing is None:
        if mode is not GeometryMode.ACCEPT:
            raise GeometryError(
                "pixel spacing missing",
                path=first.path,
                tag="PixelSpacing",
                hint='geometry="accept" assumes 1 mm pixels',
            )
        warnings.append("PixelSpacing missing: 1 mm pixels assumed")
    ps = first.pixel_spacing or (1.0, 1.0)
    positions = np.array([f.position for f in frames])
    dist = positions @ normal
    order = np.argsort(dist, kind="stable")
    frames = [frames[i] for i in order]
    positions, dist = positions[order], dist[order]
    direction = np.column_stack([normal, col, row])

    # duplicates: same position along the normal
    if len(frames) > 1:
        steps = np.diff(dist)
        dup = np.flatnonzero(steps < 1e-3)
        if dup.size:
            a, b = frames[dup[0]], frames[dup[0] + 1]
            if mode is GeometryMode.STRICT:
                raise GeometryError(
                    f"{dup.size} duplicate slice position(s): {a.path} and {b.path} are both "
                    f"at {dist[dup[0]]:.3f} mm along the slice normal",
                    path=b.path,
                    tag="ImagePositionPatient",
                    value=[round(float(v), 4) for v in b.position],
                    hint="remove the duplicate files, or split a 4D series (split=True); "
                    'geometry="accept" keeps the first image at each position',
                )
            keep = np.ones(len(frames), bool)
            keep[dup + 1] = False
            dropped = [frames[i].path for i in np.flatnonzero(~keep)]
            warnings.append(f"duplicate positions: kept the first image, dropped {dropped}")
            frames = [f for f, k in zip(frames, keep, strict=True) if k]
            positions, dist = positions[keep], dist[keep]

    n = len(frames)
    shifts = np.zeros((n, 2))
    resample = False
    if n == 1:
        step = first_value(frames[0])
        return Stack(
            frames, (step, ps[0], ps[1]), positions[0], direction, dist, shifts, 1, False, warnings
        )

    # in-plane drift: positions must move along the normal (gantry tilt, sheared stacks)
    drift = positions - positions[0] - np.outer(dist - dist[0], normal)
    shifts = np.column_stack([drift @ col / ps[0], drift @ row / ps[1]])
    max_drift = float(np.max(np.linalg.norm(drift, axis=1)))
    if max_drift > _SHEAR_TOL:
        k = int(np.argmax(np.linalg.norm(drift, axis=1)))
        span = dist[k] - dist[0]
        angle = math.degrees(math.atan2(max_drift, span)) if span > 0 else 90.0
        if mode is GeometryMode.STRICT:
            raise GeometryError(
                f"slices are not stacked along their normal (gantry tilt or sheared stack): "
                f"{frames[k].path} is offset {max_drift:.2f} mm in-plane from {frames[0].path} "
                f"(tilt {angle:.1f} degrees)",
                path=frames[k].path,
                tag="ImagePositionPatient",
                value=[round(float(v), 4) for v in frames[k].position],
                hint=_hint("keep the slices on the normal grid without shifting them"),
            )
        if mode is GeometryMode.RESAMPLE:
            resample = True
            warnings.append(
                f"in-plane drift up to {max_drift:.2f} mm (tilt {angle:.1f} degrees) "
                "corrected by resampling each slice"
            )
        else:
            shifts[:] = 0
            warnings.append(
                f"in-plane drift up to {max_drift:.2f} mm (tilt {angle:.1f} degrees) ignored: "
                "slices placed along the normal of the first slice"
            )

    steps = np.diff(dist)
    median = _nominal_step(steps)
    bad = np.flatnonzero(np.abs(steps - median) > _STEP_REL_TOL * median + _STEP_ABS_TOL)
    length = float(dist[-1] - dist[0])
    if bad.size:
        i = int(bad[0])
        a, b = frames[i], frames[i + 1]
        what = "gap" if steps[i] > median else "step"
        missing = round(steps[i] / median) - 1 if steps[i] > median else 0
        if mode is GeometryMode.STRICT:
            raise GeometryError(
                f"slice spacing is not uniform: {what} of {steps[i]:.3f} mm between {a.path} "
                f"and {b.path} where the regular step is {median:.3f} mm"
                + (f" ({missing} slice(s) missing?)" if missing > 0 else "")
                + f"; {bad.size} irregular step(s) in total",
                path=a.path,
                tag="ImagePositionPatient",
                value=[round(float(v), 4) for v in b.position],
                hint=_hint("keep the slices with their mean spacing"),
            )
        if mode is GeometryMode.RESAMPLE:
            n_out = round(length / median) + 1
            warnings.append(
                f"irregular slice spacing ({bad.size} step(s) off the regular {median:.3f} mm): "
                f"{n} slices resampled onto {n_out} slices along the normal"
            )
            return Stack(
                frames,
                (length / (n_out - 1), ps[0], ps[1]),
                positions[0],
                direction,
                dist,
                shifts,
                n_out,
                True,
                warnings,
            )
        warnings.append(
            f"irregular slice spacing ({bad.size} step(s) off the regular {median:.3f} mm) "
            f"accepted: slices kept with their mean spacing {length / (n - 1):.3f} mm"
        )
    return Stack(
        frames,
        (length / (n - 1), ps[0], ps[1]),
        positions[0],
        direction,
        dist,
        shifts,
        n,
        resample,
        warnings,
    )


def _nominal_step(steps: np.ndarray) -> float:
    """The regular slice step: the smallest step if every step is a multiple of it (gaps from
    missing slices), else the median step."""
    smallest = float(np.min(steps))
    ratios = steps / smallest
    if np.all(np.abs(ratios - np.round(ratios)) < 0.02):
        return smallest
    return float(np.median(steps))


def first_value(frame: Frame) -> float:
    """Slice step for a single slice: SpacingBetweenSlices, else SliceThickness, else 1 mm."""
    for keyword in ("SpacingBetweenSlices", "SliceThickness"):
        value = frame.file.get(keyword)
        if isinstance(value, tuple):
            value = value[0]
        if isinstance(value, int | float) and value > 0:
            return float(value)
    return 1.0


def resample_stack(stack: Stack, slices: np.ndarray) -> np.ndarray:
    """Interpolate ``slices`` (n, rows, cols; in stack order) onto the stack's regular grid.

    Each slice is first shifted in-plane by its drift (linear interpolation), then the grid
    positions along the normal are interpolated linearly between the two nearest slices.
    """
    from scipy import ndimage

    data = np.asarray(slices, dtype=np.float32)
    if np.any(np.abs(stack.shifts) > 1e-6):
        data = np.stack(
            [
                ndimage.shift(s, (dy, dx), order=1, mode="nearest")
                if abs(dy) + abs(dx) > 1e-6
                else s
                for s, (dy, dx) in zip(data, stack.shifts, strict=True)
            ]
        )
    dist = stack.positions
    if stack.n_slices == len(dist) and np.allclose(
        np.diff(dist), stack.spacing[0], atol=_STEP_ABS_TOL
    ):
        return data
    targets = dist[0] + np.arange(stack.n_slices) * stack.spacing[0]
    upper = np.clip(np.searchsorted(dist, targets, side="right"), 1, len(dist) - 1)
    lower = upper - 1
    w = ((targets - dist[lower]) / (dist[upper] - dist[lower])).astype(np.float32)
    w = np.clip(w, 0, 1)[:, None, None]
    return data[lower] * (1 - w) + data[upper] * w
