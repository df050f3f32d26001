"""Box/crop-restricted computations give exactly the straightforward full-volume results.

The segmentation and measurement hot paths work inside bounding boxes (of the mask, of the
seeds' connected region, of the labels) for interactive speed; here each one is checked, voxel
for voxel and bit for bit, against the plain whole-array computation on random inputs.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from islet_imaging.measure import first_order, measure_graft, suv_peak
from islet_imaging.measure._grid import label_fractions
from islet_imaging.segment import graft
from islet_imaging.segment.cleanup import remove_small_objects
from islet_imaging.volume import Volume

FULL = np.ones((3, 3, 3), bool)
SHAPE = (14, 36, 40)
SPACING = (3.0, 0.8, 0.8)


def random_mask(seed: int, *, density: float = 0.06, hollow: int = 3) -> np.ndarray:
    """Blobby random mask with several components, hollow spheres (cavities), border contact."""
    rng = np.random.default_rng(seed)
    noise = ndi.gaussian_filter(rng.normal(size=SHAPE), (0.7, 2.0, 2.0))
    mask = noise > np.quantile(noise, 1 - density)
    k, j, i = np.indices(SHAPE)
    for _ in range(hollow):
        c = rng.uniform([1, 4, 4], np.array(SHAPE) - [1, 4, 4])
        r = np.sqrt(((k - c[0]) * 3.0) ** 2 + ((j - c[1]) * 0.8) ** 2 + ((i - c[2]) * 0.8) ** 2)
        mask |= (r > 4.0) & (r < 6.0)
    mask[:, 0, 5:9] = True  # touches the array border
    return mask


def components_hit(mask: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    labels, _ = ndi.label(mask, structure=FULL)
    hit = labels[tuple(seeds.T)]
    return np.isin(labels, hit[hit > 0])


@pytest.mark.parametrize("seed", range(6))
def test_fill_holes_and_keep_hit_match_full_volume(seed):
    mask = random_mask(seed)
    assert np.array_equal(graft._fill_holes(mask), ndi.binary_fill_holes(mask))
    rng = np.random.default_rng(seed)
    seeds = np.argwhere(mask)[rng.choice(int(mask.sum()), 2)]
    seeds = np.vstack([seeds, [0, 0, 0]])  # a seed outside the mask selects nothing
    kept = graft._keep_hit(mask, seeds, margin=[1, 2, 2])  # tiny first box: must grow
    assert np.array_equal(kept, components_hit(mask, seeds))
    assert np.array_equal(graft._fill_holes(np.zeros(SHAPE, bool)), np.zeros(SHAPE, bool))


@pytest.mark.parametrize("seed", range(4))
def test_remove_small_objects_matches_full_volume(seed):
    mask = random_mask(seed, density=0.1)
    volume = Volume(mask, spacing=SPACING)
    labels, _ = ndi.label(mask, structure=FULL)
    counts = np.bincount(labels.ravel())
    expected = (counts * np.prod(SPACING) >= 20.0)[labels] & mask
    assert np.array_equal(remove_small_objects(volume, min_volume_mm3=20.0).array, expected)
    as_labels = volume.with_array(labels.astype(np.int16)).as_mask()
    kept = remove_small_objects(as_labels, min_volume_mm3=20.0).array
    assert np.array_equal(kept, np.where(expected, labels, 0))


def image_with_grafts(seed: int) -> tuple[Volume, Volume, np.ndarray]:
    """Noisy muscle-like image with bright blobs, its search region and the blob centres."""
    rng = np.random.default_rng(seed)
    image = 100 + 8 * ndi.gaussian_filter(rng.normal(size=SHAPE), 1.0) * 3
    k, j, i = np.indices(SHAPE)
    centres = rng.uniform([2, 6, 6], np.array(SHAPE) - [2, 6, 6], size=(4, 3)).astype(int)
    for c, amp in zip(centres, (120, 80, 60, 40), strict=True):
        r2 = ((k - c[0]) * 3.0) ** 2 + ((j - c[1]) * 0.8) ** 2 + ((i - c[2]) * 0.8) ** 2
        image += amp * np.exp(-r2 / (2 * 3.0**2))
    image += rng.normal(0, 4, SHAPE)
    mr = Volume(image.astype(np.float32), spacing=SPACING)
    region = mr.with_array(np.ones(SHAPE, bool)).as_mask()
    return mr, region, centres


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("k", [2.0, 4.0])
def test_hysteresis_with_seeds_matches_all_cores_grown(seed, k):
    mr, region, centres = image_with_grafts(seed)
    signal = mr.array.astype(np.float32)
    allowed = region.array
    mean, sd = 100.0, 6.0
    for seeds in (centres[:1], centres[[1, 3]], np.array([[0, 0, 0]])):
        for fraction in (0.5, None):
            args = (mr, signal, allowed, k, mean, sd, fraction, 5.0)
            everything = graft._hysteresis(*args)
            pruned = graft._hysteresis(*args, seeds=seeds)
            assert np.array_equal(components_hit(pruned, seeds), components_hit(everything, seeds))


def test_hysteresis_with_seeds_follows_a_chain_of_cores():
    """Cores strung along a ridge: each grown region reaches the next core's neighbourhood
    only, so the seeds' object is complete only after several rounds of growing."""
    shape = (8, 24, 110)
    k, j, i = np.indices(shape)
    image = 100.0 + 2.0 * np.sin(i * 0.7) * np.cos(j * 0.9)  # muscle texture
    ridge = np.exp(-(((j - 12) * 0.8) ** 2 + ((k - 4) * 3.0) ** 2) / (2 * 1.5**2))
    image += 30 * ridge * (i > 8) * (i < 100)  # above the growing level, below the cores
    for centre in (12, 34, 56, 78, 96):
        r2 = ((k - 4) * 3.0) ** 2 + ((j - 12) * 0.8) ** 2 + ((i - centre) * 0.8) ** 2
        image += 80 * np.exp(-r2 / (2 * 2.0**2))
    mr = Volume(image.astype(np.float32), spacing=SPACING)
    allowed = np.ones(shape, bool)
    seeds = np.array([[4, 12, 12]])
    args = (mr, mr.array, allowed, 4.0, 100.0, 10.0, 0.1, 5.0)
    everything = components_hit(graft._hysteresis(*args), seeds)
    assert everything[4, 12, 96]  # the object runs along the whole chain
    pruned = components_hit(graft._hysteresis(*args, seeds=seeds), seeds)
    assert np.array_equal(pruned, everything)


