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


@pytest.fixture(scope="session")
def phantom_visit():
    """A small synthetic visit in memory (``islet_imaging.phantom.make_visit``, seed 0).

    ``.mr_t1``, ``.mr_t2``, ``.pet`` (Bq/mL), ``.graft_mask``, ``.deposit_labels``,
    ``.tissue_labels`` (MR grid), ``.truth`` (see the phantom module docstring). Read-only.
    """
    from islet_imaging.phantom import make_visit

    return make_visit(seed=0, patient=1, visit=0, size="small")


@pytest.fixture(scope="session")
def phantom_study(tmp_path_factory) -> Path:
    """A small generated DICOM study (1 patient × 2 visits, seed 0, size "small"). Read-only.

    Layout: ``dicom/ISLET-001/V{0,1}/{T1,T2,PET}/``, ``truth/ISLET-001/V{0,1}/truth.json`` and
    NIfTI masks, ``phantom.json`` (see the phantom module docstring).
    """
    from islet_imaging.phantom import generate_study

    return generate_study(
        tmp_path_factory.mktemp("phantom_study"), patients=1, visits=2, seed=0, size="small"
    )
