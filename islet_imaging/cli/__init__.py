"""The ``islet-imaging`` command line.

Each sub-command lives in its own module of this package (``cli/<name>.py``) exposing
``register(subparsers)``, which adds its parser and sets ``func`` (``args -> exit code``).
Modules are discovered automatically, so adding a command touches no shared file.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence

from islet_imaging import __version__
from islet_imaging.errors import IsletImagingError

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level parser with every sub-command found in this package."""
    parser = argparse.ArgumentParser(
        prog="islet-imaging",
        description="Imaging of intramuscular islet grafts: DICOM to volumes, SUV, "
        "segmentation, measurements and longitudinal reports.",
    )
    parser.add_argument("--version", action="version", version=f"islet-imaging {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the process exit code.

    Errors raised on purpose (:class:`IsletImagingError`) are printed as one line on stderr and
    give exit code 2; nothing else is caught.
    """
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except IsletImagingError as exc:
        print(f"islet-imaging {args.command}: error: {exc}", file=sys.stderr)
        return 2