@pytest.mark.parametrize("seed", range(3))
def test_region_growing_matches_full_volume_flood(seed):
    mr, region, centres = image_with_grafts(seed)
    seeds_mm = mr.index_to_world(centres[:2])
    threshold = 150.0
    out = graft.segment_graft_mr(
        mr,
        method="region_growing",
        seeds_mm=seeds_mm,
        threshold=threshold,
        region=region,
        reference=region,
        min_volume_mm3=0.0,
    )
    expected = ndi.binary_fill_holes(components_hit(mr.array >= threshold, centres[:2]))
    assert np.array_equal(out.array, expected)


def test_measurements_on_boxes_equal_full_volume_statistics():
    mr, _, centres = image_with_grafts(5)
    labels = np.zeros(SHAPE, np.int32)
    labels[mr.array > 150] = 1
    labels[tuple(centres[0])] = 2  # a one-voxel deposit
    label_vol = mr.with_array(labels).as_mask()
    # a coarser "PET" grid, shifted, as SUV
    pet = Volume(
        ndi.zoom(mr.array, (1.0, 0.3, 0.3), order=1) / 100.0,
        spacing=(3.0, 2.7, 2.7),
        origin=(0.4, -0.3, 0.2),
        meta={"units": "SUVbw"},
    )
    table = measure_graft(label_vol, mr=mr, suv=pet, shape=False, pvc=())

    def value(obj, metric):
        hit = table.query("object == @obj and metric == @metric")["value"]
        return float(hit.iloc[0])

    for lab, name in ((0, "graft"), (1, "deposit 1"), (2, "deposit 2")):
        selected = labels > 0 if lab == 0 else labels == lab
        stats = first_order(mr, selected)
        assert value(name, "mr_mean") == stats["mean"]
        assert value(name, "mr_sd") == stats["sd"]
        assert value(name, "mr_median") == stats["median"]
    fractions = label_fractions(label_vol, pet, [1, 2])
    on_pet = fractions[1] >= 0.5
    assert on_pet.any()
    assert value("deposit 1", "suv_max") == first_order(pet, on_pet)["maximum"]
    assert value("deposit 1", "suv_peak") == suv_peak(pet, on_pet)[0]
