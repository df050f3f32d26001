"""Report fixtures: the tiny DICOM cohort of ``tests/study`` with known, injected results."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location(
    "_study_cohort", Path(__file__).parents[1] / "study" / "conftest.py"
)
_cohort = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_cohort)
PATIENTS = _cohort.PATIENTS


@pytest.fixture(scope="session")
def tiny_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder of the tiny DICOM cohort (see ``tests/study/conftest.py``)."""
    return _cohort.write_tiny_cohort(tmp_path_factory.mktemp("tiny"))
