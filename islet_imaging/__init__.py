"""islet-imaging: imaging of intramuscular islet grafts (MRI + PET), from DICOM to reports.

The public API is re-exported here and imported lazily, so ``import islet_imaging`` stays fast
and never imports Qt or napari.
"""

from __future__ import annotations

import importlib
from typing import Any

from islet_imaging.errors import (
    DicomSeriesError,
    GeometryError,
    IsletImagingError,
    MissingTagError,
    RegistrationError,
    SegmentationError,
    WorkspaceError,
)
from islet_imaging.volume import Volume

__version__ = "0.1.0"

# public name -> module that defines it (imported on first access)
_LAZY = {
    "scan": "islet_imaging.io.discover",
    "load_series": "islet_imaging.io.dicom",
    "load_volumes": "islet_imaging.io.dicom",
    "read_volume": "islet_imaging.io.files",
    "read_mask": "islet_imaging.io.files",
    "write_volume": "islet_imaging.io.files",
    "to_suv": "islet_imaging.io.pet",
    "resample_like": "islet_imaging.register",
    "suv_factors": "islet_imaging.io.pet",
    "register_pet_to_mr": "islet_imaging.register",
    "register_to_baseline": "islet_imaging.register",
    "Registration": "islet_imaging.register",
    "write_series": "islet_imaging.io.dicom_write",
    "make_visit": "islet_imaging.phantom",
    "generate_study": "islet_imaging.phantom",
    "write_seg": "islet_imaging.io.seg",
    "read_seg": "islet_imaging.io.seg",
    "write_sr": "islet_imaging.io.sr",
    "read_sr": "islet_imaging.io.sr",
    "read_rtstruct": "islet_imaging.io.rtstruct",
    "export_deidentified": "islet_imaging.io.deidentify",
    "segment_graft_mr": "islet_imaging.segment.graft",
    "segment_graft_pet": "islet_imaging.segment.graft",
    "segment_graft_mr_pet_guided": "islet_imaging.segment.graft",
    "split_deposits": "islet_imaging.segment.graft",
    "reference_muscle_roi": "islet_imaging.segment.muscle",
    "measure_graft": "islet_imaging.measure.records",
    "Workspace": "islet_imaging.study.workspace",
    "process_visit": "islet_imaging.study.pipeline",
    "run_batch": "islet_imaging.study.batch",
    "longitudinal_table": "islet_imaging.study.longitudinal",
    "write_report": "islet_imaging.report.html",
}

__all__ = [
    "__version__",
    "Volume",
    "IsletImagingError",
    "DicomSeriesError",
    "GeometryError",
    "MissingTagError",
    "RegistrationError",
    "SegmentationError",
    "WorkspaceError",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'islet_imaging' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
