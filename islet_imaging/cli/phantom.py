"""``islet-imaging phantom OUT --patients N --visits K --seed S``: a synthetic study with truth.

Writes MR T1/T2 and 68Ga-exendin PET DICOM series per visit under ``OUT/dicom`` and the ground
truth (NIfTI masks + ``truth.json``) under ``OUT/truth``; see :mod:`islet_imaging.phantom` for
the layout and the truth schema. The output is bit-for-bit reproducible from the seed.
"""

from __future__ import annotations

import argparse
import time

__all__ = ["register", "run"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``phantom`` sub-command."""
    parser = subparsers.add_parser(
        "phantom",
        help="generate a synthetic forearm graft study (DICOM + ground truth)",
        description="Generate patients x visits of synthetic forearm islet-graft MR (T1, T2) "
        "and 68Ga-exendin PET DICOM series with exact ground truth.",
    )
    parser.add_argument("out", help="output folder (created)")
    parser.add_argument("--patients", type=int, default=2, help="number of patients (default 2)")
    parser.add_argument("--visits", type=int, default=3, help="visits per patient (default 3)")
    parser.add_argument("--seed", type=int, default=0, help="master seed (default 0)")
    parser.add_argument(
        "--size",
        choices=("small", "sample", "standard"),
        default="standard",
        help="grid preset (default standard: MR 0.6 x 0.6 x 3 mm, PET 2 mm)",
    )
    orientation = parser.add_mutually_exclusive_group()
    orientation.add_argument("--oblique", action="store_true", help="oblique MR acquisition")
    orientation.add_argument("--sagittal", action="store_true", help="sagittal MR acquisition")
    parser.add_argument(
        "--iron", action="store_true", help="iron-labelled islets (dark deposits on MR)"
    )
    parser.add_argument(
        "--psf-fwhm", type=float, default=5.0, help="PET PSF FWHM in mm (default 5)"
    )
    parser.add_argument("--rle", action="store_true", help="RLE Lossless compressed DICOM")
    parser.add_argument("--overwrite", action="store_true", help="replace existing files")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Generate the study and print one line per visit."""
    from islet_imaging.phantom import generate_study

    orientation = "oblique" if args.oblique else "sagittal" if args.sagittal else "axial"
    start = time.perf_counter()
    out = generate_study(
        args.out,
        patients=args.patients,
        visits=args.visits,
        seed=args.seed,
        size=args.size,
        orientation=orientation,
        iron_labelled=args.iron,
        psf_fwhm_mm=args.psf_fwhm,
        transfer_syntax="rle" if args.rle else None,
        overwrite=args.overwrite,
        progress=print,
    )
    print(f"wrote {out} in {time.perf_counter() - start:.1f} s (truth: {out / 'truth'})")
    return 0
