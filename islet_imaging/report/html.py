"""HTML reports of a study workspace: one page per patient, a cohort page, CSV/Parquet exports.

Layout of the output folder::

    OUT/index.html                   cohort: patients, change from baseline, failed visits
    OUT/patients/P001.html           per patient: visit table with % change and flags, trend
                                     plots (graft and per deposit), a thumbnail per visit,
                                     provenance appendix
    OUT/figures/*.png                images referenced by the pages
    OUT/data/measurements.{csv,parquet}, longitudinal.{csv,parquet}, runs.csv

Patients appear under their pseudonym only; names, IDs and birth dates are read from the DICOM
files and shown only with ``include_identifiers=True`` (never written to the exports). Every file
is written atomically (temporary name, then rename).
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path, PurePath
from typing import Any

import jinja2
import numpy as np
import pandas as pd

from islet_imaging import __version__
from islet_imaging._atomic import write_bytes_atomic, write_text_atomic
from islet_imaging.errors import IsletImagingError
from islet_imaging.report import figures
from islet_imaging.study.longitudinal import DEFAULT_LIMITS, ChangeLimit, longitudinal_table
from islet_imaging.study.workspace import Workspace

__all__ = ["KEY_METRICS", "ReportFiles", "write_report"]

#: Metrics of the whole graft shown in the visit tables, in order, with their column titles.
KEY_METRICS: dict[str, str] = {
    "volume": "Volume",
    "deposit_count": "Deposits",
    "suv_max": "SUVmax",
    "suv_mean": "SUVmean",
    "suv_peak": "SUVpeak",
    "suv_mean_pvc": "SUVmean (PVC)",
    "suv_mean_ratio_to_reference": "SUVmean / muscle",
    "suv_max_ratio_to_reference": "SUVmax / muscle",
    "total_uptake": "SUVmean × mL",
    "mr_ratio_to_reference": "MR / muscle",
    "mr_cnr": "MR CNR",
}
_MARKER = ".islet-imaging-report"  # marks a folder written by write_report
_VOLUME_METRICS = {"volume": "Graft volume", "deposit_count": "Deposits"}
_SUV_METRICS = {"suv_max": "SUVmax", "suv_mean": "SUVmean", "suv_peak": "SUVpeak"}

_TEMPLATES = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=jinja2.select_autoescape(["html"]),
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


@dataclasses.dataclass(frozen=True)
class ReportFiles:
    """Paths written by :func:`write_report`."""

    index: Path
    patients: dict[str, Path]
    data: dict[str, Path]


def _fmt(value: Any, unit: str | None = None) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)) or pd.isna(value):
        return "–"
    value = float(value)
    if unit in (None, "") and value.is_integer():
        return f"{int(value)}"
    text = f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return f"{text} {unit}" if unit else text


def _pct(value: Any) -> str:
    if value is None or pd.isna(value):
        return ""
    return f"{float(value):+.0f} %"


def _graft_rows(table: pd.DataFrame, visits: pd.DataFrame) -> tuple[list[str], list[dict]]:
    """Rows of the visit table of one patient: whole-graft key metrics with their changes."""
    graft = table[table["object"] == "graft"]
    metrics = [m for m in KEY_METRICS if (graft["metric"] == m).any()]
    headers = [KEY_METRICS[m] for m in metrics]
    rows = []
    for visit in visits.itertuples():
        cells = []
        for metric in metrics:
            hit = graft[(graft["visit_id"] == visit.visit_id) & (graft["metric"] == metric)]
            if hit.empty:
                cells.append({"value": "–", "change": "", "flag": ""})
                continue
            row = hit.iloc[0]
            cells.append(
                {
                    "value": _fmt(row["value"], None if row["unit"] in ("1", "") else row["unit"]),
                    "change": _pct(row["change_baseline_pct"]),
                    "change_previous": _pct(row["change_previous_pct"]),
                    "flag": row["flag_baseline"],
                }
            )
        rows.append(
            {
                "label": visit.label,
                "date": visit.visit_date or "?",
                "days": "" if pd.isna(visit.days) else int(visit.days),
                "cells": cells,
            }
        )
    return headers, rows


def _identifiers(workspace: Workspace, patient_id: int) -> dict[str, str]:
    """Name, PatientID and birth date read from the first DICOM file of the patient."""
    import pydicom

    series = workspace.series()
    visits = workspace.visits(patient_id)
    files = series[series["visit_id"].isin(visits["visit_id"])]["files"]
    for group in files:
        for path in group:
            try:
                ds = pydicom.dcmread(
                    path,
                    stop_before_pixels=True,
                    specific_tags=["PatientName", "PatientID", "PatientBirthDate"],
                )
            except (OSError, pydicom.errors.InvalidDicomError):
                continue
            return {
                "name": str(ds.get("PatientName", "")),
                "patient_id": str(ds.get("PatientID", "")),
                "birth_date": str(ds.get("PatientBirthDate", "")),
            }
    return {}


def _thumbnail(root: Path, run: dict[str, Any] | None, title: str) -> bytes | None:
    if not run:
        return None
    preview = (run.get("artifacts") or {}).get("preview")
    if not preview or not (root / preview).is_file():
        return None
    preview = root / preview
    with np.load(preview) as data:
        pet = data["pet"] if "pet" in data.files and data["pet"].size else None
        return figures.visit_thumbnail(
            data["mr"],
            data["mask"],
            pixel_spacing=tuple(float(s) for s in data["pixel_spacing"]),
            pet=pet,
            title=title,
        )


def _provenance(workspace: Workspace, visit_id: int, run: dict[str, Any] | None) -> dict:
    series = workspace.series(visit_id)
    entry: dict[str, Any] = {
        "series": [
            {
                "role": s.role,
                "modality": s.modality,
                "description": s.description or "",
                "uid": s.series_uid,
                "n": s.n_instances,
            }
            for s in series.itertuples()
        ],
        "run": None,
        "mask": None,
        "details": "",
    }
    if run:
        entry["run"] = {
            "id": run["id"],
            "finished": run["finished_at"],
            "software": run["software_version"],
            "params": json.dumps(run["params"], sort_keys=True),
        }
        if run["mask_id"] is not None:
            mask = workspace.mask_version(run["mask_id"])
            entry["mask"] = {
                "version": mask.version,
                "origin": mask.origin.value,
                "author": mask.author,
                "created": mask.created_at,
                "method": mask.method,
                "sha256": mask.sha256[:16],
            }
        details = {k: v for k, v in run["artifacts"].items() if k not in ("preview",)}
        entry["details"] = json.dumps(details, indent=1, sort_keys=True, default=str)
    return entry


def write_report(
    workspace: Workspace | str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    include_identifiers: bool = False,
    limits: Sequence[tuple[str, ChangeLimit]] = DEFAULT_LIMITS,
    overwrite: bool = False,
) -> ReportFiles:
    """Write the cohort and per-patient HTML reports and the data exports of a workspace.

    Parameters
    ----------
    workspace
        An open :class:`Workspace` or its folder.
    out_dir
        Output folder: new, empty (but for the workspace), or an earlier report (its files are
        replaced atomically).
    include_identifiers
        Show patient name, PatientID and birth date (read from the DICOM files) on the pages.
        Off by default; the CSV/Parquet exports never contain them.
    limits
        Repeatability limits for the change flags (see :mod:`islet_imaging.study.longitudinal`).
    overwrite
        Also write into a folder that holds other files (``index.html``, ``data/*.csv``... of
        the same names are then replaced).

    Returns
    -------
    ReportFiles
        Paths of the cohort page, the patient pages and the exports.

    Raises
    ------
    IsletImagingError
        If ``out_dir`` holds files but is not an earlier report, and ``overwrite`` is False.
    """
    if not isinstance(workspace, Workspace):
        with Workspace.open(workspace) as opened:
            return write_report(
                opened,
                out_dir,
                include_identifiers=include_identifiers,
                limits=limits,
                overwrite=overwrite,
            )
    out = Path(out_dir)
    check_report_folder(out, workspace.root, overwrite=overwrite)
    write_text_atomic(out / _MARKER, f"islet-imaging {__version__} report\n", overwrite=True)
    visits = workspace.visits()
    visits["days"] = visits["days_since_implantation"].where(
        visits["days_since_implantation"].notna(),
        (
            pd.to_datetime(visits["visit_date"])
            - pd.to_datetime(visits.groupby("patient")["visit_date"].transform("min"))
        ).dt.days,
    )
    measurements = workspace.measurements()
    table = longitudinal_table(measurements, visits, deposits=workspace.deposits(), limits=limits)
    scrub = _FolderScrubber(f for files in workspace.series()["files"] for f in files)
    runs = workspace.runs().assign(reason=lambda r: r["reason"].map(scrub))
    data = _write_exports(out, measurements, table, runs)

    def save_png(name: str, png: bytes | None) -> str | None:
        if png is None:
            return None
        write_bytes_atomic(out / "figures" / name, png, overwrite=True)
        return f"figures/{name}"

    patient_pages: dict[str, Path] = {}
    cohort_rows = []
    patients = workspace.patients()
    for patient in patients.itertuples():
        pv = visits[visits["patient"] == patient.pseudo_id]
        pt = table[table["patient"] == patient.pseudo_id]
        headers, rows = _graft_rows(pt, pv)
        stem = patient.pseudo_id
        xlabel = "days since implantation" if patient.implantation_date else "days since V0"
        trend = save_png(
            f"{stem}_graft.png",
            figures.trend_plot(
                pt, {**_VOLUME_METRICS, **_SUV_METRICS}, title="Whole graft", xlabel=xlabel
            ),
        )
        has_deposits = pt["object"].str.match(r"^(D\d+|deposit)").any()
        deposit_trend = None
        if has_deposits:
            deposit_rows = pt[pt["object"].str.match(r"^(D\d+|deposit)")]
            deposit_trend = save_png(
                f"{stem}_deposits.png",
                figures.trend_plot(
                    deposit_rows, {"volume": "Deposit volume", **_SUV_METRICS},
                    title="Per deposit", by_object=True, xlabel=xlabel,
                ),
            )  # fmt: skip
        thumbs, provenance = [], []
        for visit in pv.itertuples():
            run = workspace.current_run(visit.visit_id)
            days = "" if pd.isna(visit.days) else f", day {int(visit.days)}"
            image = save_png(
                f"{stem}_visit{visit.visit_id}.png",
                _thumbnail(workspace.root, run, f"{visit.label} {visit.visit_date or ''}{days}"),
            )
            thumbs.append({"label": visit.label, "src": f"../{image}" if image else None})
            provenance.append(
                {
                    "label": visit.label,
                    "date": visit.visit_date,
                    **_provenance(workspace, visit.visit_id, run),
                }
            )
        deposit_table = _deposit_rows(pt)
        identity = _identifiers(workspace, int(patient.id)) if include_identifiers else {}
        html = _TEMPLATES.get_template("patient.html").render(
            title=f"Patient {stem}",
            patient=stem,
            identity=identity,
            implantation=patient.implantation_date,
            headers=headers,
            rows=rows,
            trend=f"../{trend}",
            deposit_trend=f"../{deposit_trend}" if deposit_trend else None,
            deposits=deposit_table,
            thumbs=thumbs,
            provenance=provenance,
            runs=_run_rows(runs[runs["patient"] == stem]),
            limits=[(p, _limit_text(lim)) for p, lim in limits],
            version=__version__,
            generated=pd.Timestamp.now(tz="UTC").strftime("%Y-%m-%d %H:%M UTC"),
        )
        patient_pages[stem] = write_text_atomic(
            out / "patients" / f"{stem}.html", html, overwrite=True
        )
        cohort_rows.append(_cohort_row(stem, pv, pt, identity))

    cohort_figures = []
    for metric, title in (
        ("volume", "Graft volume"),
        ("suv_max", "SUVmax"),
        ("suv_peak", "SUVpeak"),
    ):
        if (table["metric"] == metric).any():
            cohort_figures.append(
                save_png(
                    f"cohort_{metric}.png",
                    figures.cohort_plot(
                        table,
                        metric=metric,
                        title=title,
                        xlabel="days since implantation"
                        if patients["implantation_date"].notna().all()
                        else "days (since implantation, or since V0 when unknown)",
                    ),
                )
            )
    status = workspace.status()
    problems = status.visits[status.visits["state"].isin(["failed", "interrupted", "new", "stale"])]
    problems = problems.assign(reason=problems["reason"].map(scrub))
    index = _TEMPLATES.get_template("cohort.html").render(
        title="Islet graft study",
        patients=cohort_rows,
        n_visits=len(visits),
        n_done=int((status.visits["state"] == "done").sum()),
        problems=problems.to_dict("records"),
        figures=cohort_figures,
        data={k: str(v.relative_to(out)) for k, v in data.items()},
        include_identifiers=include_identifiers,
        limits=[(p, _limit_text(lim)) for p, lim in limits],
        version=__version__,
        generated=pd.Timestamp.now(tz="UTC").strftime("%Y-%m-%d %H:%M UTC"),
    )
    index_path = write_text_atomic(out / "index.html", index, overwrite=True)
    return ReportFiles(index=index_path, patients=patient_pages, data=data)


def check_report_folder(out: str | os.PathLike, workspace_root: Path, *, overwrite: bool) -> None:
    """Refuse a report folder holding anything but an earlier report or the workspace.

    ``out`` may be new, empty, an earlier report (its marker file), or hold only the workspace
    the report is made from (``islet-imaging run --workspace OUT/ws --report OUT``).

    Raises
    ------
    IsletImagingError
        Naming ``out``, unless ``overwrite``.
    """
    out = Path(out)
    if overwrite or not out.is_dir() or (out / _MARKER).is_file():
        return
    workspace_root = Path(workspace_root).resolve()
    for entry in out.iterdir():
        if entry.resolve() != workspace_root and entry.resolve() not in workspace_root.parents:
            raise IsletImagingError(
                "the report folder holds other files, which the report could replace",
                path=out,
                tag="out_dir",
                hint="choose a new or empty folder, or pass overwrite=True (--overwrite)",
            )


def _limit_text(limit: ChangeLimit) -> str:
    text = f"≥ {limit.relative * 100:g} %"
    return text + (f" and ≥ {limit.absolute:g} (absolute)" if limit.absolute is not None else "")


def _deposit_rows(table: pd.DataFrame) -> list[dict]:
    rows = table[table["object"].str.match(r"^(D\d+|deposit)") & (table["metric"] == "volume")]
    return [
        {
            "object": r.object,
            "visit": r.visit,
            "days": "" if pd.isna(r.days) else int(r.days),
            "value": _fmt(r.value, r.unit),
            "change": _pct(r.change_baseline_pct),
            "flag": r.flag_baseline,
        }
        for r in rows.sort_values(["object", "days"]).itertuples()
    ]


# an absolute path's folders (POSIX, drive letter or UNC) up to its last separator; folder
# names may hold spaces, apostrophes and colons, but never end in a space or hold ": "
_FOLDERS = re.compile(
    r"""(?:(?<=^)|(?<=[\s'"(=]))(?:[A-Za-z]:|[/\\])?"""
    r"""(?:[/\\](?:[^/\\\n:]|:(?! ))*(?:[^/\\\s:]|:(?! )))+[/\\]"""
)


class _FolderScrubber:
    """Leaves the folders out of the paths in a text: folder names are often patient names,
    and reports leave the hospital's file system.

    Folders of the files the workspace catalogued are removed exactly (longest first); any
    other absolute path loses everything up to its last separator.

    >>> scrub = _FolderScrubber(["/data/O'Brien: Mary/PET/IM12.dcm"])
    >>> scrub("DicomSeriesError: /data/O'Brien: Mary/PET/IM12.dcm: [0018,1074] missing")
    'DicomSeriesError: IM12.dcm: [0018,1074] missing'
    >>> scrub("cannot read /x/Jane Doe/a.dcm and /y/John Roe/b.dcm: stop")
    'cannot read a.dcm and b.dcm: stop'
    """

    def __init__(self, files: Iterable[str]) -> None:
        folders = {str(parent) for f in files for parent in PurePath(f).parents}
        self._known = sorted((f for f in folders if len(PurePath(f).parts) > 1), key=len)[::-1]

    def __call__(self, text: object) -> object:
        if not isinstance(text, str):
            return text
        for folder in self._known:
            text = text.replace(folder + os.sep, "")
        return _FOLDERS.sub("", text)


def _run_rows(runs: pd.DataFrame) -> list[dict]:
    return [
        {
            "id": r.run_id,
            "visit_id": r.visit_id,
            "status": r.status,
            "started": r.started_at,
            "finished": r.finished_at or "",
            "reason": r.reason or "",
        }
        for r in runs.itertuples()
    ]


def _cohort_row(stem: str, visits: pd.DataFrame, table: pd.DataFrame, identity: dict) -> dict:
    volume = table[(table["object"] == "graft") & (table["metric"] == "volume")]
    volume = volume.sort_values("days")
    row = {
        "patient": stem,
        "identity": identity,
        "n_visits": len(visits),
        "last_days": "" if visits["days"].dropna().empty else int(visits["days"].max()),
        "baseline": _fmt(volume["value"].iloc[0], "mL") if len(volume) else "–",
        "latest": _fmt(volume["value"].iloc[-1], "mL") if len(volume) else "–",
        "change": _pct(volume["change_baseline_pct"].iloc[-1]) if len(volume) > 1 else "",
        "flag": volume["flag_baseline"].iloc[-1] if len(volume) > 1 else "",
        "href": f"patients/{stem}.html",
    }
    return row


def _write_exports(
    out: Path, measurements: pd.DataFrame, table: pd.DataFrame, runs: pd.DataFrame
) -> dict[str, Path]:
    """CSV + Parquet of the measurements and the longitudinal table, CSV of the run log."""
    written = {}
    for name, frame in (("measurements", measurements), ("longitudinal", table)):
        csv_path = out / "data" / f"{name}.csv"
        written[f"{name}_csv"] = write_text_atomic(
            csv_path, frame.to_csv(index=False), overwrite=True
        )
        buffer = io.BytesIO()
        frame.astype({c: "string" for c in frame.columns if frame[c].dtype == object}).to_parquet(
            buffer, index=False
        )
        written[f"{name}_parquet"] = write_bytes_atomic(
            out / "data" / f"{name}.parquet", buffer.getvalue(), overwrite=True
        )
    written["runs_csv"] = write_text_atomic(
        out / "data" / "runs.csv", runs.to_csv(index=False), overwrite=True
    )
    return written
