"""Registration against known transforms: analytic forearm phantoms sampled on moved grids."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import SimpleITK as sitk
from scipy.spatial.transform import Rotation

from islet_imaging import Volume
from islet_imaging.errors import IsletImagingError, RegistrationError
from islet_imaging.phantom import make_visit
from islet_imaging.register import (
    Registration,
    register_pet_to_mr,
    register_to_baseline,
    resample_like,
)

RNG = np.random.default_rng(7)
BLOBS = np.column_stack(
    [RNG.uniform(-30, 30, 40), RNG.uniform(-22, 22, 40), RNG.uniform(-90, 90, 40)]
)
BLOB_AMP = RNG.uniform(-45, 45, 40)
GRAFTS = np.array([[-8.0, -12.0, -6.0], [6.0, -14.0, 8.0], [-2.0, 16.0, 14.0]])
GRAFT_R = np.array([5.0, 4.0, 6.0])


def _inside(signed_mm, width):
    return 1.0 / (1.0 + np.exp(np.clip(signed_mm / width, -50, 50)))


def forearm(points: np.ndarray, *, pet: bool = False) -> np.ndarray:
    """Analytic forearm (LPS mm, arm along z): skin, muscle texture, two bones, three grafts."""
    x, y, z = points[..., 0], points[..., 1], points[..., 2]
    width = 2.5 if pet else 0.6  # edge width: the PET's resolution is coarser
    scale = 1.0 + 0.003 * z  # the arm tapers
    ellipse = np.sqrt((x / (45 * scale)) ** 2 + (y / (34 * scale)) ** 2)
    arm = _inside((ellipse - 1.0) * 38, width)
    muscle = _inside((ellipse - 0.9) * 38, width)
    radius = _inside(np.hypot(x - 18 - 0.05 * z, y - 6) - 7.0, width)
    ulna = _inside(np.hypot(x + 17, y - 8 + 0.04 * z) - 5.5 - 0.02 * z, width)
    graft = np.zeros_like(x)
    for centre, r in zip(GRAFTS, GRAFT_R, strict=True):
        graft = np.maximum(graft, _inside(np.linalg.norm(points - centre, axis=-1) - r, width))
    if pet:
        return 1.0 * muscle + 0.3 * (arm - muscle) - 0.8 * (radius + ulna) + 12.0 * graft
    texture = np.zeros_like(x)
    for centre, amp in zip(BLOBS, BLOB_AMP, strict=True):
        texture += amp * np.exp(-np.sum((points - centre) ** 2, axis=-1) / (2 * 8.0**2))
    image = 320 * (arm - muscle) + (150 + texture) * muscle
    image = image * (1 - radius - ulna) + 30 * (radius + ulna)
    return image * (1 - graft) + 420 * graft


def sample(shape, spacing, centre, func, **kw) -> Volume:
    """A Volume (identity direction) centred on ``centre`` with values ``func(world points)``."""
    spacing = np.asarray(spacing, float)
    origin_zyx = np.asarray(centre, float)[::-1] - spacing * (np.asarray(shape) - 1) / 2
    grid = Volume(
        np.zeros(shape, np.float32),
        spacing=tuple(spacing),
        origin=tuple(origin_zyx[::-1]),
        direction=np.eye(3)[:, ::-1],
    )
    k, j, i = np.indices(shape)
    world = grid.index_to_world(np.stack([k, j, i], axis=-1))
    return grid.with_array(func(world, **kw).astype(np.float32), modality=(kw and "PT") or "MR")


MR_SHAPE, MR_SPACING = (34, 56, 60), (3.0, 2.0, 2.0)


def baseline() -> Volume:
    return sample(MR_SHAPE, MR_SPACING, (0, 0, 0), forearm)


def moved_visit(rotvec_deg, shift_mm):
    """Follow-up visit: the arm moved by T (follow-up world -> baseline world)."""
    rot = Rotation.from_rotvec(np.radians(rotvec_deg)).as_matrix()
    shift = np.asarray(shift_mm, float)

    def visit_func(points):
        return forearm(points @ rot.T + shift)

    # the technician centres the field of view on the arm (with a 9 mm slab offset)
    centre = rot.T @ (np.array([0.0, 0.0, 9.0]) - shift)
    visit = sample(MR_SHAPE, MR_SPACING, centre, visit_func)

    def truth(x):  # baseline point -> follow-up point, T^-1
        return (np.asarray(x) - shift) @ rot

    return visit, truth


def graft_points(volume: Volume) -> np.ndarray:
    """World coordinates (LPS mm) of the graft voxel centres of ``volume``'s grid."""
    k, j, i = np.indices(volume.shape)
    world = volume.index_to_world(np.stack([k, j, i], axis=-1)).reshape(-1, 3)
    inside = np.zeros(len(world), bool)
    for centre, r in zip(GRAFTS, GRAFT_R, strict=True):
        inside |= np.linalg.norm(world - centre, axis=1) <= r
    return world[inside]


