"""End to end on a phantom cohort: CLI run → workspace → report, checked against truth.json;
a batch killed with SIGKILL resumes to identical results; a broken series fails alone."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest

from islet_imaging.phantom import generate_study
from islet_imaging.study.workspace import Workspace

FAST = ["--workers", "1", "--baseline-search-steps", "1", "--no-progress"]
KEY = ["patient", "visit_date", "object", "label", "metric", "method"]


def cli(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "islet_imaging", *args],
        capture_output=True, text=True, timeout=600, **kwargs,
    )  # fmt: skip


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 patients × 2 visits (small grids) and an implantation CSV derived from the truth."""
    root = generate_study(
        tmp_path_factory.mktemp("cohort"), patients=2, visits=2, seed=1, size="small"
    )
    rows = ["patient_id,implantation_date"]
    for truth in sorted(root.glob("truth/*/V0/truth.json")):
        t = json.loads(truth.read_text())
        date = dt.date.fromisoformat(t["visit"]["date"])
        implant = date - dt.timedelta(days=t["visit"]["days_after_implantation"])
        rows.append(f"{t['patient']['id']},{implant.isoformat()}")
    (root / "implantation.csv").write_text("\n".join(rows) + "\n")
    return root


@pytest.fixture(scope="module")
def reference(cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """`islet-imaging run` on the whole cohort: (workspace, report folder)."""
    out = tmp_path_factory.mktemp("run")
    done = cli(
        "run", str(cohort / "dicom"), "--workspace", str(out / "ws"),
        "--report", str(out / "report"), "--implantation-csv", str(cohort / "implantation.csv"),
        *FAST,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "4 visit(s) processed, 0 failed" in done.stdout
    return out / "ws", out / "report"


def _truths(cohort: Path) -> dict[tuple[str, int], dict]:
    return {
        (p.parts[-3], int(p.parts[-2][1:])): json.loads(p.read_text())
        for p in cohort.glob("truth/*/V*/truth.json")
    }


def test_cli_report_numbers_match_truth(cohort: Path, reference: tuple[Path, Path]) -> None:
    ws_dir, report = reference
    truths = _truths(cohort)
    table = pd.read_csv(report / "data" / "longitudinal.csv")
    graft = table[(table["object"] == "graft") & (table["metric"] == "volume")]
    with Workspace.open(ws_dir) as ws:
        for (patient_id, index), truth in truths.items():
            pseudo = ws.pseudonym(patient_id)
            row = graft[(graft["patient"] == pseudo) & (graft["visit"] == f"V{index}")]
            assert len(row) == 1
            row = row.iloc[0]
            assert row["days"] == truth["visit"]["days_after_implantation"]
            expected = truth["graft"]["volume_ml_voxelised"]
            assert row["value"] == pytest.approx(expected, rel=0.05), (patient_id, index)
            html = (report / "patients" / f"{pseudo}.html").read_text()
            assert f"{row['value']:.3g} mL" in html
            run = ws.current_run(f"{pseudo}/V{index}")
            if index > 0:  # the follow-up MR was registered to baseline: compare the rotation
                found = run["artifacts"]["to_baseline"]["rotation_deg"]
                assert found == pytest.approx(
                    truth["transform_to_baseline"]["rotation_deg"], abs=1.0
                )
        # volume change from baseline as the truth says
        for pseudo in ("P001", "P002"):
            rows = graft[graft["patient"] == pseudo].sort_values("days")
            ids = [k for k in truths if ws.pseudonym(k[0]) == pseudo]
            v0, v1 = (truths[(ids[0][0], i)]["graft"]["volume_ml_voxelised"] for i in (0, 1))
            assert rows["change_baseline_pct"].iloc[1] == pytest.approx(
                (v1 - v0) / v0 * 100, abs=7.0
            )
    assert (report / "data" / "measurements.parquet").stat().st_size > 0
    assert len(list((report / "figures").glob("P00*_visit*.png"))) == 4


def test_report_contains_no_patient_name_or_id(cohort: Path, reference: tuple[Path, Path]):
    _, report = reference
    names = {t["patient"]["name"] for t in _truths(cohort).values()}
    ids = {t["patient"]["id"] for t in _truths(cohort).values()}
    text = "".join(p.read_text() for p in report.rglob("*") if p.suffix in (".html", ".csv"))
    assert names
    assert ids
    for value in names | ids | {n.split("^")[0] for n in names}:
        assert value not in text


def test_rerun_skips_finished_visits(reference: tuple[Path, Path]) -> None:
    ws_dir, _ = reference
    again = cli("study", "batch", str(ws_dir), *FAST)
    assert again.returncode == 0, again.stderr
    assert "0 visit(s) processed, 0 failed, 4 already done" in again.stdout
    with Workspace.open(ws_dir) as ws:
        assert len(ws.runs()) == 4


def _current(ws_dir: Path) -> pd.DataFrame:
    with Workspace.open(ws_dir) as ws:
        return ws.measurements()


def test_batch_killed_with_sigkill_resumes_identically(
    cohort: Path, reference: tuple[Path, Path], tmp_path: Path
) -> None:
    # a copy of the cohort whose last visit has a broken PET (no PatientWeight: no SUV)
    dicom = tmp_path / "dicom"
    shutil.copytree(cohort / "dicom", dicom)
    broken = sorted(dicom.glob("*/V1/PET"))[-1]
    for path in broken.glob("*.dcm"):
        ds = pydicom.dcmread(path)
        del ds.PatientWeight
        ds.save_as(path)
    ws_dir = tmp_path / "ws"
    assert cli("study", "init", str(ws_dir)).returncode == 0
    imported = cli("study", "import", str(ws_dir), str(dicom), "--implantation-csv",
                   str(cohort / "implantation.csv"))  # fmt: skip
    assert imported.returncode == 0, imported.stderr
    batch = subprocess.Popen(
        [sys.executable, "-m", "islet_imaging", "study", "batch", str(ws_dir), *FAST],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 300
    db = sqlite3.connect(ws_dir / "catalogue.sqlite", timeout=30)
    while time.monotonic() < deadline:
        if db.execute("SELECT COUNT(*) FROM runs WHERE status='done'").fetchone()[0] >= 1:
            break
        time.sleep(0.1)
    os.killpg(batch.pid, signal.SIGKILL)
    batch.wait()
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    states = dict(db.execute("SELECT status, COUNT(*) FROM runs GROUP BY status").fetchall())
    assert 1 <= states.get("done", 0) < 4
    assert states.get("running", 0) >= 1
    # nothing half-written: measurements exist only for finished runs
    orphans = db.execute(
        "SELECT COUNT(*) FROM measurements m JOIN runs r ON r.id=m.run_id WHERE r.status!='done'"
    ).fetchone()[0]
    assert orphans == 0
    db.close()

    resumed = cli("study", "batch", str(ws_dir), *FAST)
    assert resumed.returncode == 1  # the broken visit fails, the others complete
    assert "1 failed" in resumed.stdout
    assert "PatientWeight" in resumed.stdout
    with Workspace.open(ws_dir) as ws:
        runs = ws.runs()
        assert (runs["status"] == "interrupted").sum() >= 1
        assert (runs["status"] == "running").sum() == 0
        done = runs[runs["status"] == "done"]
        assert len(done) == 3
        assert done["visit_id"].is_unique
        failed = runs[runs["status"] == "failed"]
        assert failed["reason"].str.contains("PatientWeight").all()
        status = ws.status().visits
        assert sorted(status["state"]) == ["done", "done", "done", "failed"]
    # the files the killed run had written were removed at the resumed batch's start:
    # every file left in the managed folders is referenced by the catalogue
    # (masks by path; a done run's folder with all its files, e.g. transform sidecars)
    db = sqlite3.connect(ws_dir / "catalogue.sqlite")
    masks = {ws_dir / p for (p,) in db.execute("SELECT path FROM masks")}
    run_dirs = {
        (ws_dir / json.loads(artifacts)["preview"]).parent
        for (artifacts,) in db.execute("SELECT artifacts FROM runs WHERE status='done'")
    }
    db.close()
    assert len(masks) == len(run_dirs) == 3
    assert {p for p in (ws_dir / "masks").rglob("*") if p.is_file()} == masks
    assert {p for p in (ws_dir / "runs").iterdir()} == run_dirs
    assert all((d / "preview.npz").is_file() for d in run_dirs)
    for tfm in (ws_dir / "runs").rglob("*.tfm"):  # every transform still loads
        assert tfm.with_suffix(".json").is_file()
    got = _current(ws_dir)
    assert not got.duplicated(KEY).any()
    expected = _current(reference[0])
    merged = expected.merge(got, on=KEY, suffixes=("_ref", "_got"))
    assert len(merged) == len(got)
    assert merged["visit_date"].nunique() == 3
    np.testing.assert_array_equal(merged["value_got"].to_numpy(), merged["value_ref"].to_numpy())
