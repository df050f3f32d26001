"""``islet-imaging export SRC OUT --deidentify [--key SECRET]``: de-identified DICOM copy."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

__all__ = ["register", "run"]

KEY_ENV = "ISLET_DEID_KEY"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``export`` sub-command."""
    parser = subparsers.add_parser(
        "export",
        help="export DICOM files de-identified (PS3.15 basic profile)",
        description="Copy every DICOM file under SRC to OUT, de-identified with the DICOM "
        "PS3.15 Basic Application Confidentiality Profile (dates shifted per patient, UIDs "
        "remapped, PET quantification and geometry kept). Files are written as "
        "OUT/<pseudonym>/<study>/<series>/<instance>.dcm; nothing is overwritten.",
    )
    parser.add_argument("src", type=Path, help="DICOM file or folder")
    parser.add_argument("out", type=Path, help="output folder")
    parser.add_argument(
        "--deidentify",
        action="store_true",
        required=True,
        help="apply the de-identification profile (required: there is no identified export)",
    )
    parser.add_argument(
        "--key",
        help=f"secret for pseudonyms, date shifts and UIDs (default: ${KEY_ENV}, else random). "
        "Use the same key to export later visits consistently.",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Export; returns 0, or 1 when some DICOM files were refused (listed on stderr)."""
    from islet_imaging.io.deidentify import export_deidentified

    key = args.key or os.environ.get(KEY_ENV)
    if not key:
        print(
            "note: no --key given: pseudonyms and dates cannot be linked to another export",
            file=sys.stderr,
        )
    report = export_deidentified(args.src, args.out, key=key)
    print(f"exported {len(report.written)} file(s) of {report.patients} patient(s) to {args.out}")
    for path, reason in report.skipped:
        print(f"ignored {path}: {reason}", file=sys.stderr)
    for path, reason in report.refused:
        print(f"NOT exported {path}: {reason}", file=sys.stderr)
    return 1 if report.refused else 0
