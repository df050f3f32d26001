"""``islet-imaging run``: DICOM folders to a longitudinal report in one command.

Creates the workspace if needed, imports the paths, processes every pending visit and writes
the report.
"""

from __future__ import annotations

import argparse

from islet_imaging.cli.report import add_report_options
from islet_imaging.cli.study import (
    add_batch_options,
    add_implantation_options,
    implantation_option,
    run_batch_from_args,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "run",
        help="import + process + report in one go",
        description="Import DICOM PATHs into a workspace (created if needed), process every "
        "pending visit and write the HTML report.",
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="DICOM folders, DICOMDIRs, zips")
    parser.add_argument("--workspace", required=True, metavar="DIR", help="study workspace folder")
    parser.add_argument("--report", required=True, metavar="OUT", help="report output folder")
    add_implantation_options(parser)
    add_batch_options(parser)
    add_report_options(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from islet_imaging.report.html import check_report_folder, write_report
    from islet_imaging.study.workspace import Workspace

    with Workspace.init(args.workspace, exist_ok=True) as ws:
        check_report_folder(args.report, ws.root, overwrite=args.overwrite)  # before the batch
        summary = ws.import_paths(args.paths, implantation=implantation_option(args))
        print(f"imported: {summary}")
        batch = run_batch_from_args(ws, args)
        print(batch)
        files = write_report(
            ws, args.report, include_identifiers=args.include_identifiers, overwrite=args.overwrite
        )
    print(f"report: {files.index}")
    return 1 if batch.failed else 0
