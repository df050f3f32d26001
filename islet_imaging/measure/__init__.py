"""Measurements: Volume + mask -> numbers with units and provenance (tidy tables)."""

from islet_imaging.measure.intensity import contrast_to_noise, first_order, suv_peak
from islet_imaging.measure.pvc import gtm_correct, rc_correct, recovery_coefficient
from islet_imaging.measure.records import mask_sha256, measure_graft
from islet_imaging.measure.shape import mesh_features, object_volumes_ml, volume_ml

__all__ = [
    "contrast_to_noise",
    "first_order",
    "gtm_correct",
    "mask_sha256",
    "measure_graft",
    "mesh_features",
    "object_volumes_ml",
    "rc_correct",
    "recovery_coefficient",
    "suv_peak",
    "volume_ml",
]