def tre(reg: Registration, points: np.ndarray, truth) -> np.ndarray:
    found = np.array([reg.transform.TransformPoint(tuple(p)) for p in points])
    return np.linalg.norm(found - truth(points), axis=1)


# ----------------------------------------------------------------------------- visit to baseline
def phantom_tre(reg: Registration, baseline_visit, visit) -> np.ndarray:
    """TRE (mm) over the baseline graft voxel centres, from the phantom's known transform."""
    points = baseline_visit.graft_mask.index_to_world(np.argwhere(baseline_visit.graft_mask.array))
    to_baseline = np.asarray(visit.truth["transform_to_baseline"]["matrix_lps"])
    inverse = np.linalg.inv(to_baseline)  # baseline point -> this visit's point
    return tre(reg, points, lambda x: x @ inverse[:3, :3].T + inverse[:3, 3])


@pytest.mark.parametrize(("visit_index", "sequence"), [(1, "mr_t2"), (3, "mr_t1")])
def test_phantom_visit_to_baseline_tre_below_1mm(phantom_visit, visit_index, sequence):
    visit = make_visit(seed=0, patient=1, visit=visit_index, size="small")
    moved = visit.truth["transform_to_baseline"]
    assert moved["rotation_deg"] > 5
    assert np.linalg.norm(moved["translation_mm"]) > 30
    reg = register_to_baseline(getattr(visit, sequence), getattr(phantom_visit, sequence))
    errors = phantom_tre(reg, phantom_visit, visit)
    assert errors.max() < 1.0, f"TRE mean {errors.mean():.3f} max {errors.max():.3f} mm"
    assert reg.metric < reg.info["metric_initial"]
    # tissues (bone, muscles, fat) do not change between visits: they must line up
    labels = reg.apply(visit.tissue_labels)
    assert labels.array.dtype == visit.tissue_labels.array.dtype
    assert set(np.unique(labels.array)) <= set(np.unique(visit.tissue_labels.array))
    inside = labels.array > 0
    agree = (labels.array == phantom_visit.tissue_labels.array)[inside].mean()
    assert agree > 0.9


@pytest.mark.parametrize(
    ("rotvec_deg", "shift_mm"),
    [([10.0, -5.0, 9.0], [22.0, -14.0, 15.0])],  # 14.4°, 30 mm: the limits of repositioning
)
def test_extreme_repositioning_tre_below_1mm(rotvec_deg, shift_mm):
    fixed = baseline()
    moving, truth = moved_visit(rotvec_deg, shift_mm)
    reg = register_to_baseline(moving, fixed)
    errors = tre(reg, graft_points(fixed), truth)
    assert errors.max() < 1.0, f"TRE mean {errors.mean():.3f} max {errors.max():.3f} mm"
    assert reg.info["model"] == "rigid"


def test_affine_mode_and_save_load_roundtrip(tmp_path):
    fixed = baseline()
    moving, truth = moved_visit([5.0, 0.0, -10.0], [10.0, 15.0, -12.0])
    reg = register_to_baseline(moving, fixed, mode="affine", candidates=1)
    assert reg.transform.GetName() == "AffineTransform"
    assert tre(reg, graft_points(fixed), truth).max() < 1.0
    path = reg.save(tmp_path / "visit1_to_baseline.tfm")
    assert json.loads(path.with_suffix(".json").read_text())["info"]["model"] == "affine"
    loaded = Registration.load(path)
    np.testing.assert_allclose(loaded.matrix, reg.matrix, atol=1e-9)
    np.testing.assert_allclose(loaded.apply(moving).array, reg.apply(moving).array, atol=1e-4)
    with pytest.raises(IsletImagingError, match="overwrite"):
        reg.save(path)


# ----------------------------------------------------------------------------- PET to MR
@pytest.mark.parametrize("shift", [(0.0, 0.0, 0.0), (2.0, -2.5, 3.0), (-3.0, 1.5, -4.0)])
def test_phantom_pet_to_mr_recovers_shift_below_1mm(phantom_visit, shift):
    shift = np.asarray(shift)
    pet = phantom_visit.pet
    # the PET displaced by `shift` in patient space: an MR point x is at x + shift in the PET
    moved = dataclasses.replace(pet, origin=tuple(np.asarray(pet.origin) + shift))
    reg = register_pet_to_mr(moved, phantom_visit.mr_t2)
    mask = phantom_visit.graft_mask
    points = mask.index_to_world(np.argwhere(mask.array))
    errors = tre(reg, points, lambda x: x + shift)
    assert errors.max() < 1.0, f"PET-MR error mean {errors.mean():.3f} max {errors.max():.3f}"
    assert reg.info["init"].startswith("identity")
    aligned = reg.apply(moved)
    assert aligned.same_grid(phantom_visit.mr_t2)
    assert aligned.meta["units"] == "BQML"
    assert "headers" not in aligned.meta


