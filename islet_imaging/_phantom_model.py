"""Analytic forearm and graft model of the phantom (private; see :mod:`islet_imaging.phantom`).

Everything here lives in the *arm frame* (mm): ``u`` lateral (radial side), ``v`` posterior,
``w`` distal along the forearm from the elbow (``w = 0``). Tissues are nested ellipses whose
size tapers with ``w``; deposits are ellipsoids, possibly truncated by a plane where two
consecutive deposits of a track touch, so that every deposit volume is exact and analytic.

All arithmetic on point clouds is elementwise (no BLAS), so results are bit-for-bit
reproducible across machines.
"""

from __future__ import annotations

import dataclasses
import enum
import itertools
import math

import numpy as np

from islet_imaging.errors import IsletImagingError

FOREARM_LENGTH_MM = 260.0
TAPER = 0.30  # relative loss of width from elbow to wrist
SKIN_MM = 1.5
FAT_MM = 5.0
CORTEX_MM = 2.0


class Tissue(enum.IntEnum):
    """Codes of the tissue label map (``tissue_labels.nii.gz``)."""

    AIR = 0
    SKIN = 1
    FAT = 2
    CORTICAL_BONE = 3
    MARROW = 4
    BRACHIORADIALIS = 10
    FLEXORS = 11
    EXTENSORS = 12
    DEEP_MUSCLE = 13
    GRAFT = 20


#: MR signal (arbitrary units, before bias field and noise) and PET SUVbw of each tissue.
#: Muscles differ slightly on MR; all muscles share the patient's muscle SUV on PET.
T1_SIGNAL = {
    Tissue.AIR: 0.0,
    Tissue.SKIN: 900.0,
    Tissue.FAT: 1800.0,
    Tissue.CORTICAL_BONE: 40.0,
    Tissue.MARROW: 1500.0,
    Tissue.BRACHIORADIALIS: 700.0,
    Tissue.FLEXORS: 730.0,
    Tissue.EXTENSORS: 675.0,
    Tissue.DEEP_MUSCLE: 750.0,
}
T2_SIGNAL = {
    Tissue.AIR: 0.0,
    Tissue.SKIN: 600.0,
    Tissue.FAT: 1300.0,
    Tissue.CORTICAL_BONE: 30.0,
    Tissue.MARROW: 1100.0,
    Tissue.BRACHIORADIALIS: 380.0,
    Tissue.FLEXORS: 400.0,
    Tissue.EXTENSORS: 360.0,
    Tissue.DEEP_MUSCLE: 410.0,
}
#: PET uptake relative to muscle (muscle = 1).
PET_RELATIVE = {
    Tissue.AIR: 0.0,
    Tissue.SKIN: 1.2,
    Tissue.FAT: 0.3,
    Tissue.CORTICAL_BONE: 0.6,
    Tissue.MARROW: 1.0,
    Tissue.BRACHIORADIALIS: 1.0,
    Tissue.FLEXORS: 1.0,
    Tissue.EXTENSORS: 1.0,
    Tissue.DEEP_MUSCLE: 1.0,
}
GRAFT_T1 = 620.0
GRAFT_T2 = 950.0
IRON_GRAFT_T1 = 380.0
IRON_GRAFT_T2 = 110.0


@dataclasses.dataclass(frozen=True)
class Anatomy:
    """Size of one patient's forearm: semi-axes (mm) of the outer ellipse at the elbow."""

    half_width: float  # along u
    half_depth: float  # along v


@dataclasses.dataclass(frozen=True)
class Deposit:
    """One ellipsoidal deposit at baseline size, in the arm frame.

    ``axes`` columns are the unit vectors of the semi-axes ``semi_axes`` (mm); column 0 is the
    injection-track direction (the cut planes between touching deposits are perpendicular to it).
    ``position`` is the centre's coordinate along its track (mm), used to order deposits.
    """

    label: int
    track: int
    centre: tuple[float, float, float]
    axes: np.ndarray
    semi_axes: tuple[float, float, float]
    position: float
    t2_factor: float
    uptake_factor: float


