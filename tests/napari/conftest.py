"""Fixtures of the napari plugin tests."""

from __future__ import annotations

import pytest
from _plugin_data import DicomVisit, write_visit


@pytest.fixture
def dicom_visit(tmp_path) -> DicomVisit:
    """An oblique anisotropic MR and a coronal PET of one visit, written as DICOM."""
    return write_visit(tmp_path / "visit")
