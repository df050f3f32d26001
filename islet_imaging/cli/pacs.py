"""``islet-imaging pacs search|pull|push``: exchange with a PACS over DICOMweb (SEG + SR results).

Credentials: ``ISLET_PACS_URL``, ``ISLET_PACS_USER``, ``ISLET_PACS_PASSWORD`` or a ``pacs.toml``
(``--config``, default ``~/.config/islet-imaging/pacs.toml``); the password is never printed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["register", "run"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``pacs`` sub-command and its actions."""
    parser = subparsers.add_parser(
        "pacs",
        help="search, pull and push DICOM over DICOMweb",
        description="Search a PACS (QIDO-RS), pull series (WADO-RS) into a folder or a study "
        "workspace, push SEG / SR results (STOW-RS). Credentials come from ISLET_PACS_URL, "
        "ISLET_PACS_USER, ISLET_PACS_PASSWORD or a pacs.toml file.",
    )
    parser.add_argument("--config", type=Path, help="pacs.toml with a [pacs] table")
    actions = parser.add_subparsers(dest="pacs_action", metavar="ACTION", required=True)

    search = actions.add_parser("search", help="find studies (or the series of one study)")
    search.add_argument("--patient-id", help="DICOM PatientID")
    search.add_argument("--from", dest="date_from", help="first study date (YYYY-MM-DD)")
    search.add_argument("--to", dest="date_to", help="last study date (YYYY-MM-DD)")
    search.add_argument("--modality", help="e.g. MR, PT, SEG, SR")
    search.add_argument("--study", help="list the series of this StudyInstanceUID")
    search.add_argument("--json", action="store_true", help="print JSON")

    pull = actions.add_parser("pull", help="retrieve a study or some of its series")
    pull.add_argument("study", help="StudyInstanceUID")
    pull.add_argument("--series", nargs="+", help="only these SeriesInstanceUIDs")
    pull.add_argument("--modality", nargs="+", help="only series of these modalities")
    target = pull.add_mutually_exclusive_group(required=True)
    target.add_argument("--out", type=Path, help="folder (one sub-folder per series)")
    target.add_argument(
        "--workspace",
        type=Path,
        help="study workspace: files go to <workspace>/dicom/ and are imported",
    )

    push = actions.add_parser(
        "push",
        help="store DICOM files, or the SEG + SR of a workspace's results",
        description="Store DICOM files (STOW-RS). With --results WORKSPACE, first write the "
        "latest pipeline results of each visit (or of --visit) as a DICOM SEG (deposits, graft, "
        "reference muscle) and a TID 1500 SR referencing it, under WORKSPACE/exchange/.",
    )
    push.add_argument("files", nargs="*", type=Path, help="files or folders")
    push.add_argument("--results", type=Path, metavar="WORKSPACE", help="study workspace")
    push.add_argument("--visit", type=int, nargs="+", help="visit ids (default: all with results)")
    parser.set_defaults(func=run)


def _print_table(rows: list[dict], columns: list[str]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table()
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(_cell(row.get(c)) for c in columns))
    Console(width=None if sys.stdout.isatty() else 200).print(table)


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return ",".join(map(str, value))
    return str(value)


def _files(paths: list[Path]) -> list[Path]:
    found = []
    for path in paths:
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.is_file()))
        else:
            found.append(path)
    return found


