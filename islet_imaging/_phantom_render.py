"""Rendering of the phantom model on MR and PET grids (private; see :mod:`islet_imaging.phantom`).

A *pose* ``(rotation, translation)`` maps arm-frame points to LPS: ``x = R @ a + t``. Grids are
given by (shape, spacing, origin, direction) exactly like a :class:`~islet_imaging.volume.Volume`.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy import ndimage

from islet_imaging._phantom_model import (
    GRAFT_T1,
    GRAFT_T2,
    IRON_GRAFT_T1,
    IRON_GRAFT_T2,
    PET_RELATIVE,
    T1_SIGNAL,
    T2_SIGNAL,
    Anatomy,
    DepositState,
    Tissue,
    apply_affine,
    classify,
)

FWHM_TO_SIGMA = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))


@dataclasses.dataclass(frozen=True)
class Grid:
    """A voxel grid in LPS (array order z, y, x), as in :class:`Volume`."""

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: np.ndarray


@dataclasses.dataclass(frozen=True)
class Pose:
    """Rigid placement of the arm: LPS = rotation @ arm + translation."""

    rotation: np.ndarray
    translation: np.ndarray

    def inverse(self) -> Pose:
        rot_t = self.rotation.T
        return Pose(rot_t, -(rot_t @ self.translation))

    def matrix(self) -> np.ndarray:
        m = np.eye(4)
        m[:3, :3] = self.rotation
        m[:3, 3] = self.translation
        return m


def grid_around(
    centre: np.ndarray,
    frame: np.ndarray,
    extent_mm: tuple[float, float, float],
    spacing: tuple[float, float, float],
) -> Grid:
    """A grid of axes ``frame`` (columns: slice normal, column, row directions) covering a box.

    ``extent_mm`` is the box size along the columns of ``frame``; the grid is centred on
    ``centre`` (LPS) and its origin rounded to 0.01 mm for tidy headers.
    """
    shape = tuple(max(1, math.ceil(e / s)) for e, s in zip(extent_mm, spacing, strict=True))
    half = np.array([(n - 1) * s / 2 for n, s in zip(shape, spacing, strict=True)])
    origin = np.asarray(centre, dtype=float) - frame @ half
    return Grid(shape, tuple(spacing), tuple(np.round(origin, 2)), frame)


def box_extent_in_frame(
    frame: np.ndarray, box_axes: np.ndarray, box_size: tuple[float, float, float]
) -> tuple[float, float, float]:
    """Size along each column of ``frame`` of an oriented box (axes = columns of box_axes)."""
    proj = np.abs(frame.T @ box_axes)  # (frame axis, box axis)
    return tuple(float(x) for x in proj @ np.asarray(box_size))


def grid_points(grid: Grid, k: np.ndarray, offsets: tuple[float, float, float] = (0, 0, 0)):
    """LPS coordinates (x, y, z) of voxels of slices ``k`` (+ sub-voxel offsets in voxels)."""
    ny, nx = grid.shape[1:]
    kk = (np.asarray(k, dtype=float) + offsets[0])[:, None, None]
    jj = (np.arange(ny, dtype=float) + offsets[1])[None, :, None]
    ii = (np.arange(nx, dtype=float) + offsets[2])[None, None, :]
    d = np.asarray(grid.direction) * np.asarray(grid.spacing)[None, :]
    o = grid.origin
    x = o[0] + d[0, 0] * kk + d[0, 1] * jj + d[0, 2] * ii
    y = o[1] + d[1, 0] * kk + d[1, 1] * jj + d[1, 2] * ii
    z = o[2] + d[2, 0] * kk + d[2, 1] * jj + d[2, 2] * ii
    return x, y, z


def _to_arm(pose: Pose, x, y, z):
    inv = pose.inverse()
    return apply_affine(inv.rotation, inv.translation, x, y, z)


def label_maps(
    grid: Grid, pose: Pose, anatomy: Anatomy, states: list[DepositState]
) -> tuple[np.ndarray, np.ndarray]:
    """Tissue codes (uint8) and deposit labels (int16) at voxel centres, shape ``grid.shape``."""
    x, y, z = grid_points(grid, np.arange(grid.shape[0]))
    u, v, w = _to_arm(pose, x, y, z)
    return classify(anatomy, states, u, v, w)


def _lookup(table: dict[Tissue, float]) -> np.ndarray:
    lut = np.zeros(256, dtype=np.float64)
    for tissue, value in table.items():
        lut[int(tissue)] = value
    return lut


def render_mr(
    grid: Grid,
    pose: Pose,
    anatomy: Anatomy,
    states: list[DepositState],
    *,
    iron: bool,
    supersample: tuple[int, int, int],
) -> tuple[np.ndarray, np.ndarray]:
    """Noise-free, bias-free T1 and T2 signal averaged over sub-voxel samples (partial volume)."""
    t1_lut, t2_lut = _lookup(T1_SIGNAL), _lookup(T2_SIGNAL)
    t1_lut[Tissue.GRAFT] = IRON_GRAFT_T1 if iron else GRAFT_T1
    t2_graft = IRON_GRAFT_T2 if iron else GRAFT_T2
    t2_by_label = np.zeros(max([s.deposit.label for s in states], default=0) + 1)
    for s in states:
        t2_by_label[s.deposit.label] = t2_graft * (s.deposit.t2_factor if not iron else 1.0)
    t1 = np.zeros(grid.shape, dtype=np.float64)
    t2 = np.zeros(grid.shape, dtype=np.float64)
    sz, sy, sx = supersample
    offsets = [
        ((a + 0.5) / sz - 0.5, (b + 0.5) / sy - 0.5, (c + 0.5) / sx - 0.5)
        for a in range(sz)
        for b in range(sy)
        for c in range(sx)
    ]
    ks = np.arange(grid.shape[0])
    for off in offsets:
        x, y, z = grid_points(grid, ks, off)
        u, v, w = _to_arm(pose, x, y, z)
        codes, labels = classify(anatomy, states, u, v, w)
        graft = labels > 0
        t1 += t1_lut[codes]
        t2_sample = t2_lut[codes]
        t2_sample[graft] = t2_by_label[labels[graft]]
        t2 += t2_sample
    return t1 / len(offsets), t2 / len(offsets)


def bias_field(grid: Grid, centre: np.ndarray, coefficients: np.ndarray) -> np.ndarray:
    """Smooth multiplicative field exp(polynomial of degree 2 in LPS/60 mm), shape grid.shape."""
    x, y, z = grid_points(grid, np.arange(grid.shape[0]))
    px, py, pz = (x - centre[0]) / 60.0, (y - centre[1]) / 60.0, (z - centre[2]) / 60.0
    c = coefficients
    log_b = c[0] * px + c[1] * py + c[2] * pz + c[3] * px * px + c[4] * py * py + c[5] * px * py
    return np.exp(np.broadcast_to(log_b, grid.shape))


def rician(signal: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Magnitude of the signal plus complex Gaussian noise of SD ``sigma`` per channel."""
    real = signal + sigma * rng.standard_normal(signal.shape)
    imag = sigma * rng.standard_normal(signal.shape)
    return np.sqrt(real * real + imag * imag)


