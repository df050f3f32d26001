"""Remove the files a killed or failed pipeline run left behind in a workspace.

A worker writes its files (the automatic mask under ``masks/``, transforms and preview under
``runs/<token>/``, atomic-write temporaries) *before* the client commits its run; when the run is
killed or fails, no catalogue row ever references them. :func:`remove_orphans` deletes them.

The rule — a file under ``runs/``, or an automatic mask under ``masks/`` (``auto-*``, written by
pipeline workers, and its atomic-write temporaries), is removed only when all three hold:

1. **no batch can be running**: after runs whose process is gone are marked ``interrupted``,
   no run of the catalogue is still ``running`` (a live process, or a run started on another
   host, which cannot be checked). Otherwise nothing at all is removed;
2. **nothing references it**: it is not the path of any mask version (of any run or person)
   and not inside a run folder (``runs/<token>/``) of which any run's artifacts name a path —
   a run folder belongs to one run, and its files go together (a ``.tfm`` transform and its
   ``.json`` sidecar);
3. **it predates the last recorded stop**: it was last modified before the latest
   ``finished_at`` of an ``interrupted`` or ``failed`` run — the moment the catalogue knew that
   run had stopped, so every file it wrote is older. Anything newer (a mask version being saved
   right now, a batch that started meanwhile, a late write of a worker that outlived its
   client) is kept. With no interrupted or failed run, nothing is removed.

A person's mask versions (``v-*``, :meth:`Workspace.save_mask`) are never removed: a save
renames its file into place before the catalogue row is committed, and a cleanup in between
must not take it. Run folders left empty are removed too; mask folders are kept (a person may
save into them at any time). :func:`~islet_imaging.study.batch.run_batch` applies this at its start;
``islet-imaging study cleanup DIR [--dry-run]`` applies it on demand.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from islet_imaging.study.workspace import Workspace

__all__ = ["MANAGED_FOLDERS", "OrphanCleanup", "remove_orphans"]

#: workspace folders whose files are catalogued (everything else is left alone)
MANAGED_FOLDERS = ("masks", "runs")


@dataclasses.dataclass(frozen=True)
class OrphanCleanup:
    """Outcome of :func:`remove_orphans`."""

    removed: tuple[Path, ...]
    refused: str | None = None
    dry_run: bool = False

    def __str__(self) -> str:
        if self.refused:
            return f"no cleanup: {self.refused}"
        verb = "would remove" if self.dry_run else "removed"
        lines = [f"{verb} {len(self.removed)} unreferenced file(s) of stopped runs"]
        lines += [f"  {path}" for path in self.removed]
        return "\n".join(lines)


def remove_orphans(workspace: Workspace, *, dry_run: bool = False) -> OrphanCleanup:
    """Delete files of killed or failed runs that no catalogue row references.

    See the module docstring for the exact rule.

    Parameters
    ----------
    workspace
        An open workspace.
    dry_run
        Only list what would be removed.

    Returns
    -------
    OrphanCleanup
        The files removed (or that would be), or why nothing was removed.
    """
    workspace.mark_interrupted()
    running = workspace._query("SELECT COUNT(*) FROM runs WHERE status='running'")[0][0]
    if running:
        return OrphanCleanup((), refused=f"{running} run(s) still running", dry_run=dry_run)
    stopped = workspace._query(
        "SELECT MAX(finished_at) FROM runs WHERE status IN ('interrupted', 'failed')"
    )[0][0]
    if stopped is None:
        return OrphanCleanup((), dry_run=dry_run)
    cutoff = dt.datetime.fromisoformat(stopped).timestamp()
    root = workspace.root.resolve()
    referenced = _referenced(workspace, root)
    removed = []
    emptied = set()
    for path in _managed_files(root):
        try:
            if not referenced.isdisjoint((path, *path.parents)) or path.stat().st_mtime >= cutoff:
                continue
        except FileNotFoundError:  # gone meanwhile
            continue
        removed.append(path)
        if not dry_run:
            path.unlink()
            emptied.add(path.parent)
    for folder in sorted(emptied, key=lambda p: len(p.parts), reverse=True):
        _prune_run_folder(folder, root / "runs")
    return OrphanCleanup(tuple(sorted(removed)), dry_run=dry_run)


def _referenced(workspace: Workspace, root: Path) -> set[Path]:
    """Mask files and run folders that the catalogue references."""
    found = {(root / r["path"]).resolve() for r in workspace._query("SELECT path FROM masks")}
    runs = root / "runs"
    for row in workspace._query("SELECT artifacts FROM runs WHERE artifacts IS NOT NULL"):
        for value in _strings(json.loads(row["artifacts"])):
            path = (root / value).resolve() if value else root
            if runs in path.parents:
                found.add(runs / path.relative_to(runs).parts[0])
    return found


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item)


def _managed_files(root: Path) -> Iterator[Path]:
    """Files of ``runs/`` and the automatic masks (with their temporaries) of ``masks/``."""
    for name in MANAGED_FOLDERS:
        for folder, _, files in os.walk(root / name):
            for file in files:
                if name == "runs" or file.startswith(("auto-", ".auto-")):
                    yield (Path(folder) / file).resolve()


def _prune_run_folder(folder: Path, runs: Path) -> None:
    """Remove ``folder`` and its parents up to (not including) ``runs`` while they are empty."""
    while folder != runs and runs in folder.parents:
        try:
            folder.rmdir()
        except OSError:  # not empty
            return
        folder = folder.parent
