"""``islet-imaging convert SERIES OUT.nii.gz``: DICOM series to NIfTI or NRRD.

If SERIES holds several volumes (several series, echoes, magnitude/phase, orientations) and no
``--series-uid`` narrows it to one, every volume is written with a suffix before the extension:
``OUT_s<series number>_<n>.nii.gz`` (``n`` counts the volumes of that series from 1), and the
written files are listed. Existing files are never replaced without ``--overwrite``.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

__all__ = ["output_names", "register", "run"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``convert`` sub-command."""
    parser = subparsers.add_parser(
        "convert",
        help="convert a DICOM series to NIfTI / NRRD",
        description=__doc__.split("\n", 2)[2] if __doc__ else None,
    )
    parser.add_argument("series", help="DICOM folder, file, DICOMDIR or .zip")
    parser.add_argument("out", help="output file: .nii, .nii.gz, .nrrd or .nhdr")
    parser.add_argument("--series-uid", help="SeriesInstanceUID to convert")
    parser.add_argument(
        "--geometry",
        choices=("strict", "resample", "accept"),
        default="strict",
        help="irregular slices: fail (default), resample onto a regular grid, or accept",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace existing files")
    parser.set_defaults(func=run)


def output_names(out: Path, series_numbers: list[object]) -> list[Path]:
    """File names for several volumes: ``<stem>_s<series number>_<n><suffix>``."""
    from islet_imaging.io.files import split_suffix

    stem, suffix = split_suffix(out)
    if not suffix:
        stem, suffix = out.stem, out.suffix
    counts: dict[str, int] = {}
    names = []
    for number in series_numbers:
        tag = re.sub(r"[^0-9A-Za-z.-]", "", str(number)) if number is not None else "x"
        counts[tag] = counts.get(tag, 0) + 1
        names.append(out.with_name(f"{stem}_s{tag}_{counts[tag]}{suffix}"))
    return names


def run(args: argparse.Namespace) -> int:
    """Load the series and write one file per volume; print what was written."""
    from islet_imaging._atomic import refuse_existing
    from islet_imaging.io.dicom import load_volumes
    from islet_imaging.io.files import write_volume

    volumes = load_volumes(args.series, series_uid=args.series_uid, geometry=args.geometry)
    out = Path(args.out)
    if len(volumes) == 1:
        targets = [out]
    else:
        targets = output_names(out, [v.meta.get("series_number") for v in volumes])
    if not args.overwrite:
        for target in targets:
            refuse_existing(target, hint="choose another name or pass --overwrite")
    for volume, target in zip(volumes, targets, strict=True):
        write_volume(volume, target, overwrite=args.overwrite)
        spacing = " x ".join(f"{s:g}" for s in volume.spacing)
        desc = volume.meta.get("series_description") or ""
        print(f"{target}  {volume.shape[::-1]} voxels (x, y, z), {spacing} mm (z, y, x)  {desc}")
        for warning in volume.meta.get("geometry_warnings", ()):
            print(f"  warning: {warning}")
    return 0