def render_pet(
    grid: Grid,
    pose: Pose,
    anatomy: Anatomy,
    states: list[DepositState],
    *,
    muscle_bqml: float,
    graft_bqml: dict[int, float],
    fwhm_mm: float,
    oversample: int,
) -> np.ndarray:
    """Activity (Bq/mL) blurred by an isotropic Gaussian PSF and integrated over PET voxels.

    The activity is sampled on a grid ``oversample`` times finer than ``grid``, convolved with
    the PSF (FWHM ``fwhm_mm``) and averaged back over each PET voxel.
    """
    m = int(oversample)
    fine_spacing = tuple(s / m for s in grid.spacing)
    d = np.asarray(grid.direction)
    # centre of fine voxel 0 = corner of PET voxel 0 + half a fine voxel
    fine_origin = np.asarray(grid.origin) + d @ (np.asarray(grid.spacing) * ((0.5 / m) - 0.5))
    fine = Grid(tuple(n * m for n in grid.shape), fine_spacing, tuple(fine_origin), d)
    codes, labels = label_maps(fine, pose, anatomy, states)
    lut = _lookup(PET_RELATIVE) * muscle_bqml
    activity = lut[codes]
    for label, value in graft_bqml.items():
        activity[labels == label] = value
    sigma = [fwhm_mm * FWHM_TO_SIGMA / s for s in fine_spacing]
    blurred = ndimage.gaussian_filter(activity, sigma, mode="constant", cval=0.0, truncate=4.0)
    nz, ny, nx = grid.shape
    return blurred.reshape(nz, m, ny, m, nx, m).mean(axis=(1, 3, 5))
