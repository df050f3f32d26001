"""MR graft delineation on a synthetic forearm with analytic ellipsoid grafts (exact truth)."""

from __future__ import annotations

import numpy as np
import pytest

from islet_imaging.errors import SegmentationError
from islet_imaging.segment import (
    MRMethod,
    body_mask,
    bone_mask,
    muscle_mask,
    reference_muscle_roi,
    segment_graft_mr,
    split_deposits,
)

GRAFTS = [
    {"center": (0.0, -12.0, 0.0), "radii": (4.0, 4.0, 6.0)},
    {"center": (8.0, -5.0, 12.0), "radii": (4.0, 5.0, 4.0), "angles": (30, 10, 0)},
]


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


def tissue_truth(forearm, mr) -> np.ndarray:
    kji = np.stack(np.indices(mr.shape), -1).reshape(-1, 3)
    return forearm.tissue(mr.index_to_world(kji)).reshape(mr.shape)


@pytest.mark.parametrize(
    ("seed", "oblique"), [(1, (0, 0, 0)), (2, (20, 10, 5)), (3, (-30, 15, 40))]
)
def test_reference_method_volume_and_dice(forearm, seed, oblique):
    mr, truth = forearm.make(seed=seed, grafts=GRAFTS, oblique_deg=oblique)
    mask = segment_graft_mr(mr)
    volume = np.count_nonzero(mask.array) * mr.voxel_volume_ml
    assert volume == pytest.approx(truth["total_ml"], rel=0.05)
    assert dice(mask.array, truth["union"]) >= 0.85
    labels = split_deposits(mask)
    assert labels.array.max() == len(GRAFTS)
    for analytic, true_mask in zip(truth["volumes_ml"], truth["masks"], strict=True):
        label = np.bincount(labels.array[true_mask]).argmax()
        measured = np.count_nonzero(labels.array == label) * mr.voxel_volume_ml
        assert measured == pytest.approx(analytic, rel=0.15)
    assert mask.meta["kind"] == "mask"
    assert mask.meta["method"] == "mr_reference"
    assert mask.meta["source_series_uid"] == mr.meta["series_uid"]
    assert mask.meta["parameters"]["k"] == 5.0


@pytest.mark.parametrize("method", ["otsu", "multi_otsu", MRMethod.MULTI_OTSU])
def test_otsu_methods(forearm, method):
    mr, truth = forearm.make(seed=4, grafts=GRAFTS, oblique_deg=(10, 0, 0))
    mask = segment_graft_mr(mr, method=method)
    assert dice(mask.array, truth["union"]) >= 0.85
    assert np.count_nonzero(mask.array) * mr.voxel_volume_ml == pytest.approx(
        truth["total_ml"], rel=0.1
    )


def test_dark_mode_for_iron_labelled_islets(forearm):
    mr, truth = forearm.make(seed=5, grafts=GRAFTS, graft_value=30.0, oblique_deg=(15, 0, 0))
    bright = segment_graft_mr(mr, region=muscle_mask(mr, include_enclosed=True))
    assert dice(bright.array, truth["union"]) < 0.1
    dark = segment_graft_mr(mr, polarity="dark")
    assert dark.meta["parameters"]["polarity"] == "dark"
    assert dice(dark.array, truth["union"]) >= 0.85


def test_region_growing_from_seed_in_mm(forearm):
    mr, truth = forearm.make(seed=6, grafts=GRAFTS, oblique_deg=(20, 0, 10))
    mask = segment_graft_mr(mr, method="region_growing", seeds_mm=[GRAFTS[1]["center"]])
    assert dice(mask.array, truth["masks"][1]) >= 0.85
    assert not (mask.array & truth["masks"][0]).any()
    # seeds also restrict the threshold methods to the seeded deposit
    seeded = segment_graft_mr(mr, seeds_mm=[GRAFTS[0]["center"]])
    assert dice(seeded.array, truth["masks"][0]) >= 0.85


def test_tissue_masks(forearm):
    mr, _ = forearm.make(seed=7, grafts=GRAFTS, oblique_deg=(25, -10, 30))
    tissue = tissue_truth(forearm, mr)
    INTENSITY = forearm.intensity
    body = body_mask(mr).array
    assert dice(body, tissue > 0) > 0.99
    bone = bone_mask(mr).array
    true_bone = (tissue == INTENSITY["cortex"]) | (tissue == INTENSITY["marrow"])
    assert np.count_nonzero(bone & true_bone) / np.count_nonzero(true_bone) > 0.95
    muscle = muscle_mask(mr, include_enclosed=False).array
    assert not (muscle & true_bone).any()
    assert (
        np.count_nonzero(muscle & (tissue == INTENSITY["muscle"])) / np.count_nonzero(muscle) > 0.99
    )


def test_reference_roi_auto_and_manual(forearm):
    mr, truth = forearm.make(seed=8, grafts=GRAFTS)
    roi = reference_muscle_roi(mr)
    assert roi.meta["method"] == "reference_auto"
    centre_idx = np.argwhere(roi.array).mean(0)
    graft_idx = np.argwhere(truth["union"])
    gap = np.min(np.linalg.norm((graft_idx - centre_idx) * np.asarray(mr.spacing), axis=1))
    assert gap >= 10.0
    values = mr.array[roi.array]
    assert abs(values.mean() - forearm.intensity["muscle"]) < 3.0
    manual = reference_muscle_roi(mr, center_mm=(0.0, 15.0, 0.0), radius_mm=4.0)
    assert manual.meta["method"] == "reference_manual"
    assert np.allclose(manual.meta["center_mm"], (0.0, 15.0, 0.0), atol=2.0)
    # a 4 mm ball holds about 268 mm³ of muscle
    assert np.count_nonzero(manual.array) * np.prod(mr.spacing) == pytest.approx(268, rel=0.2)


def test_errors_name_the_parameter(forearm):
    mr, _ = forearm.make(seed=9, grafts=GRAFTS)
    with pytest.raises(SegmentationError, match=r"\[method\].*choose one of"):
        segment_graft_mr(mr, method="watershed")
    with pytest.raises(SegmentationError, match=r"\[seeds_mm\]"):
        segment_graft_mr(mr, method="region_growing")
    with pytest.raises(SegmentationError, match=r"\[seeds_mm\].*outside"):
        segment_graft_mr(mr, seeds_mm=[(500.0, 0.0, 0.0)])
    with pytest.raises(SegmentationError, match=r"\[region\].*not on the image grid"):
        segment_graft_mr(mr, region=_shifted(mr))


def _shifted(mr):
    from islet_imaging.volume import Volume

    return Volume(np.ones(mr.shape, bool), mr.spacing, np.add(mr.origin, 5.0), mr.direction)
