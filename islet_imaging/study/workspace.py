"""A longitudinal study folder: DICOM catalogue, versioned masks, measurements and run log.

A workspace is a folder holding ``catalogue.sqlite`` (SQLite in WAL mode, foreign keys on,
every change in one ``BEGIN IMMEDIATE`` transaction, a busy timeout so several processes can
write at once) and the files it points to::

    DIR/
      catalogue.sqlite         patients, visits, series, masks, runs, measurements, deposits
      masks/<patient>/visit-<id>/<name>/v0003-<token>.nii.gz    versioned masks (never replaced)
      runs/<run-token>/        artefacts of one pipeline run (transforms, preview)

Patients are pseudonymous: the catalogue stores a salted hash of the DICOM PatientID and a
sequential pseudonym (``P001``); it never stores names or birth dates. A *visit* is every study
of one patient acquired on one date (the StudyInstanceUID when the date is unknown). Dates are
ISO strings; days since implantation are computed when asked, so the implantation date can be
set or corrected later.

A mask correction is a new version (author, time, method, parent version); older versions stay
readable. Pipeline results of a visit (measurements, deposit positions, the automatic mask) are
committed together with the run's status in one transaction, so a killed batch leaves either
the whole result of a visit or nothing.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import datetime as dt
import enum
import hashlib
import json
import os
import secrets
import socket
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from islet_imaging import __version__
from islet_imaging._atomic import atomic_path
from islet_imaging.errors import WorkspaceError
from islet_imaging.volume import Volume

__all__ = [
    "SCHEMA_VERSION",
    "ImportSummary",
    "MaskOrigin",
    "MaskVersion",
    "Role",
    "RunStatus",
    "Workspace",
    "classify_series",
]

SCHEMA_VERSION = 1
CATALOGUE = "catalogue.sqlite"
_BUSY_TIMEOUT_S = 60.0

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE patients (
    id INTEGER PRIMARY KEY,
    pseudo_id TEXT NOT NULL UNIQUE,
    key_hash TEXT NOT NULL UNIQUE,
    implantation_date TEXT
);
CREATE TABLE visits (
    id INTEGER PRIMARY KEY,
    patient_id INTEGER NOT NULL REFERENCES patients(id),
    visit_key TEXT NOT NULL,
    visit_date TEXT,
    UNIQUE (patient_id, visit_key)
);
CREATE TABLE series (
    id INTEGER PRIMARY KEY,
    series_uid TEXT NOT NULL UNIQUE,
    visit_id INTEGER NOT NULL REFERENCES visits(id),
    study_uid TEXT NOT NULL,
    modality TEXT,
    role TEXT NOT NULL,
    description TEXT,
    series_number INTEGER,
    series_date TEXT,
    series_time TEXT,
    n_instances INTEGER NOT NULL,
    orientation TEXT,
    frame_of_reference_uid TEXT,
    files TEXT NOT NULL
);
CREATE TABLE masks (
    id INTEGER PRIMARY KEY,
    visit_id INTEGER NOT NULL REFERENCES visits(id),
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    path TEXT NOT NULL UNIQUE,
    origin TEXT NOT NULL CHECK (origin IN ('auto', 'human')),
    author TEXT NOT NULL,
    created_at TEXT NOT NULL,
    method TEXT NOT NULL,
    parent_id INTEGER REFERENCES masks(id),
    reference_series_uid TEXT,
    sha256 TEXT NOT NULL,
    note TEXT,
    UNIQUE (visit_id, name, version)
);
CREATE TABLE runs (
    id INTEGER PRIMARY KEY,
    visit_id INTEGER NOT NULL REFERENCES visits(id),
    status TEXT NOT NULL CHECK (status IN ('running', 'done', 'failed', 'interrupted')),
    started_at TEXT NOT NULL,
    finished_at TEXT,
    reason TEXT,
    mask_id INTEGER REFERENCES masks(id),
    software_version TEXT NOT NULL,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    params TEXT NOT NULL,
    artifacts TEXT
);
CREATE INDEX runs_visit ON runs (visit_id, status);
CREATE TABLE measurements (
    run_id INTEGER NOT NULL REFERENCES runs(id),
    seq INTEGER NOT NULL,
    visit_id INTEGER NOT NULL REFERENCES visits(id),
    object TEXT NOT NULL,
    label INTEGER,
    metric TEXT NOT NULL,
    value REAL,
    unit TEXT,
    method TEXT,
    provenance TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)
);
CREATE TABLE deposits (
    run_id INTEGER NOT NULL REFERENCES runs(id),
    label INTEGER NOT NULL,
    volume_ml REAL NOT NULL,
    x_mm REAL NOT NULL,
    y_mm REAL NOT NULL,
    z_mm REAL NOT NULL,
    PRIMARY KEY (run_id, label)
);
"""


class Role(enum.StrEnum):
    """What a series is for in the pipeline."""

    MR_T2 = "mr_t2"
    MR_T1 = "mr_t1"
    MR = "mr"
    PET = "pet"
    OTHER = "other"


class RunStatus(enum.StrEnum):
    """State of one pipeline run of one visit."""

    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    INTERRUPTED = "interrupted"


class MaskOrigin(enum.StrEnum):
    """Who made a mask version: the automatic pipeline or a person."""

    AUTO = "auto"
    HUMAN = "human"