@dataclasses.dataclass(frozen=True)
class DepositState:
    """A deposit at one visit: scaled semi-axes and the cut heights (mm) at both track ends."""

    deposit: Deposit
    semi_axes: tuple[float, float, float]
    cut_low: float  # cap height removed at the -track end (0 = none)
    cut_high: float  # cap height removed at the +track end

    @property
    def volume_mm3(self) -> float:
        """Exact volume: ellipsoid minus the caps cut off by touching neighbours."""
        a, b, c = self.semi_axes
        full = 4.0 / 3.0 * math.pi * a * b * c
        return full - _cap_volume(a, b, c, self.cut_low) - _cap_volume(a, b, c, self.cut_high)

    @property
    def surface_mm2(self) -> float:
        """Upper bound of the surface area: ellipsoid area (Thomsen, +1.1 %) + cut disks."""
        a, b, c = self.semi_axes
        p = 1.6075
        area = 4 * math.pi * (((a * b) ** p + (a * c) ** p + (b * c) ** p) / 3) ** (1 / p)
        disks = sum(
            math.pi * b * c * (1 - ((a - h) / a) ** 2) for h in (self.cut_low, self.cut_high)
        )
        return 1.011 * area + disks


def _cap_volume(a: float, b: float, c: float, h: float) -> float:
    """Volume of the cap of height ``h`` cut from an ellipsoid perpendicular to semi-axis ``a``."""
    if h <= 0:
        return 0.0
    return math.pi * b * c * h * h * (3 * a - h) / (3 * a * a)


def rotation_matrix(axis: np.ndarray, angle_rad: float) -> np.ndarray:
    """Rotation about unit ``axis`` by ``angle_rad`` (Rodrigues)."""
    axis = np.asarray(axis, dtype=float)
    axis = axis / np.linalg.norm(axis)
    x, y, z = axis
    k = np.array([[0, -z, y], [z, 0, -x], [-y, x, 0]])
    return np.eye(3) + math.sin(angle_rad) * k + (1 - math.cos(angle_rad)) * (k @ k)


