"""``study batch --scheduler ADDRESS``: the visits run on an existing Dask cluster, which the
batch uses but does not own (it is still running afterwards)."""

from __future__ import annotations

import socket
from pathlib import Path

import dask
import pytest
from distributed import Client, LocalCluster

from islet_imaging.cli import main
from islet_imaging.study.workspace import Workspace


@pytest.fixture
def cluster():
    """A cheap external cluster: one in-process worker with one thread."""
    with LocalCluster(
        n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0"
    ) as running:
        yield running


def test_batch_runs_on_existing_scheduler_and_leaves_it_running(
    phantom_study: Path, cluster: LocalCluster, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    ws_dir = tmp_path / "ws"
    assert main(["study", "init", str(ws_dir)]) == 0
    assert main(["study", "import", str(ws_dir), str(phantom_study / "dicom")]) == 0
    address = cluster.scheduler_address
    code = main(
        ["study", "batch", str(ws_dir), "--scheduler", address,
         "--baseline-search-steps", "1", "--no-progress"]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    assert "2 visit(s) processed, 0 failed, 0 already done" in out
    assert f"(scheduler {address})" in out

    with Workspace.open(ws_dir) as ws:
        runs = ws.runs()
        assert list(runs["status"]) == ["done", "done"]
        measured = ws.measurements()
    graft = measured[(measured["object"] == "graft") & (measured["metric"] == "volume")]
    assert len(graft) == 2
    assert (graft["value"] > 0).all()

    # every catalogued run was computed as a task of that scheduler, on its only worker
    scheduler = cluster.scheduler
    finished = {
        str(key)
        for key, start, finish, *_ in scheduler.transition_log
        if start == "processing" and finish == "memory"
    }
    expected = {f"visit-{r.visit_id}-{r.run_id}" for r in runs.itertuples()}
    assert expected <= finished
    (worker,) = cluster.workers.values()
    ran_here = {str(entry[0]) for entry in worker.state.log if entry[0] in expected}
    assert ran_here == expected

    # the cluster we lent is untouched: same scheduler and worker, still computing
    assert scheduler.status.name == "running"
    assert len(scheduler.workers) == 1
    with Client(address) as client:
        assert client.submit(sum, [1, 2, 3]).result() == 6


def test_unreachable_scheduler_is_a_clear_error_and_starts_no_run(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from _tiny_cohort import write_tiny_cohort

    ws_dir = tmp_path / "ws"
    with Workspace.init(ws_dir) as ws:
        ws.import_paths([write_tiny_cohort(tmp_path)])
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        address = f"tcp://127.0.0.1:{sock.getsockname()[1]}"
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        code = main(["study", "batch", str(ws_dir), "--scheduler", address, "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    assert "cannot connect to the Dask scheduler" in err
    assert "--scheduler" in err
    assert address in err
    with Workspace.open(ws_dir) as ws:
        assert ws.runs().empty
        assert len(ws.pending_visits()) == 5
