"""``islet-imaging report``: HTML reports and CSV/Parquet exports of a study workspace."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "report",
        help="write the cohort and per-patient HTML reports of a workspace",
        description="Write OUT/index.html, OUT/patients/*.html, OUT/figures and OUT/data exports.",
    )
    parser.add_argument("dir", help="study workspace folder")
    parser.add_argument("-o", "--output", required=True, metavar="OUT", help="output folder")
    add_report_options(parser)
    parser.set_defaults(func=run)


def add_report_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--include-identifiers",
        action="store_true",
        help="show patient names, IDs and birth dates (read from DICOM) on the HTML pages",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="write the report into a folder holding other files (same-named files replaced)",
    )


def run(args: argparse.Namespace) -> int:
    from islet_imaging.report.html import write_report

    files = write_report(
        args.dir,
        args.output,
        include_identifiers=args.include_identifiers,
        overwrite=args.overwrite,
    )
    print(f"report: {files.index} ({len(files.patients)} patient page(s))")
    return 0