@dataclasses.dataclass(frozen=True)
class MaskVersion:
    """One stored version of a mask (file under the workspace + catalogue record)."""

    id: int
    visit_id: int
    name: str
    version: int
    path: Path
    origin: MaskOrigin
    author: str
    created_at: str
    method: str
    parent_id: int | None
    reference_series_uid: str | None
    sha256: str
    note: str | None

    def read(self) -> Volume:
        """Read the mask file as a mask :class:`Volume` (integer labels or 0/1)."""
        from islet_imaging.io.files import read_mask

        return read_mask(self.path)


@dataclasses.dataclass(frozen=True)
class ImportSummary:
    """What :meth:`Workspace.import_paths` added (re-importing the same files adds nothing)."""

    patients_added: int = 0
    visits_added: int = 0
    series_added: int = 0
    series_updated: int = 0
    series_unchanged: int = 0
    problems: tuple[str, ...] = ()

    def __str__(self) -> str:
        return (
            f"{self.patients_added} patient(s), {self.visits_added} visit(s), "
            f"{self.series_added} series added; {self.series_updated} series updated, "
            f"{self.series_unchanged} unchanged; "
            f"{len(self.problems)} non-DICOM or unreadable file(s) skipped"
        )


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


def _parse_date(value: Any, *, what: str) -> str:
    """Return an ISO date string from a date, datetime, 'YYYY-MM-DD' or DICOM 'YYYYMMDD'."""
    if isinstance(value, dt.datetime):
        return value.date().isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    text = str(value).strip()
    for fmt in ("%Y-%m-%d", "%Y%m%d"):
        try:
            return dt.datetime.strptime(text, fmt).date().isoformat()
        except ValueError:
            continue
    raise WorkspaceError(
        "not a date", tag=what, value=value, hint="use YYYY-MM-DD (e.g. 2024-03-01)"
    )


def classify_series(modality: str | None, description: str | None, image_types=()) -> Role:
    """Guess the pipeline role of a series from its modality, description and ImageType.

    >>> classify_series("PT", "PET AC")
    <Role.PET: 'pet'>
    >>> classify_series("MR", "t2_tse_tra forearm")
    <Role.MR_T2: 'mr_t2'>
    >>> classify_series("MR", "scout", ("ORIGINAL", "PRIMARY", "LOCALIZER"))
    <Role.OTHER: 'other'>
    """
    modality = (modality or "").upper()
    text = (description or "").lower().replace(" ", "").replace("-", "").replace("_", "")
    if any("LOCALIZER" in str(t).upper() for t in image_types or ()) or "localizer" in text:
        return Role.OTHER
    if modality == "PT":
        return Role.PET
    if modality == "MR":
        if "t2" in text:
            return Role.MR_T2
        if "t1" in text:
            return Role.MR_T1
        return Role.MR
    return Role.OTHER


