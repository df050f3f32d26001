"""``islet-imaging scan PATH [--json]``: list the DICOM series under a folder, DICOMDIR or zip."""

from __future__ import annotations

import argparse
import json
import sys

__all__ = ["register", "run"]

_MAX_PROBLEMS = 20


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``scan`` sub-command."""
    parser = subparsers.add_parser(
        "scan",
        help="list the DICOM series in a folder, DICOMDIR or .zip (headers only)",
        description="List patients, studies and series (no patient names) and the files "
        "that could not be read.",
    )
    parser.add_argument("path", help="folder, DICOMDIR or .zip archive")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--no-progress", action="store_true", help="never show a progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Scan ``args.path`` and print the index; exit code 0 (problems are listed, not fatal)."""
    from islet_imaging.io.discover import scan

    index = scan(args.path, progress=False if args.no_progress else None)
    if args.json:
        json.dump(index.to_dict(), sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 200)
    table = Table(title=f"DICOM series in {index.root}")
    for column in (
        "patient",
        "study date",
        "#",
        "modality",
        "description",
        "images",
        "orientation",
        "image type",
        "series UID",
    ):
        table.add_column(column, overflow="fold")
    for patient in index.patients:
        for study in patient.studies:
            for s in study.series:
                images = (
                    str(s.n_instances)
                    if s.n_frames == s.n_instances
                    else f"{s.n_instances} ({s.n_frames} frames)"
                )
                table.add_row(
                    patient.patient_id or "-",
                    study.date or "-",
                    "-" if s.series_number is None else str(s.series_number),
                    s.modality or "-",
                    s.description or "-",
                    images,
                    s.orientation,
                    "; ".join(s.image_types) or "-",
                    s.series_uid,
                )
    console.print(table)
    if index.problems:
        console.print(f"[yellow]{len(index.problems)} file(s) not used:[/yellow]")
        for problem in index.problems[:_MAX_PROBLEMS]:
            console.print(f"  {problem.path}: {problem.reason}", markup=False, highlight=False)
        if len(index.problems) > _MAX_PROBLEMS:
            console.print(
                f"  ... and {len(index.problems) - _MAX_PROBLEMS} more (--json lists all)"
            )
    return 0
