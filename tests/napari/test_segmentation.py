"""The segmentation widget's computation (no Qt): cached context, seeds, deposits, PET."""

from __future__ import annotations

import numpy as np
import pytest
from napari.components import ViewerModel
from napari.layers import Points
from napari_islet_imaging._layers import lps_to_world, to_display
from napari_islet_imaging._widgets.segmentation import (
    methods,
    prepare,
    seeds_lps,
    segment,
    show_mask,
)

from islet_imaging.io.pet import to_suv
from islet_imaging.phantom import make_visit


@pytest.fixture(scope="module")
def visit():
    return make_visit(seed=0, size="small")


def test_split_deposits_keeps_the_union_and_separates_the_isolated_deposit(visit):
    context = prepare(visit.mr_t2, pet=False)
    assert context.region.same_grid(visit.mr_t2)
    assert context.reference.array.any()
    whole = segment(context, method="otsu", min_volume_mm3=10.0)
    split = segment(context, method="otsu", split=True, min_volume_mm3=10.0)
    np.testing.assert_array_equal(whole.array > 0, split.array > 0)
    assert split.is_mask
    assert split.meta["method"] == "mr_otsu"
    isolated = visit.deposit_labels.array == 4  # deposits 1-3 touch along the track
    labels_on_4 = np.unique(split.array[isolated])
    assert len(labels_on_4) == 1
    assert labels_on_4[0] > 0
    np.testing.assert_array_equal(split.array == labels_on_4[0], isolated)


def test_pet_preview_from_a_seed_in_world_coordinates(visit):
    suv = to_suv(visit.pet)
    centre = np.array(visit.truth["deposits"][0]["centre_mm"])
    points = Points(lps_to_world(centre)[None] - [0, 10, 0], translate=(0, 10, 0))
    np.testing.assert_allclose(seeds_lps(points), centre[None])  # through the layer transform
    mask = segment(prepare(suv, pet=True), method="percent_max", seeds_mm=seeds_lps(points))
    truth = visit.pet_deposit_labels.array > 0
    dice = 2 * np.count_nonzero(mask.array & truth) / (mask.array.sum() + truth.sum())
    assert dice > 0.7
    assert methods(pet=True)[0] == "percent_max"
    assert "otsu" in methods(pet=False)

    viewer = ViewerModel()
    layer = show_mask(viewer, mask, name="preview")
    again = show_mask(viewer, mask.with_array(np.zeros_like(mask.array)), name="preview")
    assert again is layer
    assert not layer.data.any()
    assert layer.data.shape == to_display(suv).shape
