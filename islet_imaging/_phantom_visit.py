"""The scenario of a phantom visit (private; see :mod:`islet_imaging.phantom`).

Who the patient is, how the graft evolved, where the arm lies, which grids image it, when the
tracer was injected and what activity each tissue holds: everything that is decided before any
voxel is rendered, derived from ``(seed, patient, visit)`` only.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import math

import numpy as np

from islet_imaging._phantom_model import (
    Anatomy,
    Deposit,
    DepositState,
    make_deposits,
    rotation_matrix,
    surface_points,
    visit_states,
)
from islet_imaging._phantom_render import Grid, Pose, box_extent_in_frame, grid_around

GA68_HALF_LIFE_S = 4062.6
FRAME_DURATION_S = 600.0
VISIT_MONTHS = (0, 1, 3, 6, 12, 24)
RADIOPHARMACEUTICAL = "[68Ga]Ga-NODAGA-exendin-4"
#: nominal arm placement: u -> patient right (-L), v -> posterior, w (distal) -> inferior
NOMINAL_ROTATION = np.array([[-1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, -1.0]])
NOMINAL_TRANSLATION = np.array([-200.0, 30.0, -150.0])
AXIAL = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])  # (normal, col, row)
FOV_TRANSVERSE_MM = (112.0, 96.0)  # along u (width) and v (depth)


class Orientation(enum.Enum):
    """MR acquisition plane."""

    AXIAL = "axial"
    OBLIQUE = "oblique"
    SAGITTAL = "sagittal"


class Size(enum.Enum):
    """Grid presets (the anatomy and graft do not depend on them)."""

    SMALL = "small"
    SAMPLE = "sample"
    STANDARD = "standard"


class Trend(enum.Enum):
    """How the graft evolves over visits."""

    SHRINK = "shrink"
    STABLE = "stable"
    GROW = "grow"


@dataclasses.dataclass(frozen=True)
class Preset:
    """Grids of a :class:`Size`: MR spacing (mm, z y x), MR length along the arm (mm),
    sub-voxel samples per MR voxel (z, y, x), PET voxel size (mm), PET oversampling factor."""

    mr_spacing: tuple[float, float, float]
    mr_length_mm: float
    mr_supersample: tuple[int, int, int]
    pet_spacing: float
    pet_oversample: int


PRESETS = {
    Size.SMALL: Preset((3.0, 1.5, 1.5), 84.0, (3, 1, 1), 4.0, 2),
    Size.SAMPLE: Preset((3.0, 0.8, 0.8), 90.0, (3, 1, 1), 3.0, 2),
    Size.STANDARD: Preset((3.0, 0.6, 0.6), 120.0, (3, 2, 2), 2.0, 2),
}
TRENDS = (Trend.SHRINK, Trend.GROW, Trend.STABLE)


@dataclasses.dataclass(frozen=True)
class Patient:
    """A synthetic patient: demographics, forearm, graft at baseline, uptake, baseline pose."""

    index: int
    patient_id: str
    name: str
    sex: str
    age: int
    weight_kg: float
    height_m: float
    trend: Trend
    anatomy: Anatomy
    deposits: list[Deposit]
    muscle_suv: float
    graft_ratio: float
    implantation: dt.date
    baseline_pose: Pose


@dataclasses.dataclass(frozen=True)
class Options:
    """The user options of :func:`islet_imaging.phantom.make_visit` (validated)."""

    size: Size
    orientation: Orientation
    iron_labelled: bool
    psf_fwhm_mm: float
    pet_noise_cv: float
    mr_snr: float
    max_rotation_deg: float
    max_shift_mm: float

    def to_dict(self) -> dict:
        """JSON-ready options (``size`` is reported separately)."""
        return {
            "orientation": self.orientation.value,
            "iron_labelled": self.iron_labelled,
            "psf_fwhm_mm": self.psf_fwhm_mm,
            "pet_noise_cv": self.pet_noise_cv,
            "mr_snr": self.mr_snr,
            "max_rotation_deg": self.max_rotation_deg,
            "max_shift_mm": self.max_shift_mm,
        }


@dataclasses.dataclass(frozen=True)
class VisitPlan:
    """Everything decided about one visit before rendering.

    ``rng`` is the visit's noise generator, already advanced past the draws of the plan.
    Activities are Bq/mL at the PET series start; ``suvbw_per_bqml`` converts them to SUVbw.
    """

    seed: int
    visit: int
    options: Options
    patient: Patient
    month: float
    volume_factor: float
    uptake_factor: float
    states: list[DepositState]
    pose: Pose
    to_baseline: np.ndarray
    fov_centre: np.ndarray
    mr_grid: Grid
    pet_grid: Grid
    visit_date: dt.date
    mr_start: dt.datetime
    injection: dt.datetime
    pet_start: dt.datetime
    dose_bq: float
    weight_kg: float
    suvbw_per_bqml: float
    muscle_bqml: float
    graft_suv: dict[int, float]
    graft_bqml: dict[int, float]
    rng: np.random.Generator

    @property
    def preset(self) -> Preset:
        return PRESETS[self.options.size]

    @property
    def label(self) -> str:
        return f"V{self.visit}"

    @property
    def delta_t_s(self) -> float:
        """Seconds from injection to the PET series start."""
        return (self.pet_start - self.injection).total_seconds()

    @property
    def decay_factor(self) -> float:
        """2^(-Δt / T½): fraction of the injected activity left at the series start."""
        return 2.0 ** (-self.delta_t_s / GA68_HALF_LIFE_S)


def rng_for(seed: int, *parts: int) -> np.random.Generator:
    """An independent random stream for ``(seed, *parts)``."""
    return np.random.default_rng([int(seed), *parts])


def _random_rotation(rng: np.random.Generator, max_deg: float, min_deg: float = 0.0):
    axis = rng.standard_normal(3)
    angle = math.radians(rng.uniform(min_deg, max_deg))
    return rotation_matrix(axis, angle)


def trend_factors(trend: Trend, month: float) -> tuple[float, float]:
    """(volume factor, uptake factor) relative to baseline."""
    ramp = 1.0 - math.exp(-month / 6.0)
    if trend is Trend.SHRINK:
        return 1.0 - 0.40 * ramp, 1.0 - 0.35 * ramp
    if trend is Trend.GROW:
        return 1.0 + 0.30 * ramp, 1.0 + 0.25 * ramp
    return 1.0 + 0.02 * math.sin(1.7 * month), 1.0 + 0.03 * math.sin(0.9 * month)


def visit_month(visit: int) -> float:
    """Months after implantation of visit ``visit`` (0, 1, 3, 6, 12, 24, then yearly)."""
    if visit < len(VISIT_MONTHS):
        return float(VISIT_MONTHS[visit])
    return float(VISIT_MONTHS[-1] + 12 * (visit - len(VISIT_MONTHS) + 1))


def make_patient(seed: int, patient: int) -> Patient:
    """Patient ``patient`` (1-based) of the cohort of ``seed``."""
    rng = rng_for(seed, patient, 0)
    sex = "F" if rng.random() < 0.5 else "M"
    weight = round(float(rng.uniform(55, 90)), 1)
    height = round(float(rng.uniform(1.58, 1.75) + (0.08 if sex == "M" else 0.0)), 2)
    anatomy = Anatomy(half_width=float(rng.uniform(40, 44)), half_depth=float(rng.uniform(32, 36)))
    trend = TRENDS[(patient - 1) % 3]
    max_scale = max(trend_factors(trend, m)[0] for m in range(0, 121)) ** (1 / 3)
    deposits = make_deposits(rng_for(seed, patient, 1), anatomy, max_scale=max_scale)
    rot = _random_rotation(rng, 3.0) @ NOMINAL_ROTATION
    shift = NOMINAL_TRANSLATION + rng.uniform(-5, 5, 3)
    return Patient(
        index=patient,
        patient_id=f"ISLET-{patient:03d}",
        name=f"PHANTOM^P{patient:03d}",
        sex=sex,
        age=int(rng.integers(25, 66)),
        weight_kg=weight,
        height_m=height,
        trend=trend,
        anatomy=anatomy,
        deposits=deposits,
        muscle_suv=float(rng.uniform(0.45, 0.65)),
        graft_ratio=float(rng.uniform(4.0, 6.0)),
        implantation=dt.date(2024, 1, 8) + dt.timedelta(days=int(rng.integers(0, 200))),
        baseline_pose=Pose(rot, shift),
    )


def graft_centre(deposits: list[Deposit]) -> np.ndarray:
    """Mean of the deposit centres (arm frame, mm)."""
    return np.mean([d.centre for d in deposits], axis=0)


def _visit_pose(patient: Patient, seed: int, visit: int, options: Options) -> Pose:
    """Baseline pose, or a rotation about the graft centre plus a shift relative to it."""
    base = patient.baseline_pose
    if visit == 0:
        return base
    rng = rng_for(seed, patient.index, 100 + visit)
    max_deg, max_mm = options.max_rotation_deg, options.max_shift_mm
    rot_delta = _random_rotation(rng, max_deg, min_deg=min(2.0, max_deg))
    direction = rng.standard_normal(3)
    direction /= np.linalg.norm(direction)
    shift = direction * rng.uniform(min(5.0, max_mm), max_mm)
    g = base.rotation @ graft_centre(patient.deposits) + base.translation
    return Pose(rot_delta @ base.rotation, rot_delta @ (base.translation - g) + g + shift)


def mr_frame(orientation: Orientation) -> np.ndarray:
    """Direction matrix (normal, column, row) of the MR acquisition; normal = row × column."""
    if orientation is Orientation.AXIAL:
        return AXIAL.copy()
    if orientation is Orientation.SAGITTAL:
        row, col = np.array([0.0, 1.0, 0.0]), np.array([0.0, 0.0, -1.0])
    else:
        tilt = rotation_matrix(np.array([1.0, 0, 0]), math.radians(15)) @ rotation_matrix(
            np.array([0, 1.0, 0]), math.radians(-10)
        )
        row, col = tilt @ np.array([1.0, 0, 0]), tilt @ np.array([0, 1.0, 0])
    return np.stack([np.cross(row, col), col, row], axis=1)


def _cover(
    frame: np.ndarray,
    centre: np.ndarray,
    extent: tuple[float, float, float],
    points: np.ndarray,
    margin: float,
) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Grow a box (axes = columns of ``frame``) so that it holds ``points`` + ``margin``.

    Returns the new centre and extent; both are unchanged when the points already fit.
    """
    half = np.asarray(extent, dtype=float) / 2
    along = (points - centre) @ frame
    low = np.minimum(-half, along.min(axis=0) - margin)
    high = np.maximum(half, along.max(axis=0) + margin)
    if np.array_equal(low, -half) and np.array_equal(high, half):
        return centre, extent
    return centre + frame @ ((low + high) / 2), tuple(float(x) for x in high - low)


