"""Find the DICOM series in a folder tree, a DICOMDIR or a .zip archive, reading headers only.

:func:`scan` returns a :class:`DicomIndex`: patients → studies → series, each series with its
modality, description, date, instance count, orientation, image types and files. Files that are
not DICOM, truncated or unreadable are listed with the reason and never stop the scan.

Zip archives are read in memory, never extracted: a member's path is written as the archive
path followed by the member name (``/data/study.zip/DICOM/IM0001``), and
:func:`islet_imaging.load_series` reads such paths straight from the archive. Archive members
and DICOMDIR file references that would leave the root (absolute paths, ``..``) are refused and
listed as problems. Zip files found inside a scanned folder are not opened (scan them directly).
"""

from __future__ import annotations

import dataclasses
import os
import sys
import zipfile
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from islet_imaging.errors import IsletImagingError
from islet_imaging.io._dicom_files import (
    DicomFile,
    NotDicomError,
    ZipReader,
    is_safe_member,
    read_dicom_file,
    text_value,
    thread_pool,
)
from islet_imaging.io._dicom_frames import orientation_label

__all__ = [
    "DicomIndex",
    "FileProblem",
    "PatientEntry",
    "SeriesEntry",
    "StudyEntry",
    "list_files",
    "scan",
]

_DICOMDIR_SOP = "1.2.840.10008.1.3.10"
_PROGRESS_MIN_FILES = 200


@dataclasses.dataclass(frozen=True)
class FileProblem:
    """A file that could not be used, and why."""

    path: str
    reason: str


