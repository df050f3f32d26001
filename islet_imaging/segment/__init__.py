"""Segmentation: Volume (+ options) -> mask Volume, in physical units, with provenance meta."""

from islet_imaging.segment.cleanup import fill_holes, keep_largest, remove_small_objects
from islet_imaging.segment.graft import (
    MRMethod,
    PETMethod,
    Polarity,
    segment_graft_mr,
    segment_graft_mr_pet_guided,
    segment_graft_pet,
    split_deposits,
)
from islet_imaging.segment.muscle import body_mask, bone_mask, muscle_mask, reference_muscle_roi

__all__ = [
    "MRMethod",
    "PETMethod",
    "Polarity",
    "body_mask",
    "bone_mask",
    "fill_holes",
    "keep_largest",
    "muscle_mask",
    "reference_muscle_roi",
    "remove_small_objects",
    "segment_graft_mr",
    "segment_graft_mr_pet_guided",
    "segment_graft_pet",
    "split_deposits",
]