class Workspace:
    """A study folder with its SQLite catalogue. Create with :meth:`init`, reopen with :meth:`open`.

    One ``Workspace`` object holds one SQLite connection (usable from several threads of one
    process); several processes may open the same folder and write at once.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     ws = Workspace.init(tmp)
    ...     print(ws.status().n_patients)
    ...     ws.close()
    0
    """

    def __init__(self, root: Path, connection: sqlite3.Connection) -> None:
        self.root = root
        self._db = connection
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ opening
    @staticmethod
    def _connect(path: Path) -> sqlite3.Connection:
        db = sqlite3.connect(
            path, timeout=_BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
        )
        db.row_factory = sqlite3.Row
        db.execute(f"PRAGMA busy_timeout = {int(_BUSY_TIMEOUT_S * 1000)}")
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = FULL")
        db.execute("PRAGMA foreign_keys = ON")
        return db

    @classmethod
    def init(cls, root: str | os.PathLike, *, exist_ok: bool = False) -> Workspace:
        """Create a workspace in folder ``root`` (created if needed) and open it.

        Raises
        ------
        WorkspaceError
            If ``root`` already holds a catalogue and ``exist_ok`` is False.
        """
        root = Path(root)
        catalogue = root / CATALOGUE
        if catalogue.exists():
            if exist_ok:
                return cls.open(root)
            raise WorkspaceError(
                "a workspace already exists here",
                path=catalogue,
                hint="open it with Workspace.open(), or choose an empty folder",
            )
        root.mkdir(parents=True, exist_ok=True)
        db = cls._connect(catalogue)
        try:
            db.execute("BEGIN IMMEDIATE")
            if not db.execute("SELECT 1 FROM sqlite_master WHERE name='meta'").fetchone():
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.executemany(
                    "INSERT INTO meta (key, value) VALUES (?, ?)",
                    [
                        ("schema_version", str(SCHEMA_VERSION)),
                        ("created_at", _now()),
                        ("created_by", f"islet-imaging {__version__}"),
                        ("salt", secrets.token_hex(16)),
                    ],
                )
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            db.close()
            raise
        db.close()
        return cls.open(root)

    @classmethod
    def open(cls, root: str | os.PathLike) -> Workspace:
        """Open an existing workspace.

        Raises
        ------
        WorkspaceError
            If ``root`` holds no catalogue, or one written by a newer schema version.
        """
        root = Path(root)
        catalogue = root / CATALOGUE
        if not catalogue.is_file():
            raise WorkspaceError(
                "no study workspace here",
                path=root,
                hint="create one with `islet-imaging study init DIR`",
            )
        db = cls._connect(catalogue)
        row = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        version = int(row["value"]) if row else None
        if version != SCHEMA_VERSION:
            db.close()
            raise WorkspaceError(
                "unsupported catalogue schema version",
                path=catalogue,
                tag="schema_version",
                value=version,
                hint=f"this islet-imaging reads version {SCHEMA_VERSION}; upgrade islet-imaging",
            )
        return cls(root.resolve(), db)

    def close(self) -> None:
        """Close the catalogue connection."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Workspace({str(self.root)!r})"

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (``BEGIN IMMEDIATE``: waits for other writers, then locks)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _query(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, tuple(params)).fetchall()

    def _frame(self, sql: str, params: Iterable[Any] = ()) -> pd.DataFrame:
        with self._lock:
            cursor = self._db.execute(sql, tuple(params))
            columns = [c[0] for c in cursor.description]
            return pd.DataFrame([tuple(r) for r in cursor.fetchall()], columns=columns)

    def _meta(self, key: str) -> str:
        return self._query("SELECT value FROM meta WHERE key=?", (key,))[0]["value"]

    # ------------------------------------------------------------------ patients
    def _key_hash(self, patient_id: str) -> str:
        return hashlib.sha256(f"{self._meta('salt')}:{patient_id}".encode()).hexdigest()

    def pseudonym(self, patient_id: str) -> str | None:
        """The pseudonym (e.g. ``"P001"``) of a DICOM PatientID, or None if not imported."""
        rows = self._query(
            "SELECT pseudo_id FROM patients WHERE key_hash=?", (self._key_hash(patient_id),)
        )
        return rows[0]["pseudo_id"] if rows else None

    def _patient_row(self, patient: str | int) -> sqlite3.Row:
        if isinstance(patient, int):
            rows = self._query("SELECT * FROM patients WHERE id=?", (patient,))
        else:
            rows = self._query(
                "SELECT * FROM patients WHERE pseudo_id=? OR key_hash=?",
                (patient, self._key_hash(patient)),
            )
        if not rows:
            raise WorkspaceError(
                "unknown patient",
                path=self.root,
                value=patient if isinstance(patient, int) else "(given identifier)",
                hint="give the pseudonym shown by `islet-imaging study status`",
            )
        return rows[0]

    def set_implantation_date(self, patient: str | int, date: Any) -> None:
        """Set the islet implantation date of a patient (pseudonym, DICOM PatientID or id)."""
        iso = _parse_date(date, what="implantation_date")
        row = self._patient_row(patient)
        with self._transaction() as db:
            db.execute("UPDATE patients SET implantation_date=? WHERE id=?", (iso, row["id"]))

    def patients(self) -> pd.DataFrame:
        """Patients: ``id, pseudo_id, implantation_date, n_visits`` (no identifiers)."""
        return self._frame(
            "SELECT p.id, p.pseudo_id, p.implantation_date, COUNT(v.id) AS n_visits "
            "FROM patients p LEFT JOIN visits v ON v.patient_id = p.id "
            "GROUP BY p.id ORDER BY p.pseudo_id"
        )

    # ------------------------------------------------------------------ visits and series
    _VISITS_SQL = """
        SELECT v.id AS visit_id, p.pseudo_id AS patient, p.id AS patient_id, v.visit_date,
               p.implantation_date,
               CAST(julianday(v.visit_date) - julianday(p.implantation_date) AS INTEGER)
                   AS days_since_implantation,
               (SELECT COUNT(*) FROM visits w WHERE w.patient_id = v.patient_id
                  AND (COALESCE(w.visit_date, '9999') < COALESCE(v.visit_date, '9999')
                       OR (COALESCE(w.visit_date, '9999') = COALESCE(v.visit_date, '9999')
                           AND w.id < v.id))) AS visit_index
        FROM visits v JOIN patients p ON p.id = v.patient_id
    """

    def visits(self, patient: str | int | None = None) -> pd.DataFrame:
        """Visits in date order: ``visit_id, patient, visit_date, days_since_implantation,
        visit_index`` (0 = baseline, the patient's first visit), ``label`` (``V0``, ``V1``…)."""
        sql = self._VISITS_SQL
        params: tuple[Any, ...] = ()
        if patient is not None:
            sql += " WHERE p.id = ?"
            params = (self._patient_row(patient)["id"],)
        frame = self._frame(sql + " ORDER BY p.pseudo_id, visit_index", params)
        frame["label"] = "V" + frame["visit_index"].astype(str)
        return frame

    def visit(self, visit: int | str) -> dict[str, Any]:
        """One visit as a dict (see :meth:`visits`), by id or ``"P001/V2"``."""
        visit_id = self._visit_id(visit)
        frame = self.visits()
        row = frame[frame["visit_id"] == visit_id]
        return row.iloc[0].to_dict()

    def _visit_id(self, visit: int | str) -> int:
        if isinstance(visit, (int, np.integer)):
            if self._query("SELECT 1 FROM visits WHERE id=?", (int(visit),)):
                return int(visit)
        elif isinstance(visit, str) and "/" in visit:
            patient, label = visit.split("/", 1)
            frame = self.visits()
            hit = frame[(frame["patient"] == patient) & (frame["label"] == label)]
            if len(hit):
                return int(hit["visit_id"].iloc[0])
        raise WorkspaceError(
            "unknown visit",
            path=self.root,
            value=visit,
            hint="give a visit id or 'PSEUDONYM/Vn' as shown by `islet-imaging study status`",
        )

    def baseline_visit(self, visit: int | str) -> int:
        """Id of the baseline (first) visit of the patient of ``visit``."""
        info = self.visit(visit)
        frame = self.visits(int(info["patient_id"]))
        return int(frame["visit_id"].iloc[0])

    def series(self, visit: int | str | None = None) -> pd.DataFrame:
        """Series of one visit (or all): uid, modality, role, description, files (list)…"""
        sql = (
            "SELECT s.id, s.series_uid, s.visit_id, s.study_uid, s.modality, s.role, "
            "s.description, s.series_number, s.series_date, s.series_time, s.n_instances, "
            "s.orientation, s.frame_of_reference_uid, s.files FROM series s"
        )
        params: tuple[Any, ...] = ()
        if visit is not None:
            sql += " WHERE s.visit_id = ?"
            params = (self._visit_id(visit),)
        frame = self._frame(sql + " ORDER BY s.visit_id, s.series_number, s.series_uid", params)
        frame["files"] = [tuple(json.loads(f)) for f in frame["files"]]
        return frame

    def set_series_role(self, series_uid: str, role: Role | str) -> None:
        """Override the role guessed at import (e.g. mark a series as the T2 reference)."""
        role = Role(role)
        with self._transaction() as db:
            cursor = db.execute(
                "UPDATE series SET role=? WHERE series_uid=?", (role.value, series_uid)
            )
            if cursor.rowcount == 0:
                raise WorkspaceError("unknown series", tag="SeriesInstanceUID", value=series_uid)

    # ------------------------------------------------------------------ import
    def import_paths(
        self,
        paths: Iterable[str | os.PathLike] | str | os.PathLike,
        *,
        implantation: Any = None,
    ) -> ImportSummary:
        """Catalogue the DICOM series found under ``paths`` (files are referenced, not copied).

        Parameters
        ----------
        paths
            Folders, DICOMDIRs or zip files (read with :func:`islet_imaging.io.discover.scan`).
        implantation
            Implantation dates: one date for every patient imported here (``date`` or
            ``"YYYY-MM-DD"``), a mapping ``PatientID → date``, or the path of a CSV file with
            columns ``patient_id`` (DICOM PatientID or pseudonym) and ``implantation_date``.

        Returns
        -------
        ImportSummary
            Counts of what was added; importing the same files again adds nothing.
        """
        from islet_imaging.io.discover import scan

        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        entries = []
        problems: list[str] = []
        for path in paths:
            index = scan(Path(path).resolve())
            entries.extend(index.series)
            problems.extend(f"{p.path}: {p.reason}" for p in index.problems)
        dates = _implantation_map(implantation)
        counts = dict.fromkeys(
            (
                "patients_added",
                "visits_added",
                "series_added",
                "series_updated",
                "series_unchanged",
            ),
            0,
        )
        with self._transaction() as db:
            patient_ids: dict[str, int] = {}
            for entry in sorted(entries, key=lambda e: (str(e.patient_id), str(e.date))):
                pid = str(entry.patient_id or "")
                if pid not in patient_ids:
                    patient_ids[pid], added = self._ensure_patient(db, pid)
                    counts["patients_added"] += added
                visit_id, added = self._ensure_visit(db, patient_ids[pid], entry)
                counts["visits_added"] += added
                counts[self._upsert_series(db, visit_id, entry)] += 1
            for key, (date, where) in dates.items():
                hit = db.execute(
                    "SELECT id FROM patients WHERE key_hash=? OR pseudo_id=?",
                    (self._key_hash(key), key),
                ).fetchone()
                if hit is None and key != "*":
                    # the identifier itself is not repeated: it may be a DICOM PatientID
                    raise WorkspaceError(
                        f"implantation date given for a patient that is not in the study ({where})",
                        tag="patient_id",
                        hint="check the patient_id column of the implantation CSV",
                    )
                targets = patient_ids.values() if key == "*" else [hit["id"]]
                for target in targets:
                    db.execute("UPDATE patients SET implantation_date=? WHERE id=?", (date, target))
        return ImportSummary(**counts, problems=tuple(problems))

    def _ensure_patient(self, db: sqlite3.Connection, patient_id: str) -> tuple[int, int]:
        key = self._key_hash(patient_id)
        row = db.execute("SELECT id FROM patients WHERE key_hash=?", (key,)).fetchone()
        if row:
            return row["id"], 0
        number = db.execute("SELECT COUNT(*) FROM patients").fetchone()[0] + 1
        while db.execute(
            "SELECT 1 FROM patients WHERE pseudo_id=?", (f"P{number:03d}",)
        ).fetchone():
            number += 1
        cursor = db.execute(
            "INSERT INTO patients (pseudo_id, key_hash) VALUES (?, ?)", (f"P{number:03d}", key)
        )
        return cursor.lastrowid, 1

    @staticmethod
    def _ensure_visit(db: sqlite3.Connection, patient: int, entry: Any) -> tuple[int, int]:
        date = None
        if getattr(entry, "date", None):
            with contextlib.suppress(WorkspaceError):
                date = _parse_date(entry.date, what="StudyDate")
        key = date or f"study:{entry.study_uid}"
        row = db.execute(
            "SELECT id FROM visits WHERE patient_id=? AND visit_key=?", (patient, key)
        ).fetchone()
        if row:
            return row["id"], 0
        cursor = db.execute(
            "INSERT INTO visits (patient_id, visit_key, visit_date) VALUES (?, ?, ?)",
            (patient, key, date),
        )
        return cursor.lastrowid, 1

    @staticmethod
    def _upsert_series(db: sqlite3.Connection, visit_id: int, entry: Any) -> str:
        files = sorted(os.path.abspath(f) for f in entry.files)
        row = db.execute(
            "SELECT id, files FROM series WHERE series_uid=?", (entry.series_uid,)
        ).fetchone()
        if row:
            known = json.loads(row["files"])
            merged = sorted(set(known) | set(files))
            if merged == known:
                return "series_unchanged"
            db.execute(
                "UPDATE series SET files=?, n_instances=? WHERE id=?",
                (json.dumps(merged), len(merged), row["id"]),
            )
            return "series_updated"
        role = classify_series(entry.modality, entry.description, entry.image_types)
        db.execute(
            "INSERT INTO series (series_uid, visit_id, study_uid, modality, role, description,"
            " series_number, series_date, series_time, n_instances, orientation,"
            " frame_of_reference_uid, files) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                entry.series_uid,
                visit_id,
                entry.study_uid,
                entry.modality,
                role.value,
                entry.description,
                entry.series_number,
                entry.date,
                entry.time,
                len(files),
                entry.orientation,
                entry.frame_of_reference_uid,
                json.dumps(files),
            ),
        )
        return "series_added"

    # ------------------------------------------------------------------ masks
    def _mask_dir(self, visit_id: int, name: str) -> Path:
        patient = self._query(
            "SELECT p.pseudo_id FROM visits v JOIN patients p ON p.id=v.patient_id WHERE v.id=?",
            (visit_id,),
        )[0]["pseudo_id"]
        return self.root / "masks" / patient / f"visit-{visit_id:04d}" / name

    def new_mask_path(self, visit: int | str, *, name: str = "graft", prefix: str = "auto") -> Path:
        """A fresh, never-used file path for a mask of ``visit`` (used by pipeline workers)."""
        visit_id = self._visit_id(visit)
        return self._mask_dir(visit_id, name) / f"{prefix}-{secrets.token_hex(6)}.nii.gz"

    def save_mask(
        self,
        visit: int | str,
        mask: Volume,
        *,
        author: str,
        method: str = "manual",
        name: str = "graft",
        parent: MaskVersion | int | None = None,
        note: str | None = None,
        origin: MaskOrigin | str = MaskOrigin.HUMAN,
    ) -> MaskVersion:
        """Store ``mask`` as a new version of mask ``name`` of ``visit``; never overwrites.

        Parameters
        ----------
        visit
            Visit id or ``"P001/V2"``.
        mask
            Boolean or integer-label :class:`Volume` (e.g. on the visit's MR grid).
        author
            Who made this version (annotator name or ``"islet-imaging"``).
        method
            How it was made (``"manual"``, ``"mr_threshold k=3 + brush"``…).
        name
            Mask name within the visit (``"graft"`` is what the pipeline uses).
        parent
            The version this one corrects, if any.
        note
            Free text kept with the version.
        origin
            ``"human"`` (default) or ``"auto"``; the pipeline prefers the latest human version.

        Returns
        -------
        MaskVersion
            The stored version (``version`` = previous latest + 1).
        """
        if not isinstance(mask, Volume) or not (mask.is_mask or mask.array.dtype == bool):
            raise WorkspaceError(
                "save_mask needs a mask Volume (bool array, or integer labels with kind='mask')",
                tag="mask",
                value=type(mask).__name__,
                hint="use volume.as_mask() on an integer label array",
            )
        if not str(author).strip():
            raise WorkspaceError("a mask version needs an author", tag="author", value=author)
        from islet_imaging.io.files import write_volume

        visit_id = self._visit_id(visit)
        path = self.new_mask_path(visit_id, name=name, prefix="v")
        labels = mask.array.astype(np.uint8 if mask.array.max(initial=0) < 256 else np.uint16)
        with atomic_path(path) as tmp:
            write_volume(mask.with_array(labels), tmp, overwrite=True)
        parent_id = parent.id if isinstance(parent, MaskVersion) else parent
        with self._transaction() as db:
            mask_id = self._insert_mask(
                db,
                visit_id=visit_id,
                name=name,
                path=path,
                origin=MaskOrigin(origin),
                author=author,
                method=method,
                parent_id=parent_id,
                reference_series_uid=mask.meta.get("series_uid"),
                note=note,
            )
        return self.mask_version(mask_id)

    def _insert_mask(self, db: sqlite3.Connection, *, visit_id: int, path: Path, **fields) -> int:
        version = db.execute(
            "SELECT COALESCE(MAX(version), 0) + 1 FROM masks WHERE visit_id=? AND name=?",
            (visit_id, fields["name"]),
        ).fetchone()[0]
        cursor = db.execute(
            "INSERT INTO masks (visit_id, name, version, path, origin, author, created_at, method,"
            " parent_id, reference_series_uid, sha256, note) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                visit_id,
                fields["name"],
                version,
                str(Path(path).resolve().relative_to(self.root)),
                MaskOrigin(fields["origin"]).value,
                fields["author"],
                _now(),
                fields["method"],
                fields.get("parent_id"),
                fields.get("reference_series_uid"),
                hashlib.sha256(Path(path).read_bytes()).hexdigest(),
                fields.get("note"),
            ),
        )
        return cursor.lastrowid

    def _mask_from_row(self, row: sqlite3.Row) -> MaskVersion:
        return MaskVersion(
            id=row["id"],
            visit_id=row["visit_id"],
            name=row["name"],
            version=row["version"],
            path=self.root / row["path"],
            origin=MaskOrigin(row["origin"]),
            author=row["author"],
            created_at=row["created_at"],
            method=row["method"],
            parent_id=row["parent_id"],
            reference_series_uid=row["reference_series_uid"],
            sha256=row["sha256"],
            note=row["note"],
        )

    def mask_version(self, mask_id: int) -> MaskVersion:
        """The stored mask version with catalogue id ``mask_id``."""
        rows = self._query("SELECT * FROM masks WHERE id=?", (mask_id,))
        if not rows:
            raise WorkspaceError("unknown mask version", tag="mask_id", value=mask_id)
        return self._mask_from_row(rows[0])

    def mask_versions(self, visit: int | str, name: str = "graft") -> list[MaskVersion]:
        """Every version of mask ``name`` of ``visit``, oldest first."""
        rows = self._query(
            "SELECT * FROM masks WHERE visit_id=? AND name=? ORDER BY version",
            (self._visit_id(visit), name),
        )
        return [self._mask_from_row(r) for r in rows]

    def latest_mask(
        self, visit: int | str, name: str = "graft", *, origin: MaskOrigin | str | None = None
    ) -> MaskVersion | None:
        """The newest version of mask ``name`` (optionally only ``origin`` ones), or None."""
        versions = self.mask_versions(visit, name)
        if origin is not None:
            versions = [v for v in versions if v.origin == MaskOrigin(origin)]
        return versions[-1] if versions else None

    # ------------------------------------------------------------------ runs
    def start_run(self, visit: int | str, *, params: Mapping[str, Any] | None = None) -> int:
        """Record that a pipeline run of ``visit`` starts; returns the run id."""
        visit_id = self._visit_id(visit)
        with self._transaction() as db:
            cursor = db.execute(
                "INSERT INTO runs (visit_id, status, started_at, software_version, host, pid,"
                " params) VALUES (?, 'running', ?, ?, ?, ?, ?)",
                (
                    visit_id,
                    _now(),
                    __version__,
                    socket.gethostname(),
                    os.getpid(),
                    json.dumps(dict(params or {}), sort_keys=True, default=str),
                ),
            )
        return cursor.lastrowid

    def fail_run(self, run_id: int, reason: str) -> None:
        """Mark a run as failed with a one-line reason."""
        with self._transaction() as db:
            db.execute(
                "UPDATE runs SET status='failed', finished_at=?, reason=? WHERE id=?",
                (_now(), str(reason).strip() or "unknown error", run_id),
            )

    def finish_run(
        self,
        run_id: int,
        *,
        measurements: pd.DataFrame,
        deposits: pd.DataFrame | None = None,
        mask_id: int | None = None,
        auto_mask: Mapping[str, Any] | None = None,
        artifacts: Mapping[str, Any] | None = None,
    ) -> None:
        """Commit the results of a run in one transaction and mark it done.

        Parameters
        ----------
        run_id
            From :meth:`start_run`; must still be ``running``.
        measurements
            Tidy table with at least ``object, metric, value`` (optional ``label, unit,
            method``); every other column is kept as provenance JSON.
        deposits
            One row per deposit: ``label, volume_ml, x_mm, y_mm, z_mm`` (centroid in the
            baseline visit's LPS frame).
        mask_id
            The stored mask version measured, if it came from the catalogue.
        auto_mask
            Or a freshly written automatic mask to register as a new version: ``path`` (under
            the workspace), ``method``, ``reference_series_uid``.
        artifacts
            JSON-serialisable description of the run's files (transforms, preview…).
        """
        rows = _measurement_rows(measurements)
        with self._transaction() as db:
            run = db.execute("SELECT visit_id, status FROM runs WHERE id=?", (run_id,)).fetchone()
            if run is None or run["status"] != RunStatus.RUNNING.value:
                raise WorkspaceError(
                    "run is not running",
                    tag="run_id",
                    value=(run_id, None if run is None else run["status"]),
                )
            visit_id = run["visit_id"]
            if auto_mask is not None:
                mask_id = self._insert_mask(
                    db,
                    visit_id=visit_id,
                    name="graft",
                    path=Path(auto_mask["path"]),
                    origin=MaskOrigin.AUTO,
                    author=f"islet-imaging {__version__}",
                    method=auto_mask["method"],
                    reference_series_uid=auto_mask.get("reference_series_uid"),
                )
            db.executemany(
                "INSERT INTO measurements (run_id, seq, visit_id, object, label, metric, value,"
                " unit, method, provenance) VALUES (?,?,?,?,?,?,?,?,?,?)",
                [(run_id, seq, visit_id, *row) for seq, row in enumerate(rows)],
            )
            if deposits is not None and len(deposits):
                db.executemany(
                    "INSERT INTO deposits (run_id, label, volume_ml, x_mm, y_mm, z_mm)"
                    " VALUES (?,?,?,?,?,?)",
                    [
                        (
                            run_id,
                            int(r.label),
                            float(r.volume_ml),
                            *map(float, (r.x_mm, r.y_mm, r.z_mm)),
                        )
                        for r in deposits.itertuples()
                    ],
                )
            db.execute(
                "UPDATE runs SET status='done', finished_at=?, mask_id=?, artifacts=? WHERE id=?",
                (_now(), mask_id, json.dumps(dict(artifacts or {}), default=str), run_id),
            )

    def mark_interrupted(self) -> int:
        """Mark ``running`` runs whose process is gone as ``interrupted``; returns how many.

        Runs started on another host are left alone.
        """
        host = socket.gethostname()
        stale = [
            r["id"]
            for r in self._query("SELECT id, host, pid FROM runs WHERE status='running'")
            if r["host"] == host and not _pid_alive(r["pid"])
        ]
        if stale:
            with self._transaction() as db:
                db.executemany(
                    "UPDATE runs SET status='interrupted', finished_at=?,"
                    " reason='the process running it stopped' WHERE id=? AND status='running'",
                    [(_now(), run_id) for run_id in stale],
                )
        return len(stale)

    def runs(self) -> pd.DataFrame:
        """The run log: one row per pipeline run (``status``, times, ``reason``…)."""
        frame = self._frame(
            "SELECT r.id AS run_id, r.visit_id, p.pseudo_id AS patient, r.status, r.started_at,"
            " r.finished_at, r.reason, r.mask_id, r.software_version, r.params, r.artifacts"
            " FROM runs r JOIN visits v ON v.id=r.visit_id JOIN patients p ON p.id=v.patient_id"
            " ORDER BY r.id"
        )
        return frame

    def _current_runs_sql(self) -> str:
        return "SELECT MAX(id) FROM runs WHERE status='done' GROUP BY visit_id"

    def current_run(self, visit: int | str) -> dict[str, Any] | None:
        """The latest successful run of ``visit`` (with ``artifacts`` decoded), or None."""
        rows = self._query(
            "SELECT * FROM runs WHERE visit_id=? AND status='done' ORDER BY id DESC LIMIT 1",
            (self._visit_id(visit),),
        )
        if not rows:
            return None
        run = dict(rows[0])
        run["artifacts"] = json.loads(run["artifacts"] or "{}")
        run["params"] = json.loads(run["params"] or "{}")
        return run

    def pending_visits(self, *, retry_failed: bool = True) -> list[int]:
        """Visits that need a pipeline run, in patient/visit order.

        A visit is pending when it has no successful run, or when a person saved a mask version
        newer than the one its latest successful run measured. Failed visits are retried unless
        ``retry_failed`` is False. Visits being run by a live process are left out.
        """
        pending = []
        busy = {
            r["visit_id"]
            for r in self._query("SELECT visit_id, host, pid FROM runs WHERE status='running'")
            if r["host"] != socket.gethostname() or _pid_alive(r["pid"])
        }
        for visit_id in self.visits()["visit_id"]:
            visit_id = int(visit_id)
            if visit_id in busy:
                continue
            last = self._query(
                "SELECT status FROM runs WHERE visit_id=? ORDER BY id DESC LIMIT 1", (visit_id,)
            )
            if not retry_failed and last and last[0]["status"] == RunStatus.FAILED.value:
                continue
            run = self.current_run(visit_id)
            if run is None:
                pending.append(visit_id)
                continue
            human = self.latest_mask(visit_id, origin=MaskOrigin.HUMAN)
            if human is not None and human.id != run["mask_id"]:
                pending.append(visit_id)
        return pending

    # ------------------------------------------------------------------ results
    def measurements(self, *, all_runs: bool = False) -> pd.DataFrame:
        """Tidy measurements of the latest successful run of every visit (or of every run).

        Columns: ``patient, visit_id, visit_date, run_id, object, label, metric, value, unit,
        method, provenance`` (JSON text).
        """
        where = "" if all_runs else f"WHERE m.run_id IN ({self._current_runs_sql()})"
        return self._frame(
            "SELECT p.pseudo_id AS patient, m.visit_id, v.visit_date, m.run_id, m.object,"
            " m.label, m.metric, m.value, m.unit, m.method, m.provenance FROM measurements m"
            " JOIN visits v ON v.id=m.visit_id JOIN patients p ON p.id=v.patient_id "
            f"{where} ORDER BY p.pseudo_id, v.visit_date, m.visit_id, m.run_id, m.seq"
        )

    def deposits(self) -> pd.DataFrame:
        """Deposit centroids (baseline LPS mm) and volumes of the latest run of every visit."""
        return self._frame(
            "SELECT p.pseudo_id AS patient, r.visit_id, d.run_id, d.label, d.volume_ml,"
            " d.x_mm, d.y_mm, d.z_mm FROM deposits d JOIN runs r ON r.id=d.run_id"
            " JOIN visits v ON v.id=r.visit_id JOIN patients p ON p.id=v.patient_id"
            f" WHERE d.run_id IN ({self._current_runs_sql()}) ORDER BY p.pseudo_id, r.visit_id,"
            " d.label"
        )

    def status(self) -> WorkspaceStatus:
        """Counts and per-visit state (``done``, ``failed``, ``pending``…)."""
        visits = self.visits()
        states = []
        for visit_id in visits["visit_id"]:
            last = self._query(
                "SELECT status, reason FROM runs WHERE visit_id=? ORDER BY id DESC LIMIT 1",
                (int(visit_id),),
            )
            states.append((last[0]["status"], last[0]["reason"]) if last else ("new", None))
        visits["state"] = [s for s, _ in states]
        visits["reason"] = [r for _, r in states]
        roles = self._frame("SELECT visit_id, role FROM series")
        visits["series"] = [
            ", ".join(sorted(roles.loc[roles["visit_id"] == v, "role"])) for v in visits["visit_id"]
        ]
        pending = set(self.pending_visits())
        visits.loc[visits["visit_id"].isin(pending) & (visits["state"] == "done"), "state"] = (
            "stale"
        )
        return WorkspaceStatus(
            root=self.root,
            n_patients=int(self._query("SELECT COUNT(*) FROM patients")[0][0]),
            n_series=int(self._query("SELECT COUNT(*) FROM series")[0][0]),
            n_masks=int(self._query("SELECT COUNT(*) FROM masks")[0][0]),
            n_pending=len(pending),
            visits=visits[
                [
                    "visit_id",
                    "patient",
                    "label",
                    "visit_date",
                    "days_since_implantation",
                    "series",
                    "state",
                    "reason",
                ]
            ],
        )


