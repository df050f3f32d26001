"""PACS over DICOMweb against a real Orthanc: credentials, search, pull, pipeline, push, find."""

from __future__ import annotations

import json
import logging
import socket
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
from _exchange_helpers import PACS_PASSWORD, PACS_USER

from islet_imaging.cli import main
from islet_imaging.errors import PacsError
from islet_imaging.io import dicomweb
from islet_imaging.io.dicom import load_series
from islet_imaging.io.files import read_mask
from islet_imaging.io.seg import read_seg, seg_segments
from islet_imaging.io.sr import read_sr


@pytest.fixture
def pacs_env(orthanc, monkeypatch, tmp_path):
    """Point the CLI at the test Orthanc through the environment (no config file)."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ISLET_PACS_URL", orthanc.url)
    monkeypatch.setenv("ISLET_PACS_USER", orthanc.user)
    monkeypatch.setenv("ISLET_PACS_PASSWORD", orthanc.password)
    return orthanc


def _cli_json(capsys, *argv) -> list[dict]:
    assert main(["pacs", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


# --------------------------------------------------------------------------- configuration
def test_config_file_environment_and_url_credentials(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.config/islet-imaging/pacs.toml
    file = tmp_path / "pacs.toml"
    file.write_text('[pacs]\nurl = "https://pacs.example.org/dicom-web/"\nuser = "u1"\n'
                    'password = "file-secret"\n')  # fmt: skip
    config = dicomweb.load_pacs_config(file, env={})
    assert (config.url, config.user, config.password) == (
        "https://pacs.example.org/dicom-web",
        "u1",
        "file-secret",
    )
    assert "file-secret" not in repr(config)
    assert "file-secret" not in str(config)
    env = {"ISLET_PACS_USER": "u2", "ISLET_PACS_PASSWORD": "env-secret"}
    config = dicomweb.load_pacs_config(file, env=env)
    assert (config.user, config.password) == ("u2", "env-secret")
    config = dicomweb.load_pacs_config(
        None, env={"ISLET_PACS_URL": "http://bob:p%40ss@127.0.0.1:8042/dicom-web"}
    )
    assert (config.url, config.user, config.password) == (
        "http://127.0.0.1:8042/dicom-web",
        "bob",
        "p@ss",
    )
    with pytest.raises(PacsError, match="no PACS configured"):
        dicomweb.load_pacs_config(None, env={})
    with pytest.raises(PacsError, match="not found"):
        dicomweb.load_pacs_config(tmp_path / "missing.toml", env={})
    bad = tmp_path / "bad.toml"
    bad.write_text('[pacs]\npassword = "leak-me\n')
    with pytest.raises(PacsError, match="not valid TOML") as info:
        dicomweb.load_pacs_config(bad, env={})
    assert "leak-me" not in str(info.value)


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ('attempts = "abc"', "attempts"),
        ("attempts = 0", "attempts"),
        ("attempts = 2.5", "attempts"),
        ("attempts = true", "attempts"),
        ('timeout_s = "soon"', "timeout_s"),
        ("timeout_s = -1", "timeout_s"),
        ("timeout_s = nan", "timeout_s"),
        ("timeout_s = [60]", "timeout_s"),
    ],
)
def test_bad_timeout_or_attempts_is_a_pacs_error_naming_the_key(tmp_path, line, key):
    file = tmp_path / "pacs.toml"
    file.write_text(f'[pacs]\nurl = "https://bob:s3cret@pacs.example.org/dw"\n{line}\n')
    with pytest.raises(PacsError, match=f"{key} must be a positive") as info:
        dicomweb.load_pacs_config(file, env={})
    assert info.value.tag == key
    for text in ("s3cret", "pacs.example.org", "abc", "soon"):  # never echoed
        assert text not in str(info.value)


def test_timeout_and_attempts_from_the_file(tmp_path):
    file = tmp_path / "pacs.toml"
    file.write_text(
        '[pacs]\nurl = "https://pacs.example.org/dw"\ntimeout_s = 2.5\nattempts = "4"\n'
    )
    config = dicomweb.load_pacs_config(file, env={})
    assert (config.timeout_s, config.attempts) == (2.5, 4)
    file.write_text('[pacs]\nurl = "https://pacs.example.org/dw"\n')
    config = dicomweb.load_pacs_config(file, env={})
    assert (config.timeout_s, config.attempts) == (60.0, 3)


def test_wrong_password_never_printed_or_logged(orthanc, monkeypatch, tmp_path, caplog, capsys):
    wrong = "Wr0ng-pw-that-must-not-leak"
    config = dicomweb.PacsConfig(url=orthanc.url, user=orthanc.user, password=wrong)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(PacsError, match="HTTP 401") as info:
        dicomweb.search_studies(config, patient_id="ISLET-001")
    assert wrong not in str(info.value)
    assert "ISLET_PACS_PASSWORD" in str(info.value)  # the hint says what to fix

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("ISLET_PACS_URL", orthanc.url)
    monkeypatch.setenv("ISLET_PACS_USER", orthanc.user)
    monkeypatch.setenv("ISLET_PACS_PASSWORD", wrong)
    assert main(["pacs", "search", "--patient-id", "ISLET-001"]) == 2
    captured = capsys.readouterr()
    assert "HTTP 401" in captured.err
    for text in (captured.out, captured.err, caplog.text):
        assert wrong not in text
    # the good password is not leaked by successful calls either
    monkeypatch.setenv("ISLET_PACS_PASSWORD", PACS_PASSWORD)
    assert main(["pacs", "search", "--patient-id", "nobody", "--json"]) == 0
    captured = capsys.readouterr()
    for text in (captured.out, captured.err, caplog.text):
        assert PACS_PASSWORD not in text
    assert orthanc.user == PACS_USER


# --------------------------------------------------------------------------- end to end
def test_pacs_round_trip_with_pipeline(pacs_env, phantom_study, tmp_path, capsys):
    from islet_imaging.study.pipeline import process_visit
    from islet_imaging.study.workspace import Workspace

    dicom = phantom_study / "dicom" / "ISLET-001"
    stored = dicomweb.push(pacs_env, sorted(dicom.rglob("*.dcm")))
    assert stored == len(list(dicom.rglob("*.dcm")))

    # QIDO through the CLI: by patient, then narrowed by date and modality
    studies = _cli_json(capsys, "search", "--patient-id", "ISLET-001")
    assert len(studies) == 2
    baseline = pydicom.dcmread(next((dicom / "V0" / "T2").iterdir()), stop_before_pixels=True)
    date = baseline.StudyDate
    iso = f"{date[:4]}-{date[4:6]}-{date[6:]}"
    (study,) = _cli_json(capsys, "search", "--patient-id", "ISLET-001", "--from", iso, "--to", iso)
    assert study["study_uid"] == baseline.StudyInstanceUID
    assert set(study["modalities"]) == {"MR", "PT"}
    assert len(_cli_json(capsys, "search", "--patient-id", "ISLET-001", "--modality", "PT")) == 2
    assert _cli_json(capsys, "search", "--patient-id", "ISLET-001", "--modality", "SEG") == []

    # WADO into a study workspace through the CLI, then the pipeline on that visit
    workspace_dir = tmp_path / "ws"
    Workspace.init(workspace_dir).close()
    assert main(["pacs", "pull", study["study_uid"], "--workspace", str(workspace_dir)]) == 0
    assert "pulled 3 series" in capsys.readouterr().out
    with Workspace.open(workspace_dir) as workspace:
        (visit_id,) = workspace.visits()["visit_id"]
        result = process_visit(workspace, visit_id)
    assert result.ok, result.reason
    mr_uid = result.artifacts["mr_series_uid"]
    mr = load_series(workspace_dir / "dicom" / mr_uid)
    labels = read_mask(result.auto_mask["path"])
    labels = labels.with_array(labels.array.astype(np.uint16)).as_mask()
    assert labels.same_grid(mr)

    # SEG + SR of the visit's results written from the workspace and pushed by the CLI
    assert main(["pacs", "push", "--results", str(workspace_dir)]) == 0
    out = capsys.readouterr().out
    assert "stored 2 instance(s)" in out
    assert "not in the SR" not in out  # every measured object has its segment
    (seg_path,) = (workspace_dir / "exchange").rglob("seg-*.dcm")
    (sr_path,) = (workspace_dir / "exchange").rglob("sr-*.dcm")
    sent = read_sr(sr_path)
    exported = result.measurements[
        result.measurements["metric"].isin(["volume", "suv_max", "suv_mean", "suv_peak"])
    ]
    assert len(sent) == len(exported)
    assert sorted(sent["value"]) == sorted(exported["value"])
    assert set(sent["object"]) >= {"graft", "deposit 1", "reference"}
    assert set(sent["time_point"]) == {"V0"}

    # find them again by QIDO, referencing the MR series they were made on
    derived = dicomweb.find_derived(
        pacs_env, study_uid=study["study_uid"], referenced_series_uid=mr_uid
    )
    assert sorted(d["modality"] for d in derived) == ["SEG", "SR"]
    seg_series = _cli_json(capsys, "search", "--study", study["study_uid"], "--modality", "SEG")
    assert [s["series_uid"] for s in seg_series] == [pydicom.dcmread(seg_path).SeriesInstanceUID]

    # what comes back from the PACS is what was sent
    (seg_back,) = dicomweb.pull_series(
        pacs_env,
        study_uid=study["study_uid"],
        series_uid=seg_series[0]["series_uid"],
        out_dir=tmp_path / "back",
    )
    n = int(labels.array.max())
    np.testing.assert_array_equal(
        read_seg(seg_back, reference=mr, segments=range(1, n + 1)).array, labels.array
    )
    assert [s.tracking_id for s in seg_segments(seg_back)][-2:] == ["graft", "reference"]
    (sr_series,) = [d for d in derived if d["modality"] == "SR"]
    (sr_back,) = dicomweb.pull_series(
        pacs_env,
        study_uid=study["study_uid"],
        series_uid=sr_series["series_uid"],
        out_dir=tmp_path / "back",
    )
    assert read_sr(sr_back).equals(read_sr(sr_path))
    assert set(read_sr(sr_back)["metric"]) >= {"volume", "suv_max", "suv_mean", "suv_peak"}
    assert Path(sr_back).parent.name == sr_series["series_uid"]


def test_badly_encoded_url_credentials_are_refused_without_echo():
    for url in (
        "http://bob:p#ss-secret@127.0.0.1:8042/dicom-web",  # '#' not percent-encoded
        "http://bob:pa/ss-secret@127.0.0.1:8042/dicom-web",  # '/' not percent-encoded
        "http://bob:ss-secret@127.0.0.1:port/dicom-web",  # bad port
    ):
        with pytest.raises(PacsError, match="cannot be parsed") as info:
            dicomweb.load_pacs_config(None, env={"ISLET_PACS_URL": url})
        assert "ss-secret" not in str(info.value)
        assert info.value.__context__ is None or info.value.__suppress_context__


class _FakeClient(dicomweb._Client):
    """A client answering WADO-RS retrieve with given datasets (no server)."""

    def __init__(self, datasets):
        self.config = dicomweb.PacsConfig(url="http://127.0.0.1:1/dicom-web")
        self._datasets = datasets

    def call(self, what, method, *args, **kwargs):
        return self._datasets


def test_pull_never_writes_outside_the_output_folder(tmp_path):
    out = tmp_path / "a" / "out"
    ds = pydicom.Dataset()
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds.SOPClassUID = pydicom.uid.MRImageStorage
    ds.add(  # as a misbehaving server may send it (set without pydicom's validation warning)
        pydicom.DataElement(
            0x00080018, "UI", "../../../escaped", validation_mode=pydicom.config.IGNORE
        )
    )
    with pytest.raises(PacsError, match="SOPInstanceUID"):
        dicomweb.pull_series(_FakeClient([ds]), study_uid="1.2", series_uid="1.2.3", out_dir=out)
    with pytest.raises(PacsError, match="SeriesInstanceUID"):
        dicomweb.pull_series(_FakeClient([]), study_uid="1.2", series_uid="../x", out_dir=out)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_a_stalled_pacs_times_out_with_a_clear_error():
    """A server that accepts the connection and never answers: PacsError after timeout_s."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()  # the kernel completes the handshake; nobody ever reads or answers
        url = f"http://127.0.0.1:{server.getsockname()[1]}/dicom-web"
        config = dicomweb.PacsConfig(url=url, timeout_s=0.5, attempts=1)
        start = time.monotonic()
        with pytest.raises(PacsError, match="Timeout") as info:
            dicomweb.search_studies(config, patient_id="ISLET-001")
        assert time.monotonic() - start < 10
    assert info.value.path == url


@pytest.mark.parametrize(("status", "tries"), [(503, 2), (500, 1)])
def test_only_busy_answers_are_retried(status, tries):
    """As PacsConfig says: HTTP 503 is tried ``attempts`` times (one 2 s wait), 500 once."""
    import http.server
    import threading

    seen = []

    class Busy(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            seen.append(self.path)
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), Busy) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        url = f"http://127.0.0.1:{server.server_address[1]}/dicom-web"
        with pytest.raises(PacsError, match=f"HTTP {status}"):
            dicomweb.search_studies(dicomweb.PacsConfig(url=url, attempts=2), patient_id="P1")
        server.shutdown()
    assert len(seen) == tries