def run(args: argparse.Namespace) -> int:
    """Run one PACS action; errors (HTTP, credentials) come out as one scrubbed line."""
    from islet_imaging.io import dicomweb

    client = dicomweb.connect(dicomweb.load_pacs_config(args.config))
    if args.pacs_action == "search":
        if args.study:
            rows = dicomweb.search_series(client, study_uid=args.study, modality=args.modality)
            columns = ["series_uid", "modality", "number", "description", "n_instances"]
        else:
            rows = dicomweb.search_studies(
                client,
                patient_id=args.patient_id,
                date_from=args.date_from,
                date_to=args.date_to,
                modality=args.modality,
            )
            columns = ["study_uid", "patient_id", "date", "modalities", "description", "n_series"]
        if args.json:
            json.dump(rows, sys.stdout, indent=2, default=str)
            sys.stdout.write("\n")
        else:
            _print_table(rows, columns)
        return 0
    if args.pacs_action == "pull":
        out = args.out if args.out else args.workspace / "dicom"
        if args.series:
            pulled = {
                uid: dicomweb.pull_series(client, study_uid=args.study, series_uid=uid, out_dir=out)
                for uid in args.series
            }
        else:
            pulled = dicomweb.pull_study(
                client, study_uid=args.study, out_dir=out, modalities=args.modality
            )
        n_files = sum(len(files) for files in pulled.values())
        print(f"pulled {len(pulled)} series ({n_files} files) into {out}")
        if args.workspace:
            from islet_imaging.study.workspace import Workspace

            with Workspace.open(args.workspace) as workspace:
                summary = workspace.import_paths([out / uid for uid in pulled])
            print(f"workspace {args.workspace}: {summary}")
        return 0
    files = _files(args.files)
    if args.results:
        files += _export_results(args.results, args.visit)
    stored = dicomweb.push(client, files)
    print(f"stored {stored} instance(s)")
    return 0


def _export_results(root: Path, visits: list[int] | None) -> list[Path]:
    """Write SEG + SR of the latest successful run of each visit; return their paths."""
    import secrets

    import numpy as np

    from islet_imaging.errors import WorkspaceError
    from islet_imaging.io.dicom import load_volumes
    from islet_imaging.io.seg import seg_segments, write_seg
    from islet_imaging.io.sr import object_tracking_id, write_sr
    from islet_imaging.segment.muscle import reference_muscle_roi
    from islet_imaging.study.workspace import Workspace

    written: list[Path] = []
    with Workspace.open(root) as workspace:
        table = workspace.measurements()
        visit_table = workspace.visits()
        visit_labels = dict(zip(visit_table["visit_id"], visit_table["label"], strict=True))
        for visit in visits or sorted(set(table["visit_id"])):
            run = workspace.current_run(visit)
            if run is None:
                raise WorkspaceError(
                    "the visit has no successful pipeline run",
                    tag="visit",
                    value=visit,
                    hint="run the pipeline first (islet-imaging run)",
                )
            mask = workspace.mask_version(run["mask_id"]) if run["mask_id"] else None
            mask = mask or workspace.latest_mask(visit)
            series = workspace.series(visit).set_index("series_uid")
            files = series.loc[run["artifacts"]["mr_series_uid"], "files"]
            labels = mask.read()
            mr = next((v for v in load_volumes(list(files)) if v.same_grid(labels)), None)
            if mr is None:
                raise WorkspaceError("the mask is not on its MR series grid", path=mask.path)
            images = [mr]
            pet_uid = run["artifacts"].get("pet_series_uid")
            if pet_uid in series.index:
                images += load_volumes(list(series.loc[pet_uid, "files"]))[:1]
            labels = labels.with_array(np.asarray(labels.array).astype(np.uint16)).as_mask()
            graft = mr.with_array(labels.array > 0).as_mask()
            folder = root / "exchange" / f"visit-{visit}"
            token = secrets.token_hex(4)
            seg = write_seg(
                labels,
                mr,
                folder / f"seg-{token}.dcm",
                include_graft=True,
                reference_mask=reference_muscle_roi(mr, graft=graft),
            )
            rows = table[table["visit_id"] == visit]
            tracked = {s.tracking_id for s in seg_segments(seg)}
            keep = [
                object_tracking_id(obj, label) in tracked
                for obj, label in zip(rows["object"], rows["label"], strict=True)
            ]
            if not all(keep):
                print(
                    f"visit {visit}: {len(keep) - sum(keep)} measurement(s) of objects "
                    "without a segment (binary mask) are not in the SR"
                )
            sr = write_sr(
                rows[keep],
                seg,
                images,
                folder / f"sr-{token}.dcm",
                time_point=visit_labels.get(visit),
            )
            print(f"visit {visit}: wrote {seg} and {sr}")
            written += [seg, sr]
    return written