@dataclasses.dataclass(frozen=True)
class WorkspaceStatus:
    """Summary of a workspace (see :meth:`Workspace.status`)."""

    root: Path
    n_patients: int
    n_series: int
    n_masks: int
    n_pending: int
    visits: pd.DataFrame

    @property
    def n_visits(self) -> int:
        return len(self.visits)

    def counts(self) -> dict[str, int]:
        """Number of visits per state."""
        return {str(k): int(v) for k, v in self.visits["state"].value_counts().items()}

    def __str__(self) -> str:
        lines = [
            f"workspace {self.root}",
            f"{self.n_patients} patient(s), {self.n_visits} visit(s), {self.n_series} series, "
            f"{self.n_masks} mask version(s); {self.n_pending} visit(s) to process",
        ]
        for row in self.visits.itertuples():
            days = (
                ""
                if pd.isna(row.days_since_implantation)
                else f" day {int(row.days_since_implantation)}"
            )
            reason = f" - {row.reason}" if row.state == "failed" and row.reason else ""
            lines.append(
                f"  {row.patient}/{row.label} (visit {row.visit_id}) {row.visit_date or '?'}{days}"
                f" [{row.series}] {row.state}{reason}"
            )
        return "\n".join(lines)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie (killed child not yet reaped) counts as gone
    with contextlib.suppress(OSError):
        status = Path(f"/proc/{pid}/status").read_text()
        if "\nState:\tZ" in status:
            return False
    return True


