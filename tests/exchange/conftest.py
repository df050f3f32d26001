"""Fixtures of the exchange tests: a real Orthanc (DICOMweb) on 127.0.0.1, small test series."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.error
import urllib.request
from base64 import b64encode
from pathlib import Path

import pytest
from _exchange_helpers import PACS_PASSWORD, PACS_USER

from islet_imaging.io.dicomweb import PacsConfig

ORTHANC = Path("/usr/sbin/Orthanc")
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _answers(url: str) -> bool:
    token = b64encode(f"{PACS_USER}:{PACS_PASSWORD}".encode()).decode()
    request = urllib.request.Request(url, headers={"Authorization": f"Basic {token}"})
    try:
        with urllib.request.urlopen(request, timeout=1) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


@pytest.fixture(scope="session")
def orthanc(tmp_path_factory: pytest.TempPathFactory):
    """A throw-away Orthanc with DICOMweb: loopback only, auth on, DICOM port off.

    Yields a :class:`PacsConfig` (url, user, password). The server is killed at teardown.
    """
    if not ORTHANC.exists() or not DICOMWEB_PLUGIN.exists():
        pytest.fail("Orthanc + DICOMweb plugin missing: run .ci/system-deps.sh as root")
    root = tmp_path_factory.mktemp("orthanc")
    for _attempt in range(3):
        port = _free_port()
        config = {
            "Name": "islet-imaging-tests",
            "StorageDirectory": str(root / "storage"),
            "IndexDirectory": str(root / "index"),
            "HttpPort": port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": True,
            "RegisteredUsers": {PACS_USER: PACS_PASSWORD},
            "DicomServerEnabled": False,
            "OrthancExplorerEnabled": False,
            "HttpDescribeErrors": True,
            "ConcurrentJobs": 1,
            "HttpThreadsCount": 4,
            "Plugins": [str(DICOMWEB_PLUGIN)],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": False},
        }
        config_path = root / "orthanc.json"
        config_path.write_text(json.dumps(config, indent=2))
        log = (root / "orthanc.log").open("ab")
        process = subprocess.Popen(
            [str(ORTHANC), str(config_path)], cwd=root, stdout=log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and process.poll() is None:
            if _answers(f"http://127.0.0.1:{port}/system"):
                break
            time.sleep(0.1)
        if process.poll() is None and _answers(f"http://127.0.0.1:{port}/system"):
            break
        process.kill()
        process.wait()
        log.close()
    else:
        pytest.fail(f"Orthanc did not start; see {root / 'orthanc.log'}")
    try:
        yield PacsConfig(
            url=f"http://127.0.0.1:{port}/dicom-web",
            user=PACS_USER,
            password=PACS_PASSWORD,
        )
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@pytest.fixture(scope="session")
def exchange_series(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Path]]:
    """Oblique MR and PET test series of one patient (see ``_series.py``)."""
    from _exchange_series import ramp_volume, write_series

    root = tmp_path_factory.mktemp("exchange_series")
    mr, mr_geom = ramp_volume()
    pet, pet_geom = ramp_volume(modality="PT", spacing=(4.0, 2.0, 2.0))
    return {
        "mr": write_series(root / "MR", mr, **mr_geom, modality="MR", seed="mr"),
        "pet": write_series(
            root / "PET",
            pet,
            **pet_geom,
            modality="PT",
            seed="pet",
            series_number=2,
            frame_of_reference_uid=None,
        ),
    }
