"""The whole cohort through the pipeline with ``dask.distributed``.

Only this (client) process writes the catalogue: workers run
:func:`~islet_imaging.study.pipeline.run_visit`, which reads DICOM and writes new,
uniquely-named files, and return their results; the client commits each visit in one
transaction as it arrives. So killing the batch at any instant loses at most the visits in
flight: their runs are marked ``interrupted`` by the next batch, which processes them again,
while finished visits are skipped. A visit that fails (broken series, nothing to segment…) is
recorded as ``failed`` with its reason and the batch goes on; failed visits are retried on the
next run. At its start the batch removes the files that killed or failed runs left behind
(:func:`~islet_imaging.study.cleanup.remove_orphans`, which documents the rule).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any

from islet_imaging.errors import IsletImagingError
from islet_imaging.study.cleanup import remove_orphans
from islet_imaging.study.pipeline import (
    PipelineOptions,
    VisitJob,
    VisitResult,
    commit_visit,
    plan_visit,
    run_visit,
)
from islet_imaging.study.workspace import Workspace

__all__ = ["BatchSummary", "run_batch"]


@dataclasses.dataclass(frozen=True)
class BatchSummary:
    """Outcome of :func:`run_batch`."""

    done: tuple[int, ...]
    failed: dict[int, str]
    skipped: int
    interrupted_before: int
    seconds: float
    workers: int | str
    orphans_removed: int = 0

    def __str__(self) -> str:
        lines = [
            f"{len(self.done)} visit(s) processed, {len(self.failed)} failed, "
            f"{self.skipped} already done, in {self.seconds:.1f} s "
            + (
                f"(scheduler {self.workers})"
                if isinstance(self.workers, str)
                else f"({self.workers} worker(s))"
            )
        ]
        if self.orphans_removed:
            lines.append(f"removed {self.orphans_removed} unreferenced file(s) of stopped runs")
        lines += [f"  visit {v} failed: {reason}" for v, reason in self.failed.items()]
        return "\n".join(lines)


#: each worker process computes with one thread (the processes are the parallelism)
_ONE_THREAD = {
    "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}


@contextlib.contextmanager
def _client(n_workers: int, scheduler: str | None) -> Iterator[Any]:
    from distributed import Client, LocalCluster

    if scheduler:
        try:
            client = Client(scheduler)
        except (OSError, TimeoutError, ValueError) as exc:
            raise IsletImagingError(
                f"cannot connect to the Dask scheduler ({exc})",
                tag="--scheduler",
                value=scheduler,
                hint="check the address (tcp://host:8786) and that the scheduler is running, "
                "or leave out --scheduler to use a local cluster",
            ) from exc
        with client:  # closes our client only, never the cluster we were lent
            yield client
        return
    with (
        LocalCluster(
            n_workers=n_workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=40,
            env=_ONE_THREAD,
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


def _progress(enabled: bool, total: int):
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[last]}"),
        console=Console(file=sys.stderr),
        disable=not enabled,
        transient=False,
    )
    return progress


def run_batch(
    workspace: Workspace | str | os.PathLike,
    *,
    n_workers: int = 2,
    scheduler: str | None = None,
    options: PipelineOptions | None = None,
    visits: Sequence[int] | None = None,
    retry_failed: bool = True,
    progress: bool = True,
) -> BatchSummary:
    """Process every pending visit of a workspace.

    Parameters
    ----------
    workspace
        An open :class:`Workspace` or its folder.
    n_workers
        Worker processes of the local Dask cluster; 0 runs the visits one after the other in
        this process (no Dask).
    scheduler
        Address of an existing Dask scheduler (``tcp://host:8786``) to use instead of a local
        cluster; its workers must see the workspace and the DICOM files at the same paths.
        The batch only connects a client to it: the cluster is left running.
    options
        Pipeline settings, recorded with every run.
    visits
        Restrict to these visit ids (still skipping finished ones).
    retry_failed
        Also retry visits whose last run failed (default True).
    progress
        Show a rich progress bar on stderr.

    Returns
    -------
    BatchSummary
        Processed, failed (with reasons) and skipped visits.
    """
    if not isinstance(workspace, Workspace):
        with Workspace.open(workspace) as opened:
            return run_batch(
                opened, n_workers=n_workers, scheduler=scheduler, options=options,
                visits=visits, retry_failed=retry_failed, progress=progress,
            )  # fmt: skip
    if n_workers < 0:
        raise IsletImagingError("must be >= 0", tag="n_workers", value=n_workers)
    options = options or PipelineOptions()
    start = time.perf_counter()
    interrupted = workspace.mark_interrupted()
    orphans = remove_orphans(workspace)
    all_visits = [int(v) for v in workspace.visits()["visit_id"]]
    pending = workspace.pending_visits(retry_failed=retry_failed)
    if visits is not None:
        wanted = {int(v) for v in visits}
        pending = [v for v in pending if v in wanted]
        all_visits = [v for v in all_visits if v in wanted]
    skipped = len(all_visits) - len(pending)
    done: list[int] = []
    failed: dict[int, str] = {}

    def record(run_id: int, result: VisitResult) -> None:
        commit_visit(workspace, run_id, result)
        (
            done.append(result.visit_id)
            if result.ok
            else failed.__setitem__(result.visit_id, result.reason)
        )

    workers: int | str = scheduler or n_workers
    with contextlib.ExitStack() as stack:
        # connect first: a wrong --scheduler fails before any run is started
        client = None
        if pending and (scheduler or n_workers > 0):
            client = stack.enter_context(_client(n_workers, scheduler))
        jobs: list[tuple[int, VisitJob]] = []
        for visit_id in pending:
            try:
                job = plan_visit(workspace, visit_id, options=options)
            except IsletImagingError as exc:
                run_id = workspace.start_run(visit_id, params=options.to_dict())
                reason = f"{type(exc).__name__}: {exc}"
                record(run_id, VisitResult(visit_id=visit_id, ok=False, reason=reason))
                continue
            jobs.append((workspace.start_run(visit_id, params=options.to_dict()), job))
        with _progress(progress, len(pending)) as bar:
            task = bar.add_task(
                "visits", total=len(pending), completed=len(pending) - len(jobs), last=""
            )
            if client is None:
                for run_id, job in jobs:
                    result = run_visit(job)
                    record(run_id, result)
                    bar.update(task, advance=1, last=_last(job, result))
            elif jobs:

                def advance(job: VisitJob, result: VisitResult) -> None:
                    bar.update(task, advance=1, last=_last(job, result))

                _run_on_dask(client, jobs, record, advance)
    return BatchSummary(
        done=tuple(done),
        failed=failed,
        skipped=skipped,
        interrupted_before=interrupted,
        seconds=time.perf_counter() - start,
        workers=workers,
        orphans_removed=len(orphans.removed),
    )


def _run_on_dask(client: Any, jobs: list[tuple[int, VisitJob]], record, advance) -> None:
    """Submit every job to ``client``; record each result as it arrives."""
    from distributed import as_completed

    futures = {
        client.submit(run_visit, job, pure=False, key=f"visit-{job.visit_id}-{run_id}"): (
            run_id,
            job,
        )
        for run_id, job in jobs
    }
    for future in as_completed(futures):
        run_id, job = futures[future]
        try:
            result = future.result()
        except Exception as exc:  # a worker died: record it, go on
            result = VisitResult(
                visit_id=job.visit_id,
                ok=False,
                reason=f"worker error: {type(exc).__name__}: {exc}",
            )
        record(run_id, result)
        advance(job, result)


def _last(job: VisitJob, result: VisitResult) -> str:
    return f"{job.title} {'ok' if result.ok else 'FAILED'} ({result.seconds:.1f} s)"