def _implantation_map(implantation: Any) -> dict[str, tuple[str, str]]:
    """Normalise the ``implantation`` option to ``{patient key: (ISO date, where given)}``
    (``*`` = all). ``where`` names the CSV line or mapping entry, never the patient key (it may
    be a DICOM PatientID, which must not appear in error messages)."""
    if implantation is None:
        return {}
    if isinstance(implantation, Mapping):
        return {
            str(k): (
                _parse_date(v, what=f"implantation date (entry {n} of the mapping)"),
                f"entry {n} of the mapping",
            )
            for n, (k, v) in enumerate(implantation.items(), start=1)
        }
    if isinstance(implantation, Path) or (
        isinstance(implantation, str) and implantation.lower().endswith(".csv")
    ):
        path = Path(implantation)
        if not path.is_file():
            raise WorkspaceError("implantation CSV not found", path=path)
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            missing = {"patient_id", "implantation_date"} - set(reader.fieldnames or ())
            if missing:
                raise WorkspaceError(
                    "implantation CSV lacks columns",
                    path=path,
                    value=sorted(missing),
                    hint="give a header line 'patient_id,implantation_date'",
                )
            return {
                row["patient_id"].strip(): (
                    _parse_date(
                        row["implantation_date"],
                        what=f"implantation_date ({path.name} line {reader.line_num})",
                    ),
                    f"{path.name} line {reader.line_num}",
                )
                for row in reader
                if row["patient_id"] and row["patient_id"].strip()
            }
    return {"*": (_parse_date(implantation, what="implantation_date"), "implantation_date")}


_KNOWN = ("object", "label", "metric", "value", "unit", "method")


def _measurement_rows(frame: pd.DataFrame) -> list[tuple[Any, ...]]:
    """Rows ``(object, label, metric, value, unit, method, provenance JSON)`` of a tidy table."""
    missing = {"object", "metric", "value"} - set(frame.columns)
    if missing:
        raise WorkspaceError(
            "measurement table lacks columns", tag="measurements", value=sorted(missing)
        )
    extra = [c for c in frame.columns if c not in _KNOWN]
    rows = []
    for record in frame.to_dict("records"):
        label = record.get("label")
        value = record["value"]
        provenance = {c: _jsonable(record[c]) for c in extra}
        rows.append(
            (
                str(record["object"]),
                None if label is None or pd.isna(label) else int(label),
                str(record["metric"]),
                None if value is None or pd.isna(value) else float(value),
                None if pd.isna(record.get("unit")) else record.get("unit"),
                None if pd.isna(record.get("method")) else record.get("method"),
                json.dumps(provenance, sort_keys=True, default=str),
            )
        )
    return rows


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and np.isnan(value):
        return None
    if isinstance(value, (tuple, np.ndarray)):
        return list(np.asarray(value).tolist())
    return value
