"""``islet-imaging measure --mask M [--mr SERIES] [--pet SERIES] [--csv|--json OUT]``.

Measures the graft label map (from ``islet-imaging segment`` or any NIfTI/NRRD mask) on the MR
and/or PET series: volumes, deposits, MR statistics, SUVmax/mean/peak, uptake, ratios to a
reference muscle and partial-volume corrected means, as a tidy table with provenance.
"""

from __future__ import annotations

import argparse
import json
import sys

from islet_imaging.errors import IsletImagingError

__all__ = ["register", "run"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``measure`` sub-command."""
    p = subparsers.add_parser(
        "measure",
        help="measure a graft mask on MR / PET: tidy table (print, CSV or JSON)",
        description="Volumes (mL), deposits, MR mean/SD/CNR, SUVmax/mean/peak, uptake, "
        "%%ID, ratios to reference muscle, partial-volume correction (RC, GTM).",
    )
    p.add_argument("--mask", required=True, help="label map or mask (.nii.gz, .nrrd)")
    p.add_argument("--mr", nargs="+", metavar="SOURCE", help="MR visit/series folder or files")
    p.add_argument("--pet", nargs="+", metavar="SOURCE", help="PET visit/series folder")
    p.add_argument("--mr-match", help="text in the MR series description (e.g. T2)")
    p.add_argument("--reference-mask", help="reference-muscle mask (default: automatic on MR)")
    p.add_argument("--no-reference", action="store_true", help="no reference-muscle ratios")
    p.add_argument("--fwhm", type=float, help="PET PSF FWHM (mm) for partial-volume correction")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--csv", metavar="OUT", help="write CSV")
    out.add_argument("--json", metavar="OUT", help="write JSON (records)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Measure and print or write the table."""
    from islet_imaging._atomic import write_text_atomic
    from islet_imaging.cli.segment import load_selected, sidecar_path
    from islet_imaging.io.files import read_mask
    from islet_imaging.measure import measure_graft
    from islet_imaging.segment import reference_muscle_roi
    from islet_imaging.segment._common import resample_mask_like

    labels = read_mask(args.mask)
    sidecar = sidecar_path(args.mask)
    if sidecar.is_file():
        info = json.loads(sidecar.read_text())
        labels = labels.with_meta(
            method=info.get("deposits") and "deposits",
            parameters=info.get("deposits"),
            graft_method=info.get("method"),
            graft_parameters=info.get("parameters"),
            source_series_uid=info.get("source_series_uid"),
        )
    if not args.mr and not args.pet:
        raise IsletImagingError(
            "nothing to measure the mask on",
            tag="--mr/--pet",
            hint="give --mr SERIES and/or --pet SERIES",
        )
    mr = suv = activity = reference = None
    if args.mr:
        mr = load_selected(args.mr, modality="MR", match=args.mr_match)
    if args.pet:
        activity, suv = load_selected(args.pet, modality="PT")
    if args.reference_mask:
        reference = read_mask(args.reference_mask)
    elif mr is not None and not args.no_reference:
        graft = resample_mask_like(labels, mr)
        reference = reference_muscle_roi(mr, graft=graft.with_array(graft.array > 0))
    table = measure_graft(
        labels, mr=mr, suv=suv, activity=activity, reference=reference, fwhm_mm=args.fwhm
    )
    if args.csv:
        write_text_atomic(args.csv, table.to_csv(index=False), overwrite=args.overwrite)
    elif args.json:
        text = table.to_json(orient="records", indent=1)
        write_text_atomic(args.json, text + "\n", overwrite=args.overwrite)
    else:
        view = table[["object", "metric", "value", "unit", "method"]]
        sys.stdout.write(view.to_string(index=False) + "\n")
    return 0
