"""HTML report and exports from a workspace with known results."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from islet_imaging.cli import main
from islet_imaging.errors import IsletImagingError
from islet_imaging.report.html import write_report
from islet_imaging.study.workspace import Workspace

if "_tiny_cohort" not in sys.modules:  # the DICOM cohort helper of tests/study
    _spec = importlib.util.spec_from_file_location(
        "_tiny_cohort", Path(__file__).parents[1] / "study" / "_tiny_cohort.py"
    )
    sys.modules["_tiny_cohort"] = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(sys.modules["_tiny_cohort"])
PATIENTS = sys.modules["_tiny_cohort"].PATIENTS

#: graft volume (mL) and SUVmax per visit of patient P001 (V0, V1, V2) and P002 (V0, V1)
VOLUMES = [0.80, 0.52, 0.50, 1.20, 1.10]
SUVMAX = [4.0, 5.3, 4.2, 6.0, 6.1]


@pytest.fixture(scope="module")
def tiny_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sys.modules["_tiny_cohort"].write_tiny_cohort(tmp_path_factory.mktemp("tiny"))


@pytest.fixture
def workspace(tmp_path: Path, tiny_cohort: Path) -> Workspace:
    ws = Workspace.init(tmp_path / "ws")
    ws.import_paths([tiny_cohort], implantation="2024-01-01")
    for i, visit in enumerate(ws.visits()["visit_id"]):
        if i == 4:  # the last visit failed
            ws.fail_run(ws.start_run(visit), "DicomSeriesError: p1v1pet: [0018,1074] missing")
            continue
        run = ws.start_run(visit, params={"segmentation": "pet_guided"})
        preview = ws.root / "runs" / f"r{i}" / "preview.npz"
        preview.parent.mkdir(parents=True)
        mask = np.zeros((16, 16), np.uint16)
        mask[5:10, 6:11] = 1
        mr = np.random.default_rng(i).normal(100, 5, (16, 16))
        spacing = np.array([1.0, 0.8])
        np.savez(preview, mr=mr, mask=mask, pet=mask * 3.0, pixel_spacing=spacing)
        table = pd.DataFrame(
            {
                "object": ["graft", "graft", "graft", "deposit 1"],
                "metric": ["volume", "deposit_count", "suv_max", "volume"],
                "value": [VOLUMES[i], 1, SUVMAX[i], VOLUMES[i]],
                "unit": ["mL", "1", "SUVbw", "mL"],
                "method": ["mr_pet_guided", "deposits", "max", "mr_pet_guided"],
            }
        )
        deposits = pd.DataFrame({"label": [1], "volume_ml": [VOLUMES[i]], "x_mm": [1.0],
                                 "y_mm": [2.0], "z_mm": [3.0]})  # fmt: skip
        ws.finish_run(
            run, measurements=table, deposits=deposits, artifacts={"preview": str(preview)}
        )
    yield ws
    ws.close()


def _text(root: Path) -> str:
    return "\n".join(
        p.read_text(errors="replace") for p in root.rglob("*") if p.suffix in (".html", ".csv")
    )


def test_report_pages_numbers_and_exports(workspace: Workspace, tmp_path: Path) -> None:
    files = write_report(workspace, tmp_path / "out")
    assert files.index.is_file()
    assert sorted(files.patients) == ["P001", "P002"]
    page = files.patients["P001"].read_text()
    # visit table: volumes with change from baseline, -35 % flagged, SUVmax +32.5 % flagged
    assert "0.8 mL" in page
    assert "0.52 mL" in page
    assert "−" not in page
    assert re.search(r"0\.52 mL<small>-35 % vs V0 <span class=\"decrease\">", page)
    assert re.search(r"5\.3 SUVbw<small>\+32 % vs V0 <span class=\"increase\">", page)
    assert re.search(r"4\.2 SUVbw<small>\+5 % vs V0 <span class=\"noise\">within noise", page)
    # images written next to the pages and referenced relatively
    for src in re.findall(r'src="\.\./(figures/[^"]+)"', page):
        assert (tmp_path / "out" / src).stat().st_size > 1000
    assert page.count('alt="visit V') == 3
    assert "DicomSeriesError: p1v1pet" in files.index.read_text()
    # exports: measurements of the latest runs, longitudinal table with changes
    measurements = pd.read_parquet(files.data["measurements_parquet"])
    assert len(measurements) == 4 * 4
    longitudinal = pd.read_csv(files.data["longitudinal_csv"])
    vol = longitudinal[(longitudinal["object"] == "graft") & (longitudinal["metric"] == "volume")]
    np.testing.assert_allclose(vol["value"], VOLUMES[:4])
    np.testing.assert_allclose(vol["change_baseline_pct"].iloc[1:3], [-35.0, -37.5])
    assert vol["days"].tolist() == [9, 100, 191, 31]
    assert pd.read_csv(files.data["runs_csv"])["status"].tolist().count("failed") == 1


def test_report_has_no_identifiers_unless_asked(workspace: Workspace, tmp_path: Path) -> None:
    write_report(workspace, tmp_path / "plain")
    text = _text(tmp_path / "plain")
    for pid, name, birth, _ in PATIENTS:
        for value in (pid, name, name.split("^")[0], birth):
            assert value not in text
    files = write_report(workspace, tmp_path / "named", include_identifiers=True)
    assert "DOE^JANE" in files.patients["P001"].read_text()
    assert "19611224" in files.index.read_text()
    exports = "".join(p.read_text() for p in (tmp_path / "named" / "data").glob("*.csv"))
    assert "DOE" not in exports
    assert "HOSP-12345" not in exports


def test_report_rewrites_atomically(workspace: Workspace, tmp_path: Path) -> None:
    write_report(workspace, tmp_path / "out")
    write_report(workspace, tmp_path / "out")
    assert not [p for p in (tmp_path / "out").rglob(".*tmp*")]


def test_report_never_replaces_other_files_unless_asked(workspace: Workspace, tmp_path: Path):
    folder = tmp_path / "website"
    (folder / "data").mkdir(parents=True)
    (folder / "index.html").write_text("my own page")
    (folder / "data" / "runs.csv").write_text("my own table")
    with pytest.raises(IsletImagingError, match="holds other files") as info:
        write_report(workspace, folder)
    assert str(folder) in str(info.value)
    assert (folder / "index.html").read_text() == "my own page"
    assert (folder / "data" / "runs.csv").read_text() == "my own table"
    assert sorted(p.name for p in folder.rglob("*")) == ["data", "index.html", "runs.csv"]
    args = ["report", str(workspace.root), "-o", str(folder)]
    assert main(args) == 2
    assert (folder / "index.html").read_text() == "my own page"
    assert main([*args, "--overwrite"]) == 0
    assert "Islet graft study" in (folder / "index.html").read_text()
    write_report(workspace, folder)  # now a report folder: rewritten without asking


def test_report_next_to_its_workspace(tmp_path: Path, tiny_cohort: Path) -> None:
    """``islet-imaging run --workspace OUT/work/ws --report OUT``: a folder holding only the
    workspace takes the report (and later its rewrite); one more file of the user's does not,
    and ``run`` says so before importing or processing anything."""
    out = tmp_path / "out"
    (out / "work").mkdir(parents=True)
    (out / "notes.txt").write_text("mine")
    args = ["run", str(tiny_cohort), "--workspace", str(out / "work" / "ws"), "--report", str(out)]
    assert main([*args, "--workers", "0"]) == 2
    with Workspace.open(out / "work" / "ws") as ws:
        assert ws.visits().empty  # refused before the import
        (out / "notes.txt").unlink()
        ws.import_paths([tiny_cohort], implantation="2024-01-01")
        write_report(ws, out)
        write_report(ws, out)
    assert (out / "index.html").is_file()


def test_failure_reasons_in_the_report_carry_no_folder_names(workspace: Workspace, tmp_path):
    visit = int(workspace.visits()["visit_id"].iloc[-1])
    folder = "/hospital/exports/DOE^JANE 19600101/PET"
    workspace.fail_run(
        workspace.start_run(visit), f"DicomSeriesError: {folder}/IM0042.dcm: [0054,1001] missing"
    )
    files = write_report(workspace, tmp_path / "out")
    texts = [p.read_text() for p in (tmp_path / "out").rglob("*") if p.suffix in {".html", ".csv"}]
    assert not any("DOE^JANE" in t or "hospital" in t for t in texts)
    assert "IM0042.dcm: [0054,1001] missing" in files.index.read_text()
    assert "IM0042.dcm: [0054,1001] missing" in files.data["runs_csv"].read_text()
    assert folder in workspace.runs()["reason"].iloc[-1]  # the catalogue keeps the full path
    # a catalogued file: its folders go exactly, whatever characters they hold
    catalogued = Path(workspace.series()["files"].iloc[0][0])
    workspace.fail_run(workspace.start_run(visit), f"GeometryError: {catalogued}: gap")
    write_report(workspace, tmp_path / "out")
    runs_csv = files.data["runs_csv"].read_text()
    assert f"GeometryError: {catalogued.name}: gap" in runs_csv
    assert str(catalogued.parent) not in runs_csv
