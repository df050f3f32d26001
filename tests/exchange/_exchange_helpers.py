"""Helpers of the exchange tests: dciodvfy validation and the test PACS account."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

PACS_USER = "islet-tester"
PACS_PASSWORD = "pw-Zq8!not-in-logs"


def dciodvfy(path: Path) -> list[str]:
    """Validate ``path`` with dicom3tools' dciodvfy; fail on any error, return the warnings."""
    exe = shutil.which("dciodvfy") or str(Path(sys.executable).parent / "dciodvfy")
    result = subprocess.run([exe, str(path)], capture_output=True, text=True, timeout=60)
    lines = [line.strip() for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("Error")]
    assert not errors, f"dciodvfy errors in {Path(path).name}:\n" + "\n".join(errors)
    return [line for line in lines if line.startswith("Warning")]
