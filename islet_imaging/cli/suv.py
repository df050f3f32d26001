"""``islet-imaging suv SERIES``: the SUV factor(s) of a PET series and how they were derived."""

from __future__ import annotations

import argparse
import json
import sys

__all__ = ["register", "run"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``suv`` sub-command."""
    parser = subparsers.add_parser(
        "suv",
        help="compute the SUV factor(s) of a PET series (QIBA rules) and show the provenance",
        description="Print the factor that turns the PET voxel values into SUV, with the tags "
        "and rules used (no patient name). Values given as options override the header and "
        "are recorded.",
    )
    parser.add_argument("series", help="folder or file(s) of one PET series")
    parser.add_argument("--series-uid", help="SeriesInstanceUID when the folder holds several")
    parser.add_argument(
        "--kind", choices=["bw", "lbm", "bsa", "ibw"], default="bw", help="SUV normalisation"
    )
    parser.add_argument("--weight", type=float, metavar="KG", help="patient weight override (kg)")
    parser.add_argument("--height", type=float, metavar="M", help="patient height override (m)")
    parser.add_argument("--sex", choices=["M", "F"], help="patient sex override")
    parser.add_argument("--dose", type=float, metavar="BQ", help="injected dose override (Bq)")
    parser.add_argument(
        "--injection-time", metavar="ISO", help="injection date-time override (2024-03-04T10:00)"
    )
    parser.add_argument("--half-life", type=float, metavar="S", help="half-life override (s)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(func=run)


def _overrides(args: argparse.Namespace) -> dict:
    pairs = {
        "weight_kg": args.weight,
        "height_m": args.height,
        "sex": args.sex,
        "dose_bq": args.dose,
        "injection_time": args.injection_time,
        "half_life_s": args.half_life,
    }
    return {k: v for k, v in pairs.items() if v is not None}


def _factor_text(factor: float | list[float]) -> str:
    if isinstance(factor, list):
        return f"{min(factor):.6g} .. {max(factor):.6g} (per slice, {len(factor)} slices)"
    return f"{factor:.6g}"


def run(args: argparse.Namespace) -> int:
    """Load the series, compute its SUV provenance and print it; exit code 0."""
    from islet_imaging.io.dicom import load_volumes
    from islet_imaging.io.pet import to_suv

    volumes = load_volumes(args.series, series_uid=args.series_uid)
    records = []
    for volume in volumes:
        suv = to_suv(volume, args.kind, overrides=_overrides(args))
        records.append(dict(suv.meta["suv"]))
    if args.json:
        json.dump(records if len(records) > 1 else records[0], sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    for record in records:
        print(f"series      {record.get('series_uid')}")
        print(f"units       {record['input_units']} -> {record['units']}")
        print(f"factor      {_factor_text(record['factor'])}")
        print(f"formula     {record['formula']}")
        for name, rule in record["rules"].items():
            print(f"rule        {name}: {rule}")
        for name, value in record["tags"].items():
            shown = value if not isinstance(value, list) or len(value) <= 4 else f"{value[:4]}..."
            print(f"value       {name} = {shown}")
        for name, value in record["overrides"].items():
            print(f"override    {name} = {value}")
        print(f"software    {record['software']}")
    return 0
