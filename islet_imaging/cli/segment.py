"""``islet-imaging segment SOURCE ... -o MASK.nii.gz``: delineate the graft and its deposits.

SOURCE is a visit folder, a series folder or DICOM files; the series is chosen by modality,
``--series-uid`` or ``--match`` (text in the series description). The label map (deposits
1..n) is written atomically as NIfTI/NRRD with a JSON sidecar (``MASK.json``) holding the
method, parameters and source series UIDs; seeds are LPS millimetres.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from islet_imaging.errors import IsletImagingError

__all__ = ["register", "run", "select_series", "sidecar_path"]

MR_METHODS = ("reference", "otsu", "multi_otsu", "region_growing", "pet_guided")
PET_METHODS = ("percent_max", "background_corrected", "absolute", "region_growing")


def sidecar_path(mask_path: str | Path) -> Path:
    """The JSON provenance file written next to a mask (``x.nii.gz`` -> ``x.json``)."""
    from islet_imaging.io.files import split_suffix

    path = Path(mask_path)
    return path.with_name(split_suffix(path)[0] + ".json")


def select_series(
    sources: list[str], *, modality: str, series_uid: str | None = None, match: str | None = None
):
    """Find the one series of ``modality`` under ``sources`` (a :class:`SeriesEntry`).

    Raises
    ------
    IsletImagingError
        If none or several series qualify (the message lists them and the options to choose).
    """
    from islet_imaging.io.discover import scan

    entries = []
    for source in sources:
        entries.extend(scan(source, progress=False).series)
    wanted = {"MR": {"MR"}, "PT": {"PT", "PET"}}[modality]
    found = [e for e in entries if (e.modality or "").upper() in wanted]
    if series_uid:
        found = [e for e in found if e.series_uid == series_uid]
    if match:
        found = [e for e in found if match.lower() in (e.description or "").lower()]
    if len(found) > 1 and modality == "MR" and not match and not series_uid:
        t2 = [e for e in found if "t2" in (e.description or "").lower()]
        found = t2 if len(t2) == 1 else found
    if len(found) != 1:
        listing = "; ".join(f"{e.description or '-'} ({e.series_uid})" for e in found)
        raise IsletImagingError(
            f"{len(found)} {modality} series match" + (f": {listing}" if listing else ""),
            path=", ".join(sources),
            tag="series",
            hint="choose one with --series-uid or --match TEXT",
        )
    return found[0]


def load_selected(sources, *, modality, series_uid=None, match=None, suv=True):
    """Load the selected series (PET: returns ``(activity Bq/mL, SUV)``)."""
    from islet_imaging.io.dicom import load_series

    entry = select_series(sources, modality=modality, series_uid=series_uid, match=match)
    volume = load_series(entry)
    if isinstance(volume, list):
        volume = volume[0]
    if modality == "PT":
        from islet_imaging.io.pet import to_suv

        return volume, (to_suv(volume) if suv else volume)
    return volume


def _points(values: list[list[float]] | None) -> list[list[float]] | None:
    return [list(map(float, v)) for v in values] if values else None


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``segment`` sub-command."""
    p = subparsers.add_parser(
        "segment",
        help="delineate the graft (MR or PET) and its deposits, write a label map",
        description="Delineate the graft on MR (reference muscle mean + k SD, Otsu, region "
        "growing, PET-guided) or PET (percent of SUVmax, background-corrected 50%%, absolute "
        "SUV, region growing), split deposits, write a NIfTI/NRRD label map + JSON sidecar.",
    )
    p.add_argument(
        "sources",
        nargs="+",
        metavar="VISIT_OR_SERIES",
        help="visit folder, series folder or DICOM files",
    )
    p.add_argument("-o", "--output", required=True, help="mask file (.nii.gz, .nii, .nrrd)")
    p.add_argument("--modality", choices=("mr", "pet"), default="mr")
    p.add_argument(
        "--method",
        help=f"MR: {', '.join(MR_METHODS)} (default reference); "
        f"PET: {', '.join(PET_METHODS)} (default percent_max)",
    )
    p.add_argument("--series-uid", help="SeriesInstanceUID of the image to segment")
    p.add_argument("--match", help="text in the series description (e.g. T2)")
    p.add_argument(
        "--pet",
        nargs="+",
        metavar="PET_SOURCE",
        help="PET visit/series for --method pet_guided (default: the sources)",
    )
    p.add_argument("--k", type=float, default=5.0, help="MR threshold in reference SDs")
    p.add_argument("--dark", action="store_true", help="hypointense graft (iron-labelled)")
    p.add_argument("--classes", type=int, default=3, help="multi-Otsu classes")
    p.add_argument("--fraction", type=float, help="PET fraction of SUVmax (0.41, 0.5)")
    p.add_argument("--threshold", type=float, help="absolute threshold (PET SUV, MR signal)")
    p.add_argument("--min-peak-suv", type=float, help="PET: segment every hot spot above this")
    p.add_argument(
        "--seed",
        nargs=3,
        type=float,
        action="append",
        metavar=("X", "Y", "Z"),
        help="seed point, LPS mm (repeatable)",
    )
    p.add_argument(
        "--reference-center",
        nargs=3,
        type=float,
        metavar=("X", "Y", "Z"),
        help="centre (LPS mm) of the reference-muscle ROI (default automatic)",
    )
    p.add_argument("--reference-radius", type=float, default=5.0, help="ROI radius, mm")
    p.add_argument(
        "--min-volume-mm3", type=float, default=20.0, help="smallest deposit kept, mm³ (default 20)"
    )
    p.add_argument(
        "--no-split",
        action="store_true",
        help="do not separate touching deposits (connected components only)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing mask")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Segment, write the mask and its sidecar, print a one-line summary."""
    from islet_imaging._atomic import refuse_existing, write_text_atomic
    from islet_imaging.io.files import write_volume
    from islet_imaging.measure.shape import object_volumes_ml
    from islet_imaging.segment import (
        reference_muscle_roi,
        segment_graft_mr,
        segment_graft_mr_pet_guided,
        segment_graft_pet,
        split_deposits,
    )

    out = Path(args.output)
    if not args.overwrite:
        refuse_existing(out, hint="choose another name or pass --overwrite")
    seeds = _points(args.seed)
    polarity = "dark" if args.dark else "bright"
    sources: dict[str, Any] = {}
    image = None  # deposits are split on the MR signal only (the PET is blurred by its PSF)
    if args.modality == "pet":
        _, suv = load_selected(
            args.sources, modality="PT", series_uid=args.series_uid, match=args.match
        )
        sources["pet_series_uid"] = suv.meta.get("series_uid")
        mask = segment_graft_pet(
            suv,
            method=args.method or "percent_max",
            fraction=args.fraction,
            threshold=args.threshold,
            seeds_mm=seeds,
            min_peak_suv=args.min_peak_suv,
        )
    else:
        mr = load_selected(
            args.sources, modality="MR", series_uid=args.series_uid, match=args.match
        )
        sources["mr_series_uid"] = mr.meta.get("series_uid")
        image = mr
        reference = None
        if args.reference_center is not None:
            reference = reference_muscle_roi(
                mr, center_mm=args.reference_center, radius_mm=args.reference_radius
            )
        method = args.method or "reference"
        if method == "pet_guided":
            _, suv = load_selected(args.pet or args.sources, modality="PT")
            sources["pet_series_uid"] = suv.meta.get("series_uid")
            mask = segment_graft_mr_pet_guided(
                mr,
                suv,
                fraction=args.fraction or 0.5,
                min_peak_suv=args.min_peak_suv,
                k=args.k,
                polarity=polarity,
                reference=reference,
            )
        else:
            mask = segment_graft_mr(
                mr,
                method=method,
                k=args.k,
                polarity=polarity,
                reference=reference,
                seeds_mm=seeds,
                classes=args.classes,
                threshold=args.threshold,
            )
    labels = split_deposits(
        mask,
        image=image,
        polarity=polarity,
        min_volume_mm3=args.min_volume_mm3,
        separate_touching=not args.no_split,
    )
    write_volume(labels, out, overwrite=args.overwrite)
    volumes = object_volumes_ml(labels)
    from islet_imaging import __version__

    sidecar = {
        "mask": str(out.name),
        "kind": "deposit_labels",
        "method": mask.meta.get("method"),
        "parameters": mask.meta.get("parameters"),
        "deposits": labels.meta.get("parameters"),
        "source_series_uid": mask.meta.get("source_series_uid"),
        **sources,
        "volumes_ml": {str(k): v for k, v in volumes.items()},
        "software_version": __version__,
    }
    write_text_atomic(
        sidecar_path(out), json.dumps(sidecar, indent=1, default=str) + "\n", overwrite=True
    )
    print(f"{out}: {len(volumes)} deposit(s), {sum(volumes.values()):.3f} mL ({sidecar['method']})")
    return 0
