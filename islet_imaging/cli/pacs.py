"""``islet-imaging pacs search|pull|push``: exchange with a PACS over DICOMweb.

Credentials: ``ISLET_PACS_URL``, ``ISLET_PACS_USER``, ``ISLET_PACS_PASSWORD`` or a ``pacs.toml``
(``--config``, default ``~/.config/islet-imaging/pacs.toml``); the password is never printed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["register", "run"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``pacs`` sub-command and its actions."""
    parser = subparsers.add_parser(
        "pacs",
        help="search, pull and push DICOM over DICOMweb",
        description="Search a PACS (QIDO-RS), pull series (WADO-RS) into a folder or a study "
        "workspace, push SEG / SR results (STOW-RS). Credentials come from ISLET_PACS_URL, "
        "ISLET_PACS_USER, ISLET_PACS_PASSWORD or a pacs.toml file.",
    )
    parser.add_argument("--config", type=Path, help="pacs.toml with a [pacs] table")
    actions = parser.add_subparsers(dest="pacs_action", metavar="ACTION", required=True)

    search = actions.add_parser("search", help="find studies (or the series of one study)")
    search.add_argument("--patient-id", help="DICOM PatientID")
    search.add_argument("--from", dest="date_from", help="first study date (YYYY-MM-DD)")
    search.add_argument("--to", dest="date_to", help="last study date (YYYY-MM-DD)")
    search.add_argument("--modality", help="e.g. MR, PT, SEG, SR")
    search.add_argument("--study", help="list the series of this StudyInstanceUID")
    search.add_argument("--json", action="store_true", help="print JSON")

    pull = actions.add_parser("pull", help="retrieve a study or some of its series")
    pull.add_argument("study", help="StudyInstanceUID")
    pull.add_argument("--series", nargs="+", help="only these SeriesInstanceUIDs")
    pull.add_argument("--modality", nargs="+", help="only series of these modalities")
    target = pull.add_mutually_exclusive_group(required=True)
    target.add_argument("--out", type=Path, help="folder (one sub-folder per series)")
    target.add_argument(
        "--workspace",
        type=Path,
        help="study workspace: files go to <workspace>/dicom/ and are imported",
    )

    push = actions.add_parser("push", help="store DICOM files (e.g. SEG and SR)")
    push.add_argument("files", nargs="+", type=Path, help="files or folders")
    parser.set_defaults(func=run)


def _print_table(rows: list[dict], columns: list[str]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table()
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(_cell(row.get(c)) for c in columns))
    Console(width=None if sys.stdout.isatty() else 200).print(table)


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return ",".join(map(str, value))
    return str(value)


def _files(paths: list[Path]) -> list[Path]:
    found = []
    for path in paths:
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.is_file()))
        else:
            found.append(path)
    return found


def run(args: argparse.Namespace) -> int:
    """Run one PACS action; errors (HTTP, credentials) come out as one scrubbed line."""
    from islet_imaging.io import dicomweb

    client = dicomweb.connect(dicomweb.load_pacs_config(args.config))
    if args.pacs_action == "search":
        if args.study:
            rows = dicomweb.search_series(client, study_uid=args.study, modality=args.modality)
            columns = ["series_uid", "modality", "number", "description", "n_instances"]
        else:
            rows = dicomweb.search_studies(
                client,
                patient_id=args.patient_id,
                date_from=args.date_from,
                date_to=args.date_to,
                modality=args.modality,
            )
            columns = ["study_uid", "patient_id", "date", "modalities", "description", "n_series"]
        if args.json:
            json.dump(rows, sys.stdout, indent=2, default=str)
            sys.stdout.write("\n")
        else:
            _print_table(rows, columns)
        return 0
    if args.pacs_action == "pull":
        out = args.out if args.out else args.workspace / "dicom"
        if args.series:
            pulled = {
                uid: dicomweb.pull_series(client, study_uid=args.study, series_uid=uid, out_dir=out)
                for uid in args.series
            }
        else:
            pulled = dicomweb.pull_study(
                client, study_uid=args.study, out_dir=out, modalities=args.modality
            )
        n_files = sum(len(files) for files in pulled.values())
        print(f"pulled {len(pulled)} series ({n_files} files) into {out}")
        if args.workspace:
            from islet_imaging.study.workspace import Workspace

            with Workspace.open(args.workspace) as workspace:
                summary = workspace.import_paths([out / uid for uid in pulled])
            print(f"workspace {args.workspace}: {summary}")
        return 0
    files = _files(args.files)
    stored = dicomweb.push(client, files)
    print(f"stored {stored} instance(s)")
    return 0
