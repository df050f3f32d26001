"""PET delineation, PET-guided MR delineation and deposit separation, against analytic truth."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from islet_imaging.errors import SegmentationError
from islet_imaging.segment import (
    PETMethod,
    segment_graft_mr_pet_guided,
    segment_graft_pet,
    split_deposits,
)
from islet_imaging.volume import Volume

SPACING = (2.0, 2.0, 2.0)


def hot_sphere_pet(radius_mm=8.0, centre=(0.0, 0.0, 0.0), peak=10.0, background=1.0):
    """Blurred sphere (FWHM 6 mm) on a 2 mm grid centred on the origin, values in SUV."""
    shape = (32, 32, 32)
    origin = tuple(-15.5 * s for s in SPACING)
    grid = Volume(np.zeros(shape, np.float32), SPACING, origin, meta={"series_uid": "9.1"})
    kji = np.stack(np.indices(shape), -1).reshape(-1, 3)
    dist = np.linalg.norm(grid.index_to_world(kji) - np.asarray(centre), axis=1).reshape(shape)
    act = np.where(dist <= radius_mm, peak, background)
    blurred = ndi.gaussian_filter(act, 6.0 / 2.3548 / 2.0, mode="nearest")
    return grid.with_array(blurred.astype(np.float32), units="SUVbw", modality="PT")


@pytest.mark.parametrize("fraction", [0.41, 0.5])
def test_percent_of_max_threshold(fraction):
    suv = hot_sphere_pet()
    mask = segment_graft_pet(suv, method="percent_max", fraction=fraction)
    peak = float(suv.array.max())
    expected = suv.array >= fraction * peak
    labels, _ = ndi.label(expected)
    expected = labels == labels[np.unravel_index(np.argmax(suv.array), suv.shape)]
    assert np.array_equal(mask.array, expected)
    assert mask.meta["method"] == "pet_percent_max"
    assert mask.meta["parameters"]["hot_spots"][0]["threshold"] == pytest.approx(fraction * peak)


def test_background_corrected_and_absolute():
    suv = hot_sphere_pet(background=2.0)
    mask = segment_graft_pet(suv, method=PETMethod.BACKGROUND_CORRECTED)
    spot = mask.meta["parameters"]["hot_spots"][0]
    # background 2.0 exactly in the 5-15 mm shell (flat there), threshold = B + 0.5 (max - B)
    assert spot["threshold"] == pytest.approx(2.0 + 0.5 * (spot["peak"] - 2.0), rel=1e-3)
    assert np.array_equal(mask.array, suv.array >= spot["threshold"])
    absolute = segment_graft_pet(suv, method="absolute", threshold=6.0)
    assert np.array_equal(absolute.array, suv.array >= 6.0)
    with pytest.raises(SegmentationError, match=r"\[threshold\]"):
        segment_graft_pet(suv, method="absolute")


def test_region_growing_and_multiple_hot_spots():
    a = hot_sphere_pet(centre=(-12.0, 0.0, 0.0), peak=10.0)
    b = hot_sphere_pet(centre=(14.0, 0.0, 0.0), peak=6.0)
    suv = a.with_array(a.array + b.array - 1.0)
    one = segment_graft_pet(suv)  # the brightest hot spot only
    both = segment_graft_pet(suv, min_peak_suv=4.0)
    assert ndi.label(one.array)[1] == 1
    assert ndi.label(both.array)[1] == 2
    grown = segment_graft_pet(suv, method="region_growing", seeds_mm=[(14.0, 0.0, 0.0)])
    centre_idx = np.rint(suv.world_to_index((14.0, 0.0, 0.0))).astype(int)
    assert grown.array[tuple(centre_idx)]
    assert not grown.array[tuple(np.rint(suv.world_to_index((-12.0, 0, 0))).astype(int))]


def test_pet_guided_mr_on_mr_grid():
    suv = hot_sphere_pet(radius_mm=6.0, centre=(2.0, 0.0, 0.0))
    mr_shape = (30, 80, 80)
    spacing = (2.0, 0.75, 0.75)
    origin = tuple(-(n - 1) / 2 * s for n, s in zip(mr_shape, spacing, strict=True))
    mr = Volume(np.zeros(mr_shape, np.float32), spacing, origin, meta={"series_uid": "7.7"})
    kji = np.stack(np.indices(mr_shape), -1).reshape(-1, 3)
    pts = mr.index_to_world(kji)
    inside = np.linalg.norm(pts - (2.0, 0.0, 0.0), axis=1).reshape(mr_shape) <= 6.0
    decoy = np.linalg.norm(pts - (-15.0, 10.0, 0.0), axis=1).reshape(mr_shape) <= 5.0
    rng = np.random.default_rng(0)
    image = 100 + 120 * (inside | decoy) + rng.normal(0, 5, mr_shape)
    mr = mr.with_array(image.astype(np.float32))
    region = mr.with_array(np.ones(mr_shape, bool))
    reference = mr.with_array(np.abs(pts[:, 1].reshape(mr_shape) + 20) < 5)
    mask = segment_graft_mr_pet_guided(mr, suv, region=region, reference=reference)
    assert mask.same_grid(mr)
    assert mask.meta["method"] == "mr_pet_guided"
    assert mask.meta["guide_series_uid"] == "9.1"
    assert not (mask.array & decoy).any()
    assert 2 * (mask.array & inside).sum() / (mask.array.sum() + inside.sum()) > 0.9


def _spheres(spacing, centres, radius):
    shape = tuple(int(60 / s) for s in spacing)
    vol = Volume(np.zeros(shape, bool), spacing)
    kji = np.stack(np.indices(shape), -1).reshape(-1, 3)
    pts = vol.index_to_world(kji)
    inside = np.zeros(len(pts), bool)
    for c in centres:
        inside |= np.linalg.norm(pts - np.asarray(c), axis=1) <= radius
    return vol.with_array(inside.reshape(shape))


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (3.0, 0.6, 0.6)])
def test_split_touching_spheres_not_ellipsoid(spacing):
    touching = _spheres(spacing, [(30, 20, 30), (30, 34, 30)], 8.0)  # centres 14 mm apart
    labels = split_deposits(touching)
    assert labels.array.max() == 2
    assert labels.meta["method"] == "deposits_watershed"
    assert split_deposits(touching, separate_touching=False).array.max() == 1
    # one elongated ellipsoid stays one deposit
    shape = touching.shape
    kji = np.stack(np.indices(shape), -1).reshape(-1, 3) * np.asarray(spacing)
    semi = np.array([6.0, 16.0, 6.0])
    ell = (((kji - (30, 30, 30)) / semi) ** 2).sum(1).reshape(shape) <= 1
    assert split_deposits(touching.with_array(ell)).array.max() == 1


def test_min_volume_in_mm3_not_voxels():
    for spacing in [(1.0, 1.0, 1.0), (2.0, 0.5, 0.5)]:
        small_and_big = _spheres(spacing, [(15, 15, 15), (40, 40, 40)], 3.0)
        big = _spheres(spacing, [(40, 40, 40)], 6.0)
        both = small_and_big.with_array(small_and_big.array | big.array)
        # sphere r=3 mm: 113 mm³; r=6 mm: 905 mm³
        assert split_deposits(both, min_volume_mm3=50).array.max() == 2
        assert split_deposits(both, min_volume_mm3=300).array.max() == 1