def plan_visit(seed: int, patient_index: int, visit: int, options: Options) -> VisitPlan:
    """Decide everything about visit ``visit`` of patient ``patient_index``."""
    patient = make_patient(seed, patient_index)
    preset = PRESETS[options.size]
    month = visit_month(visit)
    volume_factor, uptake_factor = trend_factors(patient.trend, month)
    states = visit_states(patient.deposits, volume_factor ** (1 / 3))
    pose = _visit_pose(patient, seed, visit, options)
    to_baseline = patient.baseline_pose.matrix() @ pose.inverse().matrix()

    # grids: FOV centred on the arm axis at the level of the graft, as placed at this visit
    centre_arm = np.array([0.0, 0.0, graft_centre(patient.deposits)[2]])
    centre = pose.rotation @ centre_arm + pose.translation
    box = (*FOV_TRANSVERSE_MM, preset.mr_length_mm)
    frame = mr_frame(options.orientation)
    if options.orientation is Orientation.AXIAL:
        mr_extent = (preset.mr_length_mm, FOV_TRANSVERSE_MM[1], FOV_TRANSVERSE_MM[0])
    else:
        mr_extent = box_extent_in_frame(frame, pose.rotation, box)
    # the whole graft (+ margin) is always in the field of view, however long it is
    graft = np.concatenate([surface_points(s) for s in states]) @ pose.rotation.T
    graft += pose.translation
    mr_centre, mr_extent = _cover(frame, centre, mr_extent, graft, 2 * preset.mr_spacing[0])
    mr_grid = grid_around(mr_centre, frame, mr_extent, preset.mr_spacing)
    pet_box = tuple(b + 2 * options.psf_fwhm_mm for b in box)
    pet_extent = box_extent_in_frame(AXIAL, NOMINAL_ROTATION, pet_box)
    pet_centre, pet_extent = _cover(AXIAL, centre, pet_extent, graft, 2 * options.psf_fwhm_mm)
    pet_grid = grid_around(pet_centre, AXIAL, pet_extent, (preset.pet_spacing,) * 3)

    # dates, times, dose and weight
    rng = rng_for(seed, patient_index, 200 + visit)
    visit_date = patient.implantation + dt.timedelta(
        days=7 if month == 0 else round(30.4375 * month)
    )
    day = dt.datetime.combine(visit_date, dt.time(0, 0))
    mr_start = day + dt.timedelta(hours=9, seconds=int(rng.integers(0, 1800)))
    injection = day + dt.timedelta(hours=10, seconds=int(rng.integers(0, 1800)))
    pet_start = injection + dt.timedelta(seconds=int(rng.integers(3600, 4800)))
    dose_bq = float(round(rng.uniform(90e6, 130e6), -3))
    weight_kg = round(patient.weight_kg + float(rng.normal(0, 1.5)), 1)

    # activities (Bq/mL at the series start) from the SUVs: C = SUV * dose * decay / weight_g
    decay = 2.0 ** (-(pet_start - injection).total_seconds() / GA68_HALF_LIFE_S)
    suvbw_per_bqml = weight_kg * 1000.0 / (dose_bq * decay)
    graft_suv = {
        s.deposit.label: patient.muscle_suv
        * patient.graft_ratio
        * uptake_factor
        * s.deposit.uptake_factor
        for s in states
    }
    return VisitPlan(
        seed=seed,
        visit=visit,
        options=options,
        patient=patient,
        month=month,
        volume_factor=volume_factor,
        uptake_factor=uptake_factor,
        states=states,
        pose=pose,
        to_baseline=to_baseline,
        fov_centre=centre,
        mr_grid=mr_grid,
        pet_grid=pet_grid,
        visit_date=visit_date,
        mr_start=mr_start,
        injection=injection,
        pet_start=pet_start,
        dose_bq=dose_bq,
        weight_kg=weight_kg,
        suvbw_per_bqml=suvbw_per_bqml,
        muscle_bqml=patient.muscle_suv / suvbw_per_bqml,
        graft_suv=graft_suv,
        graft_bqml={label: suv / suvbw_per_bqml for label, suv in graft_suv.items()},
        rng=rng,
    )
