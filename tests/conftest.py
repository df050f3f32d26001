"""Shared fixtures: the real-scanner test data folder (``ISLET_IMAGING_TESTDATA``)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def testdata() -> Path:
    """Folder of real scanner DICOM series (read-only), from ``ISLET_IMAGING_TESTDATA``.

    Defaults to ``../shared/data`` next to the repository. A missing folder fails the test run:
    these tests must never be skipped.
    """
    root = Path(os.environ.get("ISLET_IMAGING_TESTDATA", REPO_ROOT.parent / "shared" / "data"))
    if not (root / "reference.json").is_file():
        pytest.fail(f"test data not found at {root}: set ISLET_IMAGING_TESTDATA")
    return root


@pytest.fixture(scope="session")
def reference(testdata: Path) -> dict:
    """The dcm2niix / SimpleITK / pydicom references of the real scanner series."""
    return json.loads((testdata / "reference.json").read_text())