@dataclasses.dataclass(frozen=True)
class SeriesEntry:
    """One DICOM series found by :func:`scan` (headers only; no patient name is kept).

    ``orientation`` is ``'axial'``, ``'sagittal'``, ``'coronal'``, ``'oblique'``, ``'mixed'``
    (several orientations, e.g. a 3-plane localizer) or ``'unknown'``; ``files`` are sorted by
    path; ``n_frames`` counts the 2D frames of multi-frame files.
    """

    series_uid: str
    study_uid: str | None
    patient_id: str | None
    modality: str | None
    description: str | None
    series_number: int | None
    date: str | None
    time: str | None
    n_instances: int
    n_frames: int
    orientation: str
    image_types: tuple[str, ...]
    frame_of_reference_uid: str | None
    sop_class_uids: tuple[str, ...]
    files: tuple[str, ...]
    problems: tuple[FileProblem, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary of this entry."""
        out = dataclasses.asdict(self)
        out["problems"] = [dataclasses.asdict(p) for p in self.problems]
        out["files"] = list(self.files)
        return out


@dataclasses.dataclass(frozen=True)
class StudyEntry:
    """A study: its UID, date, description and series (sorted by series number)."""

    study_uid: str | None
    date: str | None
    description: str | None
    series: tuple[SeriesEntry, ...]


@dataclasses.dataclass(frozen=True)
class PatientEntry:
    """A patient (by Patient ID only) and their studies (sorted by date)."""

    patient_id: str | None
    studies: tuple[StudyEntry, ...]


@dataclasses.dataclass(frozen=True)
class DicomIndex:
    """What :func:`scan` found under ``root``."""

    root: str
    patients: tuple[PatientEntry, ...]
    problems: tuple[FileProblem, ...]

    @property
    def series(self) -> tuple[SeriesEntry, ...]:
        """All series, flat, in patient → study → series order."""
        return tuple(s for p in self.patients for st in p.studies for s in st.series)

    def find(self, series_uid: str) -> SeriesEntry:
        """The series with this SeriesInstanceUID.

        Raises
        ------
        IsletImagingError
            If no series has this UID.
        """
        for entry in self.series:
            if entry.series_uid == series_uid:
                return entry
        raise IsletImagingError(
            "no such series", path=self.root, tag="SeriesInstanceUID", value=series_uid
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary: root, patients → studies → series, problems."""
        return {
            "root": self.root,
            "patients": [
                {
                    "patient_id": p.patient_id,
                    "studies": [
                        {
                            "study_uid": st.study_uid,
                            "date": st.date,
                            "description": st.description,
                            "series": [s.to_dict() for s in st.series],
                        }
                        for st in p.studies
                    ],
                }
                for p in self.patients
            ],
            "problems": [dataclasses.asdict(p) for p in self.problems],
        }


# ------------------------------------------------------------------------------ file listing
def list_files(path: str | os.PathLike) -> tuple[list[str], list[FileProblem]]:
    """List candidate files under ``path`` (folder, DICOMDIR, .zip or single file).

    Returns
    -------
    files, problems
        Paths to read (zip members as ``archive.zip/member``) and refused entries.

    Raises
    ------
    IsletImagingError
        If ``path`` does not exist.
    """
    root = Path(path)
    if root.is_dir():
        files = []
        for folder, dirs, names in os.walk(root):
            dirs.sort()
            files.extend(
                os.path.join(folder, n)
                for n in sorted(names)
                if n.upper() != "DICOMDIR" and not n.startswith(".")
            )
        return files, []
    if not root.is_file():
        raise IsletImagingError("path not found", path=root, hint="give a folder, DICOMDIR or .zip")
    if zipfile.is_zipfile(root):
        return _zip_members(root)
    if root.name.upper() == "DICOMDIR" or _is_dicomdir(root):
        return _dicomdir_files(root)
    return [str(root)], []


def _zip_members(archive: Path) -> tuple[list[str], list[FileProblem]]:
    files, problems = [], []
    try:
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise IsletImagingError(f"unreadable zip archive ({exc})", path=archive) from exc
    for info in infos:
        if info.is_dir():
            continue
        name = info.filename
        if not is_safe_member(name):
            problems.append(
                FileProblem(
                    f"{archive}/{name}",
                    "archive member path leaves the archive root (absolute or '..'): not read",
                )
            )
            continue
        if name.rsplit("/", 1)[-1].upper() == "DICOMDIR":
            continue
        files.append(f"{archive}/{name}")
    return sorted(files), problems


def _is_dicomdir(path: Path) -> bool:
    with open(path, "rb") as fh:
        head = fh.read(4096)
    return _DICOMDIR_SOP.encode() in head


def _dicomdir_files(dicomdir: Path) -> tuple[list[str], list[FileProblem]]:
    import pydicom

    try:
        ds = pydicom.dcmread(dicomdir)
    except Exception as exc:
        raise IsletImagingError(f"unreadable DICOMDIR ({exc})", path=dicomdir) from exc
    base = dicomdir.parent.resolve()
    files, problems = [], []
    for record in ds.get("DirectoryRecordSequence", []):
        file_id = record.get("ReferencedFileID")
        if not file_id:
            continue
        parts = [file_id] if isinstance(file_id, str) else list(file_id)
        rel = "/".join(str(p) for p in parts)
        target = base.joinpath(*parts)
        if not is_safe_member(rel) or not target.resolve().is_relative_to(base):
            problems.append(
                FileProblem(
                    str(dicomdir),
                    f"ReferencedFileID {rel!r} leaves the DICOMDIR folder: not read",
                )
            )
            continue
        if not target.is_file():
            problems.append(FileProblem(str(target), "referenced by DICOMDIR but missing"))
            continue
        files.append(str(target))
    return sorted(set(files)), problems


# ------------------------------------------------------------------------------------ scanning
def _want_progress(progress: bool | None, n_files: int) -> bool:
    if progress is not None:
        return bool(progress)
    return n_files >= _PROGRESS_MIN_FILES and sys.stderr.isatty()


def read_headers(
    files: list[str], *, progress: bool | None = None, headers_only: bool = True
) -> tuple[list[DicomFile], list[FileProblem]]:
    """Read the DICOM files among ``files`` (threaded); others become :class:`FileProblem`."""
    reader = ZipReader()

    def one(path: str) -> DicomFile | FileProblem:
        try:
            dicom = read_dicom_file(path, reader, headers_only=headers_only)
        except NotDicomError as exc:
            return FileProblem(path, str(exc))
        return dicom.compact() if headers_only else dicom

    def chunk(paths: list[str]) -> list[DicomFile | FileProblem]:
        return [one(p) for p in paths]

    results: list[DicomFile | FileProblem] = []
    size = 8  # files per task: fewer futures, still overlapping I/O
    chunks = [files[i : i + size] for i in range(0, len(files), size)]
    try:
        jobs = (r for c in thread_pool().map(chunk, chunks) for r in c)
        if _want_progress(progress, len(files)):
            from rich.progress import Progress

            with Progress(transient=True, console=_stderr_console()) as bar:
                task = bar.add_task("Reading DICOM headers", total=len(files))
                for result in jobs:
                    results.append(result)
                    bar.advance(task)
        else:
            results = list(jobs)
    finally:
        reader.close()
    good = [r for r in results if isinstance(r, DicomFile)]
    bad = [r for r in results if isinstance(r, FileProblem)]
    return good, bad


def _stderr_console():
    from rich.console import Console

    return Console(stderr=True)


def scan(path: str | os.PathLike, *, progress: bool | None = None) -> DicomIndex:
    """Index the DICOM series under ``path`` without reading pixel data.

    Parameters
    ----------
    path
        A folder (walked recursively; hidden files and DICOMDIR index files are skipped, the
        files they index are found by the walk), a DICOMDIR file, a .zip archive or a file.
    progress
        Show a progress bar on stderr; ``None`` (default) shows it for large trees when stderr
        is a terminal.

    Returns
    -------
    DicomIndex
        Patients → studies → series, plus the files that could not be used and why.

    Raises
    ------
    IsletImagingError
        Only if ``path`` itself does not exist or is an unreadable archive/DICOMDIR.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> from islet_imaging import Volume, load_series
    >>> from islet_imaging.io.dicom_write import write_series
    >>> axial = [[0, 0, 1], [0, 1, 0], [1, 0, 0]]  # slice normal, column and row cosines
    >>> vol = Volume(np.zeros((4, 8, 8), np.float32), spacing=(3, 1, 1), direction=axial)
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     _ = write_series(vol, tmp, modality="MR", series_description="T1")
    ...     index = scan(tmp)
    ...     entry = index.series[0]
    ...     loaded = load_series(entry)
    >>> entry.description, entry.n_instances, entry.orientation, loaded.shape
    ('T1', 4, 'axial', (4, 8, 8))
    """
    files, problems = list_files(path)
    dicoms, bad = read_headers(files, progress=progress)
    problems.extend(bad)
    return build_index(str(path), dicoms, problems)


def _series_number(value: Any) -> int | None:
    if isinstance(value, tuple):
        value = value[0]
    return int(value) if isinstance(value, int | float) else None


def build_index(root: str, dicoms: Iterable[DicomFile], problems: list[FileProblem]) -> DicomIndex:
    """Group read headers into patients → studies → series."""
    by_series: dict[str, list[DicomFile]] = defaultdict(list)
    for dicom in dicoms:
        uid = dicom.get("SeriesInstanceUID")
        if uid is None:
            sop = dicom.get("SOPClassUID")
            problems.append(
                FileProblem(
                    dicom.path,
                    "DICOM file without SeriesInstanceUID (0020,000E)"
                    + (f", SOP class {sop}" if sop else ""),
                )
            )
            continue
        by_series[str(uid)].append(dicom)
    entries = [_series_entry(uid, members) for uid, members in by_series.items()]
    studies: dict[tuple, list[SeriesEntry]] = defaultdict(list)
    study_info: dict[tuple, tuple] = {}
    for entry in entries:
        key = (entry.patient_id, entry.study_uid)
        studies[key].append(entry)
        first = by_series[entry.series_uid][0]
        study_info[key] = (
            text_value(first.get("StudyDate")),
            text_value(first.get("StudyDescription")),
        )
    patients: dict[str | None, list[StudyEntry]] = defaultdict(list)
    for (patient, study_uid), members in studies.items():
        members.sort(key=lambda s: (s.series_number is None, s.series_number or 0, s.series_uid))
        date, description = study_info[(patient, study_uid)]
        patients[patient].append(StudyEntry(study_uid, date, description, tuple(members)))
    patient_entries = tuple(
        PatientEntry(pid, tuple(sorted(st, key=lambda s: (s.date or "", s.study_uid or ""))))
        for pid, st in sorted(patients.items(), key=lambda kv: kv[0] or "")
    )
    return DicomIndex(root, patient_entries, tuple(problems))


def _series_entry(uid: str, members: list[DicomFile]) -> SeriesEntry:
    members.sort(key=lambda d: d.path)
    first = members[0]
    orientations: list[tuple[float, ...]] = []
    image_types: list[str] = []
    frames = 0
    for dicom in members:
        n = dicom.get("NumberOfFrames", 1)
        frames += int(n) if isinstance(n, int | float) and n > 0 else 1
        for iop in _orientations(dicom):
            if not any(
                max(abs(a - b) for a, b in zip(iop, o, strict=True)) < 1e-3 for o in orientations
            ):
                orientations.append(iop)
        itype = text_value(dicom.get("ImageType"))
        if itype and itype not in image_types:
            image_types.append(itype)
    labels = {orientation_label(o) for o in orientations}
    if len(orientations) > 1:
        orientation = "mixed"
    elif labels:
        orientation = labels.pop()
    else:
        orientation = "unknown"
    sops = tuple(sorted({str(d.get("SOPClassUID")) for d in members if d.get("SOPClassUID")}))
    return SeriesEntry(
        series_uid=uid,
        study_uid=text_value(first.get("StudyInstanceUID")),
        patient_id=text_value(first.get("PatientID")),
        modality=text_value(first.get("Modality")),
        description=text_value(first.get("SeriesDescription")),
        series_number=_series_number(first.get("SeriesNumber")),
        date=text_value(first.get("SeriesDate") or first.get("StudyDate")),
        time=text_value(first.get("SeriesTime")),
        n_instances=len(members),
        n_frames=frames,
        orientation=orientation,
        image_types=tuple(image_types),
        frame_of_reference_uid=text_value(first.get("FrameOfReferenceUID")),
        sop_class_uids=sops,
        files=tuple(d.path for d in members),
    )


def _orientations(dicom: DicomFile) -> list[tuple[float, ...]]:
    iop = dicom.get("ImageOrientationPatient")
    if isinstance(iop, tuple) and len(iop) == 6:
        return [tuple(float(v) for v in iop)]
    if not dicom.is_enhanced:
        return []
    from islet_imaging.io._dicom_frames import file_frames

    out = []
    for frame in file_frames(dicom):
        if frame.orientation is not None:
            iop6 = tuple(float(v) for v in frame.orientation)
            if iop6 not in out:
                out.append(iop6)
    return out
