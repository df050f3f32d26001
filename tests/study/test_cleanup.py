"""Orphan cleanup: files of a killed run are removed, referenced and newer files never are."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _tiny_cohort import write_tiny_cohort

from islet_imaging.cli import main
from islet_imaging.study.workspace import Workspace
from islet_imaging.volume import Volume


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _write(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _age(*paths: Path, seconds: float) -> None:
    for path in paths:
        when = time.time() - seconds
        os.utime(path, (when, when))


def _files(root: Path) -> set[Path]:
    return {p for name in ("masks", "runs") for p in (root / name).rglob("*") if p.is_file()}


def test_cleanup_removes_only_files_of_a_killed_run(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    root = tmp_path / "ws"
    with Workspace.init(root) as ws:
        ws.import_paths([write_tiny_cohort(tmp_path)], implantation="2024-01-01")
        mask = np.zeros((4, 8, 8), bool)
        mask[1:3, 2:5, 2:5] = True
        human = ws.save_mask(1, Volume(mask, spacing=(3, 1, 1)), author="annotator")
        # a finished run: its automatic mask and run files are referenced by the catalogue
        done = ws.start_run(2)
        auto = _write(ws.new_mask_path(2, prefix="auto"))
        preview = _write(root / "runs" / "0002-done" / "preview.npz")
        tfm = _write(root / "runs" / "0002-done" / "to_baseline.tfm")
        sidecar = _write(root / "runs" / "0002-done" / "to_baseline.json")  # goes with the .tfm
        ws.finish_run(
            done,
            measurements=pd.DataFrame({"object": ["graft"], "metric": ["volume"], "value": [1.0]}),
            auto_mask={"path": str(auto), "method": "test"},
            artifacts={
                "preview": "runs/0002-done/preview.npz",
                "to_baseline": {"transform": "runs/0002-done/to_baseline.tfm", "metric": -0.5},
            },
        )
        # a run killed mid-way: it wrote files but its results were never committed
        killed = ws.start_run(3)
        orphan_mask = _write(ws.new_mask_path(3, prefix="auto"))
        orphan_tmp = _write(orphan_mask.parent / f".{orphan_mask.name}.k3j2.tmp.nii.gz")
        orphan_run = _write(root / "runs" / "0003-killed" / "pet_to_mr.tfm")
        orphan_sidecar = _write(root / "runs" / "0003-killed" / "pet_to_mr.json")
        orphans = {orphan_mask, orphan_tmp, orphan_run, orphan_sidecar}
        # a person's save renamed into place, its catalogue row not yet committed: never taken
        saving = _write(ws.new_mask_path(1, prefix="v"))
        referenced = {human.path, auto, preview, tfm, sidecar, saving}
        _age(*orphans, *referenced, seconds=30)
        before = {p: p.read_bytes() for p in referenced}

        # its process (this one) is alive: a batch may be writing, nothing is removed
        assert main(["study", "cleanup", str(root)]) == 0
        assert "no cleanup: 1 run(s) still running" in capsys.readouterr().out
        assert _files(root) == orphans | referenced

        # the process is gone: the run is marked interrupted, only its files are removed
        db = sqlite3.connect(root / "catalogue.sqlite")
        db.execute("UPDATE runs SET pid=? WHERE id=?", (_dead_pid(), killed))
        db.commit()
        db.close()
        assert main(["study", "cleanup", str(root), "--dry-run"]) == 0
        assert "would remove 4 unreferenced file(s)" in capsys.readouterr().out
        assert _files(root) == orphans | referenced
        # a file written after the run was recorded as stopped (a mask being saved now) stays
        fresh = _write(root / "masks" / "P001" / "visit-0001" / "graft" / "v-new.nii.gz")
        os.utime(fresh, (time.time() + 5, time.time() + 5))
        assert main(["study", "cleanup", str(root)]) == 0
        out = capsys.readouterr().out
        assert "removed 4 unreferenced file(s)" in out
        assert _files(root) == referenced | {fresh}
        assert {p: p.read_bytes() for p in referenced} == before
        assert not (root / "runs" / "0003-killed").exists()
        assert orphan_mask.parent.is_dir()  # mask folders stay
        assert ws.runs().set_index("run_id").loc[killed, "status"] == "interrupted"
        assert ws.latest_mask(1).read().array.sum() == mask.sum()
