"""Validation on phantom truth (islet_imaging.phantom): several seeds and MR orientations.

Truth: analytic deposit volumes, voxel-centre deposit labels on the MR grid, PET SUVbw per
deposit. Limits from the issue: graft volume within 5 % (grafts >= 0.2 mL), Dice >= 0.85,
deposit count exact for separated deposits, PVC mean within 10 % for deposits >= 1 mL.

Separated deposits are groups of deposits that neither touch (analytic contact) nor have truth
voxels that are 26-neighbours: a gap of at least one voxel, as the segmentation's
26-connectivity needs. Each such group must be one object of its own (a group of touching
deposits may also be split into its deposits, never one deposit into parts); groups below the
detection limit may be missed but never merged or invented.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from islet_imaging.io.pet import to_suv
from islet_imaging.measure import gtm_correct
from islet_imaging.phantom import make_visit
from islet_imaging.segment import segment_graft_mr, split_deposits

#: (seed, MR orientation); "small" phantom: MR 1.5 × 1.5 × 3 mm, PET 4 mm, PSF 5 mm
CASES = [
    (1, "oblique"),
    (2, "sagittal"),
    (3, "axial"),
    (7, "oblique"),
    (11, "sagittal"),
    (13, "oblique"),
    # marrow fused with fat by partial volume across 3 mm sagittal slices (was +72 %)
    (17, "sagittal"),
    (15, "sagittal"),
    (5, "sagittal"),
    (9, "axial"),
    (18, "oblique"),
    # grafts bulging against the subcutaneous fat on 3 mm sagittal slices: the muscle/fat edge
    # exclusion took the graft voxels next to the fat (was -6.0 % and -5.7 %)
    (4, "sagittal"),
    (34, "sagittal"),
    # a separated 18 mm³ deposit below the detection limit found by itself (3 objects, 2 needed)
    (0, "sagittal"),
    # separated deposits 26-adjacent in the truth (< 1 voxel gap: one group); touching split apart
    (35, "axial"),
    (79, "oblique"),
]
#: (seed, MR orientation) of patient 1's visit 4 (shrinking deposits): a small deposit apart from
#: a big one joined to it by a slice of partial-volume voxels (~2/3 graft), too shallow for the
#: distance map; split on the image signal (one object holding both before)
SHRUNK_CASES = [(1, "oblique"), (9, "axial"), (12, "oblique"), (17, "axial")]
#: deposits below this volume (mm³) are under the detection limit of a 6.75 mm³ voxel grid
MIN_DEPOSIT_MM3 = 30.0


def _separated_groups(visit) -> list[list[dict]]:
    """Deposits joined by an analytic contact or by 26-adjacent truth voxels, grouped."""
    labels = visit.deposit_labels.array
    parent = {d["label"]: d["label"] for d in visit.truth["deposits"]}

    def find(x: int) -> int:
        while parent[x] != x:
            x = parent[x]
        return x

    pairs = [tuple(p) for p in visit.truth["graft"]["touching_pairs"]]
    for label in parent:
        near = ndi.binary_dilation(labels == label, np.ones((3, 3, 3), bool))
        pairs += [(label, int(o)) for o in np.unique(labels[near]) if o not in (0, label)]
    for a, b in pairs:
        parent[find(a)] = find(b)
    groups: dict[int, list[dict]] = {}
    for deposit in visit.truth["deposits"]:
        groups.setdefault(find(deposit["label"]), []).append(deposit)
    return list(groups.values())


def _assert_separated_count(visit, labels: np.ndarray) -> None:
    truth = visit.deposit_labels.array
    owners: dict[int, list[int]] = {o: [] for o in range(1, int(labels.max()) + 1)}
    for index, group in enumerate(_separated_groups(visit)):
        found = set()
        for deposit in group:
            inside = labels[truth == deposit["label"]]
            centre = np.rint(visit.mr_t2.world_to_index([deposit["centre_mm"]])[0]).astype(int)
            found |= set(np.unique(inside).tolist()) | {int(labels[tuple(centre)])}
            parts = np.bincount(inside)[1:]
            if deposit["volume_ml_analytic"] * 1000 >= MIN_DEPOSIT_MM3 and parts.sum():
                assert parts.max() >= 0.8 * parts.sum(), f"deposit {deposit['label']} split"
        found -= {0}
        for obj in found:
            owners[obj].append(index)
        volume_mm3 = 1000 * sum(d["volume_ml_analytic"] for d in group)
        if volume_mm3 >= MIN_DEPOSIT_MM3:
            assert found, f"deposits {[d['label'] for d in group]} missed"
        assert len(found) <= len(group)
    # no object without a deposit, none holding two separated groups
    assert all(len(groups) == 1 for groups in owners.values()), owners


def _cut_by_fov(labels: np.ndarray) -> set[int]:
    edges = np.concatenate([np.take(labels, i, axis=a).ravel() for a in range(3) for i in (0, -1)])
    return set(np.unique(edges)) - {0}


VISITS = [(s, o, 0) for s, o in CASES] + [(s, o, 4) for s, o in SHRUNK_CASES]


@pytest.fixture(
    scope="module",
    params=VISITS,
    ids=[f"seed{s}-{o}" + f"-visit{v}" * bool(v) for s, o, v in VISITS],
)
def visit(request):
    seed, orientation, visit = request.param
    return make_visit(seed=seed, visit=visit, size="small", orientation=orientation)


@pytest.fixture(scope="module")
def segmented(visit):
    mask = segment_graft_mr(visit.mr_t2)
    return mask, split_deposits(mask, image=visit.mr_t2, min_volume_mm3=MIN_DEPOSIT_MM3)


def test_mr_graft_volume_dice_and_count(visit, segmented):
    mask, labels = segmented
    truth = visit.truth["graft"]
    assert not _cut_by_fov(visit.deposit_labels.array)
    assert truth["volume_ml_analytic"] >= 0.2
    volume = np.count_nonzero(mask.array) * visit.mr_t2.voxel_volume_ml
    assert volume == pytest.approx(truth["volume_ml_analytic"], rel=0.05)
    t = visit.graft_mask.array
    dice = 2 * np.count_nonzero(mask.array & t) / (mask.array.sum() + t.sum())
    assert dice >= 0.85
    _assert_separated_count(visit, labels.array)
    # splitting on the image signal moves no voxel into or out of the deposits
    unsplit = split_deposits(mask, min_volume_mm3=MIN_DEPOSIT_MM3).array > 0
    assert np.array_equal(labels.array > 0, unsplit)


def test_pet_pvc_mean_within_10_percent(visit, segmented):
    suv = to_suv(visit.pet)
    fwhm = visit.truth["pet"]["psf_fwhm_mm"]
    _, labels = segmented
    truth_labels = visit.deposit_labels.array
    big = [d for d in visit.truth["deposits"] if d["volume_ml_analytic"] >= 1.0]
    assert big
    with_truth = gtm_correct(suv, visit.deposit_labels, fwhm_mm=fwhm)
    with_ours = gtm_correct(suv, labels, fwhm_mm=fwhm)
    for deposit in big:
        in_truth = truth_labels == deposit["label"]
        assert with_truth[deposit["label"]]["measured"] < 0.9 * deposit["suvbw"]
        assert with_truth[deposit["label"]]["corrected"] == pytest.approx(
            deposit["suvbw"], rel=0.10
        )
        ours = int(np.bincount(labels.array[in_truth]).argmax())
        members = [
            d
            for d in visit.truth["deposits"]
            if np.any(labels.array[truth_labels == d["label"]] == ours)
        ]
        expected = sum(d["suvbw"] * d["volume_ml_analytic"] for d in members) / sum(
            d["volume_ml_analytic"] for d in members
        )
        assert with_ours[ours]["corrected"] == pytest.approx(expected, rel=0.10)


#: sagittal seeds 5, 14 and 17: cortex/muscle partial volume one slice away from the bone
#: looked like dark deposits (+21 %, +34 %, +80 % before the bone margin followed the voxel size)
DARK_CASES = [
    (3, "axial"),
    (1, "oblique"),
    (2, "sagittal"),
    (5, "sagittal"),
    (14, "sagittal"),
    (17, "sagittal"),
    (19, "sagittal"),
    (12, "oblique"),
    # deposits bulging against the subcutaneous fat (their rim there was cut off: -5 %)
    (4, "sagittal"),
    (10, "oblique"),
]


@pytest.mark.parametrize(("seed", "orientation"), DARK_CASES)
def test_iron_labelled_dark_deposits(seed, orientation):
    visit = make_visit(seed=seed, size="small", orientation=orientation, iron_labelled=True)
    mask = segment_graft_mr(visit.mr_t2, polarity="dark")
    t = visit.graft_mask.array
    dice = 2 * np.count_nonzero(mask.array & t) / (mask.array.sum() + t.sum())
    assert dice >= 0.85
    volume = np.count_nonzero(mask.array) * visit.mr_t2.voxel_volume_ml
    assert volume == pytest.approx(visit.truth["graft"]["volume_ml_analytic"], rel=0.05)
