"""``islet-imaging study``: create a study workspace, import DICOM, show status, run the batch."""

from __future__ import annotations

import argparse

from islet_imaging.errors import IsletImagingError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "study",
        help="longitudinal study workspace: init, import, status, batch, cleanup",
        description="Manage a study workspace (a folder with an SQLite catalogue).",
    )
    sub = parser.add_subparsers(dest="study_command", metavar="ACTION", required=True)

    init = sub.add_parser("init", help="create an empty workspace in DIR")
    init.add_argument("dir", help="workspace folder (created)")

    imp = sub.add_parser("import", help="catalogue the DICOM series found under PATH...")
    imp.add_argument("dir", help="workspace folder")
    imp.add_argument("paths", nargs="+", metavar="PATH", help="DICOM folders, DICOMDIRs or zips")
    add_implantation_options(imp)

    status = sub.add_parser("status", help="patients, visits and their processing state")
    status.add_argument("dir", help="workspace folder")

    cleanup = sub.add_parser(
        "cleanup",
        help="remove files of killed or failed runs that nothing references",
        description="Remove run folders (runs/) and automatic masks (masks/.../auto-*) that no "
        "catalogue row references and that are older than the last recorded stop of an "
        "interrupted or failed run; a person's mask versions are never removed; does nothing "
        "while any run is still running (the batch also does this at its start).",
    )
    cleanup.add_argument("dir", help="workspace folder")
    cleanup.add_argument("--dry-run", action="store_true", help="only list the files")

    batch = sub.add_parser("batch", help="process every pending visit (Dask)")
    batch.add_argument("dir", help="workspace folder")
    add_batch_options(batch)
    parser.set_defaults(func=run)


def add_implantation_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--implantation-csv",
        metavar="CSV",
        help="CSV with columns patient_id (DICOM PatientID or pseudonym), implantation_date",
    )
    group.add_argument(
        "--implantation-date", metavar="YYYY-MM-DD", help="one implantation date for every patient"
    )


def add_batch_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--workers", type=int, default=2, help="local worker processes (0: no Dask; default 2)"
    )
    parser.add_argument(
        "--scheduler", metavar="ADDRESS", help="use an existing Dask scheduler (tcp://host:8786)"
    )
    parser.add_argument(
        "--segmentation",
        choices=("mr", "pet_guided", "pet"),
        default="mr",
        help="automatic graft delineation: MR relative to reference muscle (default), MR kept "
        "where PET hot spots are (pet_guided), or PET",
    )
    parser.add_argument(
        "--baseline-search-steps",
        type=int,
        default=2,
        metavar="N",
        help="rotation search of the visit-to-baseline registration: (2N+1)^3 starts within "
        "±20° (default 2; 1 is faster for small repositioning)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def implantation_option(args: argparse.Namespace) -> str | None:
    return args.implantation_csv or args.implantation_date


def run(args: argparse.Namespace) -> int:
    from islet_imaging.study.workspace import Workspace

    if args.study_command == "init":
        Workspace.init(args.dir).close()
        print(f"created study workspace {args.dir}")
        return 0
    with Workspace.open(args.dir) as ws:
        if args.study_command == "import":
            summary = ws.import_paths(args.paths, implantation=implantation_option(args))
            print(f"imported: {summary}")
            for problem in summary.problems[:20]:
                print(f"  skipped {problem}")
            return 0
        if args.study_command == "status":
            print(ws.status())
            return 0
        if args.study_command == "cleanup":
            from islet_imaging.study.cleanup import remove_orphans

            print(remove_orphans(ws, dry_run=args.dry_run))
            return 0
        if args.study_command == "batch":
            summary = run_batch_from_args(ws, args)
            print(summary)
            return 1 if summary.failed else 0
    raise IsletImagingError("unknown study action", value=args.study_command)


def run_batch_from_args(ws, args: argparse.Namespace):
    from islet_imaging.study.batch import run_batch
    from islet_imaging.study.pipeline import PipelineOptions

    return run_batch(
        ws,
        n_workers=args.workers,
        scheduler=args.scheduler,
        options=PipelineOptions(
            segmentation=args.segmentation, baseline_search_steps=args.baseline_search_steps
        ),
        progress=not args.no_progress,
    )