def apply_affine(
    matrix: np.ndarray, offset: np.ndarray, x: np.ndarray, y: np.ndarray, z: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``matrix @ (x, y, z) + offset`` elementwise (bit-reproducible, no BLAS)."""
    m = np.asarray(matrix, dtype=float)
    o = np.asarray(offset, dtype=float)
    return (
        m[0, 0] * x + m[0, 1] * y + m[0, 2] * z + o[0],
        m[1, 0] * x + m[1, 1] * y + m[1, 2] * z + o[1],
        m[2, 0] * x + m[2, 1] * y + m[2, 2] * z + o[2],
    )


def _taper(w: np.ndarray) -> np.ndarray:
    return 1.0 - TAPER * np.clip(w, 0.0, FOREARM_LENGTH_MM) / FOREARM_LENGTH_MM


def brachioradialis_ellipse(anatomy: Anatomy, w: np.ndarray | float):
    """Centre (u, v) and semi-axes (mm) of the brachioradialis ellipse at ``w``."""
    t = _taper(np.asarray(w, dtype=float))
    a, b = anatomy.half_width * t, anatomy.half_depth * t
    return 0.42 * a, -0.40 * b, 0.44 * a, 0.38 * b


def _in_ellipse(u, v, cu, cv, a, b):
    du = (u - cu) / a
    dv = (v - cv) / b
    return du * du + dv * dv <= 1.0


def classify(
    anatomy: Anatomy, states: list[DepositState], u: np.ndarray, v: np.ndarray, w: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Tissue code and deposit label (0 = none) of arm-frame points; arrays of any shape."""
    shape = np.broadcast_shapes(u.shape, v.shape, w.shape)
    u, v, w = (np.broadcast_to(x, shape).ravel() for x in (u, v, w))
    codes = np.zeros(u.size, dtype=np.uint8)
    labels = np.zeros(u.size, dtype=np.int16)
    t = _taper(w)
    arm = np.flatnonzero(_in_ellipse(u, v, 0.0, 0.0, anatomy.half_width * t,
                                     anatomy.half_depth * t))  # fmt: skip
    # from here on only points inside the arm are evaluated
    u, v, w, t = u[arm], v[arm], w[arm], t[arm]
    a = anatomy.half_width * t
    b = anatomy.half_depth * t
    sub = np.full(arm.size, Tissue.SKIN, dtype=np.uint8)
    sub[_in_ellipse(u, v, 0.0, 0.0, a - SKIN_MM, b - SKIN_MM)] = Tissue.FAT
    fascia = _in_ellipse(u, v, 0.0, 0.0, a - SKIN_MM - FAT_MM, b - SKIN_MM - FAT_MM)
    # muscles: anterior flexors / posterior extensors, deep group around the bones
    sub[fascia & (v < 0)] = Tissue.FLEXORS
    sub[fascia & (v >= 0)] = Tissue.EXTENSORS
    sub[fascia & _in_ellipse(u, v, 0.0, 0.15 * b, 0.45 * a, 0.35 * b)] = Tissue.DEEP_MUSCLE
    cu, cv, ba, bb = brachioradialis_ellipse(anatomy, w)
    sub[fascia & _in_ellipse(u, v, cu, cv, ba, bb)] = Tissue.BRACHIORADIALIS
    # bones: radius (lateral, grows distally) and ulna (medial-posterior, thins distally)
    grow = 1.0 + 0.25 * np.clip(w, 0.0, FOREARM_LENGTH_MM) / FOREARM_LENGTH_MM
    for bu, bv, sa, sb, scale in (
        (0.28 * a, 0.15 * b, 7.5, 6.0, grow),
        (-0.40 * a, 0.45 * b, 6.5, 6.0, 2.0 - grow),
    ):
        sub[_in_ellipse(u, v, bu, bv, sa * scale, sb * scale)] = Tissue.CORTICAL_BONE
        marrow = _in_ellipse(u, v, bu, bv, sa * scale - CORTEX_MM, sb * scale - CORTEX_MM)
        sub[marrow] = Tissue.MARROW
    sub_labels = np.zeros(arm.size, dtype=np.int16)
    for state in states:
        inside = deposit_contains(state, u, v, w)
        sub[inside] = Tissue.GRAFT
        sub_labels[inside] = state.deposit.label
    codes[arm] = sub
    labels[arm] = sub_labels
    return codes.reshape(shape), labels.reshape(shape)


def deposit_contains(state: DepositState, u, v, w) -> np.ndarray:
    """Boolean array: points inside the (truncated) deposit."""
    dep = state.deposit
    c = dep.centre
    reach = max(state.semi_axes)
    near = (np.abs(u - c[0]) <= reach) & (np.abs(v - c[1]) <= reach) & (np.abs(w - c[2]) <= reach)
    inside = np.zeros(u.shape, dtype=bool)
    if not near.any():
        return inside
    du, dv, dw = u[near] - c[0], v[near] - c[1], w[near] - c[2]
    ax = dep.axes
    q0 = ax[0, 0] * du + ax[1, 0] * dv + ax[2, 0] * dw
    q1 = ax[0, 1] * du + ax[1, 1] * dv + ax[2, 1] * dw
    q2 = ax[0, 2] * du + ax[1, 2] * dv + ax[2, 2] * dw
    a, b, cc = state.semi_axes
    r = (q0 / a) ** 2 + (q1 / b) ** 2 + (q2 / cc) ** 2
    ok = (r <= 1.0) & (q0 >= -a + state.cut_low) & (q0 <= a - state.cut_high)
    inside[near] = ok
    return inside


def visit_states(deposits: list[Deposit], scale: float) -> list[DepositState]:
    """Deposits at one visit: semi-axes × ``scale``; consecutive overlapping ones are cut.

    Two consecutive deposits of a track whose extents along the track overlap are separated by
    the plane perpendicular to the track through the middle of the overlap: they touch along a
    flat face and their volumes stay exact.
    """
    scaled = {d.label: tuple(s * scale for s in d.semi_axes) for d in deposits}
    cuts = {d.label: [0.0, 0.0] for d in deposits}
    by_track: dict[int, list[Deposit]] = {}
    for d in deposits:
        by_track.setdefault(d.track, []).append(d)
    for track in by_track.values():
        track.sort(key=lambda d: d.position)
        for first, second in itertools.pairwise(track):
            overlap = scaled[first.label][0] + scaled[second.label][0]
            overlap -= second.position - first.position
            if overlap > 0:
                cuts[first.label][1] = overlap / 2
                cuts[second.label][0] = overlap / 2
    return [DepositState(d, scaled[d.label], cuts[d.label][0], cuts[d.label][1]) for d in deposits]


def touching_pairs(states: list[DepositState]) -> list[tuple[int, int]]:
    """Pairs of labels that share a cut face (analytic contact)."""
    pairs = []
    by_track: dict[int, list[DepositState]] = {}
    for s in states:
        by_track.setdefault(s.deposit.track, []).append(s)
    for track in by_track.values():
        track.sort(key=lambda s: s.deposit.position)
        for first, second in itertools.pairwise(track):
            if first.cut_high > 0 and second.cut_low > 0:
                pairs.append(tuple(sorted((first.deposit.label, second.deposit.label))))
    return sorted(pairs)


def surface_points(state: DepositState, n: int = 400) -> np.ndarray:
    """Points (n, 3) on the ellipsoid surface of a deposit (arm frame), for containment checks."""
    k = np.arange(n) + 0.5
    phi = np.arccos(1 - 2 * k / n)
    theta = math.pi * (1 + 5**0.5) * k
    a, b, c = state.semi_axes
    local = np.stack(
        [a * np.cos(phi), b * np.sin(phi) * np.cos(theta), c * np.sin(phi) * np.sin(theta)], axis=1
    )
    local[:, 0] = np.clip(local[:, 0], -a + state.cut_low, a - state.cut_high)
    return local @ state.deposit.axes.T + np.asarray(state.deposit.centre)


def make_deposits(
    rng: np.random.Generator, anatomy: Anatomy, *, max_scale: float, n_tracks: int | None = None
) -> list[Deposit]:
    """Draw deposits along one or two oblique tracks inside the brachioradialis.

    Sizes span about 0.02 to 2 mL; at least one pair of consecutive deposits touches. Draws are
    repeated until every deposit, grown by ``max_scale``, lies inside the muscle and no two
    deposits overlap (checked on surface points).
    """
    for _ in range(200):
        deposits = _draw_deposits(rng, anatomy, n_tracks)
        if _valid(deposits, anatomy, max_scale):
            return deposits
    raise IsletImagingError(  # pragma: no cover - never seen for any seed tried
        "could not place the deposits inside the brachioradialis", tag="seed"
    )


def _draw_deposits(
    rng: np.random.Generator, anatomy: Anatomy, n_tracks: int | None
) -> list[Deposit]:
    n_tracks = n_tracks or int(rng.integers(1, 3))
    counts = [int(rng.integers(3, 5)) for _ in range(n_tracks)]
    total = sum(counts)
    # volumes log-spaced from ~0.02 to ~2 mL, shuffled, extremes always present
    volumes = np.exp(np.linspace(math.log(0.02), math.log(2.0), total))
    volumes = volumes * rng.uniform(0.85, 1.15, total)
    volumes = volumes[rng.permutation(total)]
    deposits: list[Deposit] = []
    w_start = 45.0 + rng.uniform(-5, 5)
    label = 1
    index = 0
    for track in range(1, n_tracks + 1):
        cu, cv, ba, bb = brachioradialis_ellipse(anatomy, w_start + 20)
        start = np.array(
            [cu + rng.uniform(-0.15, 0.15) * ba, cv + rng.uniform(-0.15, 0.15) * bb, w_start]
        )
        tilt = math.radians(rng.uniform(6, 12))
        azimuth = rng.uniform(0, 2 * math.pi)
        direction = np.array(
            [math.sin(tilt) * math.cos(azimuth), math.sin(tilt) * math.sin(azimuth), math.cos(tilt)]
        )
        helper = np.array([1.0, 0.0, 0.0])
        e1 = np.cross(direction, helper)
        e1 /= np.linalg.norm(e1)
        spin = rng.uniform(0, math.pi)
        e1 = rotation_matrix(direction, spin) @ e1
        e2 = np.cross(direction, e1)
        axes = np.stack([direction, e1, e2], axis=1)
        position = 0.0
        previous_a = None
        touch_index = int(rng.integers(0, counts[track - 1] - 1))
        for j in range(counts[track - 1]):
            vol_mm3 = volumes[index] * 1000.0
            elong = rng.uniform(1.3, 1.8)
            flat = rng.uniform(0.8, 1.0)
            r = (vol_mm3 / (4 / 3 * math.pi * elong * flat)) ** (1 / 3)
            semi = (elong * r, r, flat * r)
            if previous_a is not None:
                if j - 1 == touch_index:
                    gap = -rng.uniform(0.12, 0.25) * min(previous_a, semi[0])
                else:
                    gap = rng.uniform(2.5, 6.0)
                position += previous_a + semi[0] + gap
            centre = start + position * direction
            deposits.append(
                Deposit(
                    label=label,
                    track=track,
                    centre=tuple(float(x) for x in centre),
                    axes=axes,
                    semi_axes=tuple(float(s) for s in semi),
                    position=float(position),
                    t2_factor=float(rng.uniform(0.93, 1.07)),
                    uptake_factor=float(rng.uniform(0.85, 1.15)),
                )
            )
            previous_a = semi[0]
            label += 1
            index += 1
        w_start = float(centre[2] + semi[0] + rng.uniform(4, 8))
    return deposits


def _valid(deposits: list[Deposit], anatomy: Anatomy, max_scale: float) -> bool:
    for scale in (max_scale, 1.0):
        states = visit_states(deposits, scale)
        for s in states:
            if s.cut_low >= 0.6 * s.semi_axes[0] or s.cut_high >= 0.6 * s.semi_axes[0]:
                return False
        for s in states:
            pts = surface_points(s)
            u, v, w = pts[:, 0], pts[:, 1], pts[:, 2]
            cu, cv, ba, bb = brachioradialis_ellipse(anatomy, w)
            if not np.all(_in_ellipse(u, v, cu, cv, ba - 1.0, bb - 1.0)):
                return False
            t = _taper(w)
            margin = SKIN_MM + FAT_MM + 1.0
            a, b = anatomy.half_width * t - margin, anatomy.half_depth * t - margin
            if not np.all(_in_ellipse(u, v, 0.0, 0.0, a, b)):
                return False
            # separation from every other deposit (a small margin unless they touch)
            for other in states:
                if other is s:
                    continue
                inside = deposit_contains(
                    DepositState(
                        other.deposit,
                        tuple(x + 0.3 for x in other.semi_axes),
                        max(other.cut_low - 0.3, 0.0),
                        max(other.cut_high - 0.3, 0.0),
                    ),
                    u,
                    v,
                    w,
                )
                consecutive = (
                    other.deposit.track == s.deposit.track
                    and abs(other.deposit.label - s.deposit.label) == 1
                )
                if inside.any() and not consecutive:
                    return False
    return True
