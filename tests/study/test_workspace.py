"""Study workspace: catalogue, import, versioned masks, runs, concurrency."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _tiny_cohort import PATIENTS, write_tiny_cohort

from islet_imaging._atomic import atomic_path, write_text_atomic
from islet_imaging.errors import IsletImagingError, WorkspaceError
from islet_imaging.study.workspace import (
    SCHEMA_VERSION,
    MaskOrigin,
    Role,
    Workspace,
)
from islet_imaging.volume import Volume


@pytest.fixture(scope="module")
def tiny_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_cohort(tmp_path_factory.mktemp("tiny"))


@pytest.fixture
def ws(tmp_path: Path, tiny_cohort: Path) -> Workspace:
    workspace = Workspace.init(tmp_path / "ws")
    workspace.import_paths([tiny_cohort], implantation="2024-01-01")
    yield workspace
    workspace.close()


def _mask(shape=(4, 8, 8), labels=((1, 2, 2),)) -> Volume:
    array = np.zeros(shape, np.int32)
    for value, j, i in labels:
        array[1:3, j : j + 2, i : i + 2] = value
    return Volume(array, spacing=(3, 1, 1)).as_mask()


def test_init_creates_wal_catalogue_with_schema_version(tmp_path: Path) -> None:
    Workspace.init(tmp_path / "ws").close()
    db = sqlite3.connect(tmp_path / "ws" / "catalogue.sqlite")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    version = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0]
    assert int(version) == SCHEMA_VERSION
    db.close()
    with Workspace.open(tmp_path / "ws") as ws:
        assert ws._db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    with pytest.raises(WorkspaceError, match="already exists"):
        Workspace.init(tmp_path / "ws")
    Workspace.init(tmp_path / "ws", exist_ok=True).close()


def test_open_rejects_missing_and_newer_catalogues(tmp_path: Path) -> None:
    with pytest.raises(WorkspaceError, match="no study workspace"):
        Workspace.open(tmp_path / "nothing")
    Workspace.init(tmp_path / "ws").close()
    db = sqlite3.connect(tmp_path / "ws" / "catalogue.sqlite")
    db.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    db.commit()
    db.close()
    with pytest.raises(WorkspaceError, match=r"schema version.*99"):
        Workspace.open(tmp_path / "ws")


def test_import_groups_visits_per_patient_and_is_idempotent(ws: Workspace, tiny_cohort: Path):
    visits = ws.visits()
    assert list(visits["patient"]) == ["P001"] * 3 + ["P002"] * 2
    assert list(visits["label"]) == ["V0", "V1", "V2", "V0", "V1"]
    # days since implantation (2024-01-01) computed from the study dates
    assert list(visits["days_since_implantation"]) == [9, 100, 191, 31, 213]
    series = ws.series()
    assert len(series) == 10
    assert sorted(set(series["role"])) == [Role.MR_T2.value, Role.PET.value]
    assert all(len(f) == n for f, n in zip(series["files"], series["n_instances"], strict=True))
    again = ws.import_paths([tiny_cohort, tiny_cohort / "p0v0mr"])
    assert (again.patients_added, again.visits_added, again.series_added) == (0, 0, 0)
    assert again.series_updated == 0
    assert len(ws.series()) == 10
    assert len(ws.visits()) == 5


def test_catalogue_holds_no_names_ids_or_birth_dates(ws: Workspace) -> None:
    ws.close()
    data = b"".join(p.read_bytes() for p in ws.root.glob("catalogue.sqlite*"))
    for pid, name, birth, _ in PATIENTS:
        for text in (pid, name, name.split("^")[0], birth):
            assert text.encode() not in data
    with Workspace.open(ws.root) as reopened:
        assert reopened.pseudonym(PATIENTS[1][0]) == "P002"
        assert reopened.pseudonym("someone else") is None


def test_implantation_dates_from_csv(tmp_path: Path, tiny_cohort: Path) -> None:
    csv = tmp_path / "implant.csv"
    csv.write_text(f"patient_id,implantation_date\n{PATIENTS[0][0]},2024-01-05\nP002,20240125\n")
    with Workspace.init(tmp_path / "ws") as ws:
        ws.import_paths([tiny_cohort], implantation=csv)
        assert list(ws.visits()["days_since_implantation"]) == [5, 96, 187, 7, 189]
        bad = tmp_path / "bad.csv"
        bad.write_text("patient_id,implantation_date\nP001,2024-01-01\nHOSP-99999,2024-01-01\n")
        with pytest.raises(WorkspaceError, match="not in the study") as info:
            ws.import_paths([tiny_cohort], implantation=bad)
        assert "bad.csv line 3" in str(info.value)  # where, without the (DICOM) patient ID
        assert "HOSP-99999" not in str(info.value)
        with pytest.raises(WorkspaceError, match="not a date") as info:
            ws.import_paths([tiny_cohort], implantation={PATIENTS[0][0]: "yesterday"})
        assert PATIENTS[0][0] not in str(info.value)
        with pytest.raises(WorkspaceError, match="not a date"):
            ws.set_implantation_date("P001", "yesterday")


def test_mask_versions_are_never_overwritten(ws: Workspace) -> None:
    first = ws.save_mask("P001/V1", _mask(), author="alice", method="manual")
    second = ws.save_mask(
        "P001/V1", _mask(labels=((1, 2, 2), (2, 5, 5))), author="bob", parent=first, note="fix"
    )
    assert (first.version, second.version) == (1, 2)
    assert second.parent_id == first.id
    assert first.path != second.path
    assert first.path.is_file()
    assert second.path.is_file()
    assert first.path.is_relative_to(ws.root / "masks" / "P001")
    assert [v.author for v in ws.mask_versions("P001/V1")] == ["alice", "bob"]
    assert ws.latest_mask("P001/V1").id == second.id
    assert ws.latest_mask("P001/V1", origin=MaskOrigin.AUTO) is None
    back = first.read()
    np.testing.assert_array_equal(back.array, _mask().array)
    assert back.spacing == pytest.approx((3, 1, 1))
    assert sorted(np.unique(second.read().array)) == [0, 1, 2]
    with pytest.raises(WorkspaceError, match="author"):
        ws.save_mask("P001/V1", _mask(), author=" ")
    with pytest.raises(WorkspaceError, match="mask Volume"):
        ws.save_mask("P001/V1", Volume(np.zeros((2, 2, 2), np.float32)), author="x")


def _measurements(volume: float) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "object": ["graft", "graft", "deposit"],
            "label": [None, None, 1],
            "metric": ["volume_ml", "n_deposits", "volume_ml"],
            "value": [volume, 1.0, volume],
            "unit": ["mL", "", "mL"],
            "method": ["mr", "mr", "mr"],
            "series_uid": ["1.2.3"] * 3,
        }
    )


def test_runs_commit_atomically_and_pending_follows_human_masks(ws: Workspace) -> None:
    visit = ws.visits()["visit_id"].iloc[0]
    assert ws.pending_visits() == list(ws.visits()["visit_id"])
    run = ws.start_run(visit, params={"k": 3})
    # a broken result (bad deposit row) rolls back everything of the run
    broken = pd.DataFrame({"label": [1], "volume_ml": [0.1], "x_mm": [0.0], "y_mm": [0.0]})
    with pytest.raises(AttributeError):
        ws.finish_run(run, measurements=_measurements(0.5), deposits=broken)
    assert ws.measurements(all_runs=True).empty
    assert ws.runs()["status"].tolist() == ["running"]
    auto_path = ws.new_mask_path(visit)
    auto_path.parent.mkdir(parents=True)
    auto_path.write_bytes(b"mask bytes")
    deposits = pd.DataFrame(
        {"label": [1], "volume_ml": [0.5], "x_mm": [1.0], "y_mm": [2.0], "z_mm": [3.0]}
    )
    ws.finish_run(
        run, measurements=_measurements(0.5), deposits=deposits,
        auto_mask={"path": auto_path, "method": "auto"}, artifacts={"preview": "x.npz"},
    )  # fmt: skip
    table = ws.measurements()
    assert len(table) == 3
    assert set(table["run_id"]) == {run}
    assert json.loads(table["provenance"].iloc[0]) == {"series_uid": "1.2.3"}
    assert ws.deposits()[["x_mm", "y_mm", "z_mm"]].iloc[0].tolist() == [1.0, 2.0, 3.0]
    auto = ws.latest_mask(visit)
    assert auto.origin is MaskOrigin.AUTO
    assert ws.current_run(visit)["mask_id"] == auto.id
    assert visit not in ws.pending_visits()
    with pytest.raises(WorkspaceError, match="not running"):
        ws.finish_run(run, measurements=_measurements(0.5))
    # a person corrects the mask: the visit must be measured again
    ws.save_mask(visit, _mask(), author="carol", parent=auto)
    assert visit in ws.pending_visits()
    failed = ws.start_run(visit)
    ws.fail_run(failed, "DicomSeriesError: broken")
    assert ws.status().visits.set_index("visit_id").loc[visit, "state"] == "failed"
    assert visit in ws.pending_visits()
    assert visit not in ws.pending_visits(retry_failed=False)
    # measurements of the latest successful run only; history kept
    assert len(ws.measurements()) == 3
    assert len(ws.measurements(all_runs=True)) == 3


def test_runs_of_dead_processes_are_marked_interrupted(ws: Workspace) -> None:
    visit = int(ws.visits()["visit_id"].iloc[0])
    run = ws.start_run(visit)
    assert visit not in ws.pending_visits()  # being run by this (live) process
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    ws._db.execute("UPDATE runs SET pid=? WHERE id=?", (int(dead.stdout), run))
    assert ws.mark_interrupted() == 1
    assert ws.runs()["status"].tolist() == ["interrupted"]
    assert visit in ws.pending_visits()


WRITER = textwrap.dedent(
    """
    import sys
    import numpy as np
    from islet_imaging.study.workspace import Workspace
    from islet_imaging.volume import Volume
    ws = Workspace.open(sys.argv[1])
    visit = int(ws.visits()["visit_id"].iloc[0])
    for i in range(12):
        array = np.zeros((4, 8, 8), np.uint8)
        array[0, 0, :i % 8 + 1] = 1
        ws.save_mask(visit, Volume(array, spacing=(3, 1, 1)).as_mask(), author=sys.argv[2])
        run = ws.start_run(visit)
        ws.fail_run(run, f"{sys.argv[2]} {i}")
    """
)


def test_two_processes_writing_at_once_stay_consistent(ws: Workspace) -> None:
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(ws.root), name])
        for name in ("writer-a", "writer-b")
    ]
    assert [w.wait(timeout=120) for w in writers] == [0, 0]
    versions = ws.mask_versions(int(ws.visits()["visit_id"].iloc[0]))
    assert [v.version for v in versions] == list(range(1, 25))
    assert sorted(v.author for v in versions) == ["writer-a"] * 12 + ["writer-b"] * 12
    assert len({v.path for v in versions}) == 24
    assert all(v.path.is_file() for v in versions)
    assert len(ws.runs()) == 24
    assert ws._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_atomic_write_never_replaces_a_file_created_meanwhile(tmp_path: Path) -> None:
    target = tmp_path / "mask.nii.gz"
    writing = atomic_path(target)
    tmp = writing.__enter__()
    tmp.write_text("mine")
    target.write_text("theirs")  # another writer finished first
    with pytest.raises(IsletImagingError, match="refusing to overwrite"):
        writing.__exit__(None, None, None)
    assert target.read_text() == "theirs"
    assert [p.name for p in tmp_path.iterdir()] == ["mask.nii.gz"]  # no temporary left
    write_text_atomic(target, "replaced on purpose", overwrite=True)
    assert target.read_text() == "replaced on purpose"