def misaligned_pet(visit, shift_mm, rotvec_deg):
    """The visit's PET moved rigidly about the graft centre; returns it and the true transform.

    The PET's grid is rotated by R about the centre c of the graft and shifted by t, so the
    anatomy at MR point x shows at PET point R (x - c) + c + t.
    """
    mask = visit.graft_mask
    centre = mask.index_to_world(np.argwhere(mask.array)).mean(axis=0)
    rot = Rotation.from_rotvec(np.radians(rotvec_deg)).as_matrix()
    shift = np.asarray(shift_mm, float)
    pet = visit.pet
    moved = dataclasses.replace(
        pet,
        origin=tuple(rot @ (np.asarray(pet.origin) - centre) + centre + shift),
        direction=rot @ np.asarray(pet.direction),
    )
    return moved, lambda x: (x - centre) @ rot.T + centre + shift


# oblique MR acquisitions on which mutual information over the whole focus region slid the
# PET by 2.7-5.9 mm along the arm (a near-cylinder: only the graft pins the PET along it);
# the arm lies along the patient's z axis within 3°
@pytest.mark.parametrize(
    ("seed", "shift_mm", "rotvec_deg"),
    [
        (0, (0.0, 0.0, 0.0), (0.0, 0.0, 0.0)),
        (0, (0.0, 0.0, 4.0), (0.0, 3.0, 0.0)),
        (1, (0.0, 0.0, 4.0), (0.0, 3.0, 0.0)),
    ],
)
def test_pet_to_mr_oblique_mr_misaligned_pet_below_1mm(seed, shift_mm, rotvec_deg):
    visit = make_visit(seed=seed, size="small", orientation="oblique")
    pet, truth = misaligned_pet(visit, shift_mm, rotvec_deg)
    reg = register_pet_to_mr(pet, visit.mr_t2)
    points = visit.graft_mask.index_to_world(np.argwhere(visit.graft_mask.array))
    errors = tre(reg, points, truth)
    assert errors.max() < 1.0, f"PET-MR error mean {errors.mean():.3f} max {errors.max():.3f}"
    assert reg.metric < reg.info["metric_initial"] or not any(shift_mm)
    assert reg.info["core_pass"]["pet_fwhm_source"] == "PET voxel size"


def test_pet_to_mr_no_overlap_raises():
    mr = baseline()
    pet = sample((20, 20, 20), (4.0, 4.0, 4.0), (0, 0, 400), forearm, pet=True)
    with pytest.raises(RegistrationError, match="do not overlap"):
        register_pet_to_mr(pet, mr)


def test_visit_to_baseline_unrelated_images_raise():
    fixed = baseline()
    noise = fixed.with_array(np.random.default_rng(0).normal(0, 1, fixed.shape).astype("f4"))
    flat = fixed.with_array(np.zeros(fixed.shape, np.float32))
    with pytest.raises(RegistrationError):
        register_to_baseline(flat, noise)


# ----------------------------------------------------------------------------- resample_like
def test_resample_like_identity_and_interpolation_defaults():
    fine = baseline()
    coarse = sample((17, 28, 30), (6.0, 4.0, 4.0), (0, 0, 0), forearm)
    back = resample_like(fine, coarse)
    assert back.same_grid(coarse)
    assert back.array.dtype == np.float32
    # a point at a common voxel centre keeps its value exactly
    labels = fine.with_array((fine.array > 400).astype(np.uint8) * 3).as_mask()
    out = resample_like(labels, coarse)
    assert out.array.dtype == np.uint8
    assert set(np.unique(out.array)) <= {0, 3}
    with pytest.raises(IsletImagingError, match="nearest"):
        resample_like(labels, coarse, interpolation="linear")
    shifted = sitk.TranslationTransform(3, (0.0, 0.0, 6.0))  # ref point -> volume point + 6 mm z
    moved = resample_like(coarse, coarse, transform=shifted)
    np.testing.assert_allclose(moved.array[:-1], coarse.array[1:], atol=1e-4)


def test_pet_to_mr_implausible_correction_raises(phantom_visit):
    pet = phantom_visit.pet
    moved = dataclasses.replace(
        pet, origin=tuple(np.asarray(pet.origin) + np.array([0.0, 0.0, 4.0]))
    )
    with pytest.raises(RegistrationError, match="implausible"):
        register_pet_to_mr(moved, phantom_visit.mr_t2, max_shift_mm=1.0)
