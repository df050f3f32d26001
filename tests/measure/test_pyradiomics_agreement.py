"""Shape and first-order values equal PyRadiomics' where the definitions coincide.

PyRadiomics (pyradiomics-bhklab) runs with default settings: no resampling, no normalisation;
shape features from its marching-cubes mesh, first-order from the masked voxels.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest

from islet_imaging.measure import first_order, mesh_features, volume_ml
from islet_imaging.phantom import make_visit


@pytest.fixture(scope="module")
def radiomics_features():
    from radiomics import featureextractor

    logging.getLogger("radiomics").setLevel(logging.ERROR)
    visit = make_visit(seed=2, size="small", orientation="oblique")
    image, mask = (
        visit.mr_t2,
        visit.deposit_labels.with_array((visit.deposit_labels.array == 2).astype(np.uint8)),
    )
    extractor = featureextractor.RadiomicsFeatureExtractor()
    extractor.disableAllFeatures()
    extractor.enableFeatureClassByName("shape")
    extractor.enableFeatureClassByName("firstorder")
    result = extractor.execute(image.to_sitk(), mask.to_sitk())
    return image, mask, {k.split("_", 2)[-1]: v for k, v in result.items() if "original_" in k}


def test_shape_equals_pyradiomics(radiomics_features):
    _, mask, ref = radiomics_features
    assert volume_ml(mask) * 1000 == pytest.approx(float(ref["VoxelVolume"]), rel=1e-9)
    mesh = mesh_features(mask)
    assert mesh["mesh_volume_ml"] * 1000 == pytest.approx(float(ref["MeshVolume"]), rel=1e-9)
    assert mesh["surface_area_mm2"] == pytest.approx(float(ref["SurfaceArea"]), rel=1e-9)
    assert mesh["max_diameter_mm"] == pytest.approx(float(ref["Maximum3DDiameter"]), rel=1e-9)
    assert mesh["sphericity"] == pytest.approx(float(ref["Sphericity"]), rel=1e-9)


def test_first_order_equals_pyradiomics(radiomics_features):
    image, mask, ref = radiomics_features
    stats = first_order(image, mask.array.astype(bool))
    pairs = {
        "mean": "Mean",
        "variance": "Variance",
        "minimum": "Minimum",
        "maximum": "Maximum",
        "median": "Median",
        "percentile_10": "10Percentile",
        "percentile_90": "90Percentile",
    }
    for ours, theirs in pairs.items():
        assert stats[ours] == pytest.approx(float(ref[theirs]), rel=1e-9), ours
