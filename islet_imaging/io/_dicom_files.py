"""Reading DICOM files (plain files or members of a .zip) into :class:`DicomFile` records.

Whole DICOM objects (a SEG, an SR, one de-identified instance...) are read with
:func:`read_object` and written atomically with :func:`write_object`.

Zip members are read in memory, never extracted: their path is written as the archive path
followed by the member name (``study.zip/DICOM/IM0001``), like :class:`zipfile.Path`, and
:func:`read_bytes` resolves such paths back to the archive. A :class:`DicomFile` holds the
header values the loader needs, decoded by the fast walker of :mod:`._dicom_parse` when it can
and by pydicom otherwise; the complete pydicom header is built lazily, only when asked for.
When the walker finds the pixel data beyond the first bytes read, only the header is kept and
the pixel bytes are read later, straight from the file at their offset (:meth:`DicomFile.read_at`).
"""

from __future__ import annotations

import io
import os
import threading
import zipfile
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath
from typing import Any

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from islet_imaging._atomic import atomic_path
from islet_imaging.errors import DicomSeriesError
from islet_imaging.io._dicom_parse import PIXEL_DATA, TAGS, Header, UnsupportedHeader, parse_header

__all__ = [
    "DicomFile",
    "LazyHeaders",
    "NotDicomError",
    "ZipReader",
    "is_safe_member",
    "read_bytes",
    "read_dicom_file",
    "read_object",
    "text_value",
    "thread_pool",
    "write_object",
]

_ENHANCED = "SharedFunctionalGroupsSequence"
_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def thread_pool() -> ThreadPoolExecutor:
    """The shared I/O thread pool (created on first use; starting threads per call is slow)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=4, thread_name_prefix="islet-io")
        return _POOL


class NotDicomError(Exception):
    """A file is not DICOM, or is unreadable; ``str(exc)`` is the reason."""


def is_safe_member(name: str) -> bool:
    """True if an archive member or DICOMDIR file ID stays inside its root (no ``..``, no root)."""
    if not name or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return False
    parts = PurePosixPath(name.replace("\\", "/")).parts
    return ".." not in parts


class ZipReader:
    """Thread-safe cache of open zip archives, to read many members of the same archive."""

    def __init__(self) -> None:
        self._archives: dict[str, zipfile.ZipFile] = {}
        self._lock = threading.Lock()

    def read(self, path: str, limit: int | None = None) -> bytes:
        """Read ``path`` (a real file, or ``archive.zip/member``), at most ``limit`` bytes."""
        return self.read_sized(path, limit)[0]

    def read_sized(
        self, path: str, limit: int | None = None, *, whole_below: int = 0
    ) -> tuple[bytes, int]:
        """Like :meth:`read`, also returning the full size of the file in bytes.

        Files of at most ``whole_below`` bytes are read whole whatever ``limit``.
        """
        try:
            with open(path, "rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                if limit is None or size <= whole_below:
                    data = fh.read()
                    return data, len(data)
                return fh.read(limit), size
        except (FileNotFoundError, NotADirectoryError):
            pass  # maybe a member of a zip archive
        archive, member = _split_zip_path(path)
        if not is_safe_member(member):
            raise NotDicomError(f"unsafe path inside archive: {member!r}")
        with self._lock:
            zf = self._archives.get(archive)
            if zf is None:
                zf = self._archives[archive] = zipfile.ZipFile(archive)
            try:
                size = zf.getinfo(member).file_size
                with zf.open(member) as fh:
                    whole = limit is None or size <= whole_below
                    return (fh.read() if whole else fh.read(limit)), size
            except KeyError as exc:
                raise NotDicomError("file not found") from exc

    def close(self) -> None:
        """Close every archive opened so far."""
        with self._lock:
            for zf in self._archives.values():
                zf.close()
            self._archives.clear()


def _split_zip_path(path: str) -> tuple[str, str]:
    probe = os.path.normpath(path)
    parts = []
    while probe and not os.path.isfile(probe):
        head, tail = os.path.split(probe)
        if head == probe:
            break
        parts.append(tail)
        probe = head
    if not probe or not os.path.isfile(probe) or not zipfile.is_zipfile(probe):
        raise NotDicomError("file not found")
    return probe, "/".join(reversed(parts))


def read_bytes(path: str, limit: int | None = None) -> bytes:
    """Read a file or a zip member (``archive.zip/member``) as bytes."""
    reader = ZipReader()
    try:
        return reader.read(path, limit)
    finally:
        reader.close()


def read_object(
    source: str | os.PathLike | Dataset,
    *,
    sop_class: str,
    label: str,
    description: str,
    hint: str | None = None,
) -> Dataset:
    """One whole DICOM object (a file or a dataset in memory) that must be of ``sop_class``.

    Parameters
    ----------
    source
        Path of the file, or a dataset already read.
    sop_class
        The SOPClassUID the object must have.
    label
        Short name of the object in the read error (``"DICOM SEG"``).
    description
        What the object is, in the wrong-class error (``"a DICOM Segmentation object"``).
    hint
        Fix given with the wrong-class error (default ``"expected <sop_class>"``).

    Raises
    ------
    DicomSeriesError
        If the file cannot be read or the object is of another SOP class.
    """
    in_memory = isinstance(source, Dataset)
    try:
        ds = source if in_memory else pydicom.dcmread(source)
    except (OSError, InvalidDicomError) as exc:
        raise DicomSeriesError(f"cannot read {label}: {exc}", path=source) from exc
    if getattr(ds, "SOPClassUID", None) != sop_class:
        raise DicomSeriesError(
            f"not {description}",
            path=(getattr(ds, "filename", None) or None) if in_memory else source,
            tag="SOPClassUID",
            value=str(getattr(ds, "SOPClassUID", None)),
            hint=hint or f"expected {sop_class}",
        )
    return ds


def write_object(ds: Dataset, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write ``ds`` as a DICOM file (with preamble and file meta) atomically.

    Raises
    ------
    IsletImagingError
        If ``path`` exists and ``overwrite`` is False.
    """
    with atomic_path(path, overwrite=overwrite) as tmp:
        ds.save_as(tmp, enforce_file_format=True)
    return Path(path)


def text_value(value: Any) -> str | None:
    r"""A header value as text: multiple values joined by ``\`` as in DICOM, None kept.

    >>> text_value(("ORIGINAL", "PRIMARY")), text_value(None)
    ('ORIGINAL\\PRIMARY', None)
    """
    if value is None:
        return None
    if isinstance(value, tuple):
        return "\\".join(str(v) for v in value)
    return str(value)


def _python_value(value: Any) -> Any:
    """pydicom value -> the plain Python value the fast walker produces."""
    if value is None or value == "":
        return None
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        items = [_python_value(v) for v in value]
        return items[0] if len(items) == 1 else tuple(items)
    if isinstance(value, pydicom.valuerep.DSfloat | pydicom.valuerep.DSdecimal):
        return float(value)
    if isinstance(value, pydicom.valuerep.IS):
        return int(value)
    if isinstance(value, pydicom.valuerep.PersonName | pydicom.uid.UID):
        return str(value)
    return value


class DicomFile:
    """One DICOM file: its path, bytes, header values and (lazily) its pydicom header.

    Parameters
    ----------
    path
        File path (or ``archive.zip/member``).
    data
        The file bytes: the whole file, or its beginning (at least the header up to the pixel
        data element when the fast walker read it).
    header
        Values read by the fast walker, or None if pydicom had to parse the file.
    dataset
        The pydicom dataset when the fast walker could not be used.
    size
        Length of the whole file in bytes (default ``len(data)``).
    """

    __slots__ = ("_dataset", "data", "header", "path", "size")

    def __init__(
        self,
        path: str,
        data: bytes,
        header: Header | None,
        dataset: Dataset | None,
        size: int | None = None,
    ) -> None:
        self.path = path
        self.data = data
        self.header = header
        self._dataset = dataset
        self.size = len(data) if size is None else size

    def get(self, keyword: str, default: Any = None) -> Any:
        """Value of ``keyword`` (one of :data:`._dicom_parse.TAGS`) as plain Python."""
        if self.header is not None:
            if keyword == "TransferSyntaxUID":
                return self.header.transfer_syntax or default
            return self.header.get(keyword, default)
        if keyword == "TransferSyntaxUID":
            meta = getattr(self._dataset, "file_meta", None)
            return str(meta.TransferSyntaxUID) if meta and "TransferSyntaxUID" in meta else default
        tag = TAGS[keyword][0]
        if tag not in self._dataset:
            return default
        value = _python_value(self._dataset[tag].value)
        return default if value is None else value

    def compact(self) -> DicomFile:
        """Drop the file bytes once the header values are decoded (scans of large trees).

        Enhanced multi-frame headers keep their bytes: their functional groups are parsed on
        demand.
        """
        if self.header is not None and not self.is_enhanced:
            self.data = b""
        return self

    @property
    def is_enhanced(self) -> bool:
        """True for multi-frame objects with functional groups (Enhanced MR/PET/CT...)."""
        if self.header is not None:
            return _ENHANCED in self.header.values
        return _ENHANCED in self._dataset

    @property
    def has_pixels(self) -> bool:
        """True if the file holds PixelData (or Float/Double Float Pixel Data)."""
        if self.header is not None:
            return self.header.pixel_offset is not None
        return any(t in self._dataset for t in (PIXEL_DATA, 0x7FE00008, 0x7FE00009))

    def whole(self) -> bytes:
        """All bytes of the file (read again if :attr:`data` holds only its beginning)."""
        if len(self.data) >= self.size:
            return self.data
        return read_bytes(self.path)

    def read_at(self, offset: int, out: memoryview) -> None:
        """Fill ``out`` with the file bytes starting at ``offset`` (a plain file, not a zip member).

        Raises
        ------
        DicomSeriesError
            If the file can no longer be read or is shorter than when its header was read.
        """
        got = 0
        try:
            with open(self.path, "rb", buffering=0) as fh:
                fh.seek(offset)
                while got < len(out):
                    n = fh.readinto(out[got:])
                    if not n:
                        break
                    got += n
        except OSError as exc:
            raise DicomSeriesError(
                f"cannot read pixel data ({exc.strerror or exc})", path=self.path, tag="PixelData"
            ) from exc
        if got < len(out):
            raise DicomSeriesError(
                f"file shorter than its header says: {len(out)} bytes wanted at offset {offset}, "
                f"{got} present",
                path=self.path,
                tag="PixelData",
                hint="the file changed or was truncated while loading",
            )

    def dataset(self, *, pixels: bool = False) -> Dataset:
        """The pydicom dataset, without pixel data unless ``pixels`` is True."""
        if pixels:
            if self._dataset is not None and PIXEL_DATA in self._dataset:
                return self._dataset
            return _dcmread(self.whole(), self.path, stop_before_pixels=False)
        if self.header is not None:
            return header_dataset(self.data[: self.header.header_end], self.path)
        ds = self._dataset
        if PIXEL_DATA in ds:
            ds = ds.copy()
            del ds[PIXEL_DATA]
        return ds


def header_dataset(data: bytes, path: str) -> Dataset:
    """Parse header bytes (everything before the PixelData element) with pydicom."""
    return _dcmread(data, path, stop_before_pixels=True)


def _dcmread(data: bytes, path: str, *, stop_before_pixels: bool) -> Dataset:
    try:
        return pydicom.dcmread(io.BytesIO(data), stop_before_pixels=stop_before_pixels)
    except InvalidDicomError:
        pass
    except Exception as exc:  # pydicom raises many types on damaged files
        raise NotDicomError(f"unreadable DICOM ({type(exc).__name__}: {exc})") from exc
    try:  # files without the 128-byte preamble (older exports)
        ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=stop_before_pixels, force=True)
    except Exception as exc:
        raise NotDicomError("not a DICOM file (no DICM preamble)") from exc
    if "SOPClassUID" not in ds and "Rows" not in ds:
        raise NotDicomError("not a DICOM file (no DICM preamble, no SOP Class UID)")
    return ds


_HEAD = 16384
_WHOLE = 65536  # smaller files are read whole by the loader: a second read costs more


def _parse_or_none(data: bytes, stop_after: int) -> Header | None:
    try:
        return parse_header(data, stop_after=stop_after)
    except UnsupportedHeader:
        return None


def read_dicom_file(
    path: str, reader: ZipReader, *, headers_only: bool, stop_after: int = PIXEL_DATA
) -> DicomFile:
    """Read one file and decode its header values.

    Only the beginning of the file is read (all of it if the header is longer) when the fast
    walker can parse it, and the walk stops after the tag ``stop_after``. Without
    ``headers_only`` the pixel data of large files stay on disk: ``data`` keeps the header
    bytes and the pixel reader reads the pixel bytes at their offset (small files and zip
    members are read whole). Files the walker cannot parse are read whole (without
    ``headers_only``) and parsed by pydicom.

    Raises
    ------
    NotDicomError
        With the reason (not DICOM, truncated, unreadable).
    """
    try:
        data, size = reader.read_sized(path, _HEAD, whole_below=0 if headers_only else _WHOLE)
    except IsADirectoryError as exc:
        raise NotDicomError("a folder, not a file") from exc
    except OSError as exc:
        raise NotDicomError(f"cannot read file ({exc.strerror or exc})") from exc
    limit = _HEAD
    partial = len(data) < size
    if len(data) >= 132 and data[128:132] == b"DICM":
        header = _parse_or_none(data, stop_after)
        while partial and (header is None or not header.stopped):
            limit *= 8  # long headers (e.g. Siemens CSA): read more, then all
            data = reader.read(path, limit if limit <= 8 * 8 * _HEAD else None)
            partial = len(data) == limit
            header = _parse_or_none(data, stop_after)
        if header is not None:
            if header.truncated:
                raise NotDicomError(
                    f"truncated file: the header ends after {len(data)} bytes inside an element"
                )
            pixels = header.pixel_offset, header.pixel_length
            if None not in pixels and pixels[0] + pixels[1] > size:
                raise NotDicomError(
                    f"truncated file: PixelData (7FE0,0010) needs {header.pixel_length} "
                    f"bytes, {size - header.pixel_offset} present"
                )
            if len(data) < size and not headers_only:
                # plain file: the pixels are read later at their offset; zip member: read it whole
                data = data[: header.header_end] if os.path.isfile(path) else reader.read(path)
            return DicomFile(path, data, header, None, size)
    if partial:
        data = reader.read(path)
    ds = _dcmread(data, path, stop_before_pixels=headers_only)
    return DicomFile(path, data, None, ds)


class LazyHeaders(Sequence):
    """A tuple-like sequence of pydicom headers (no PixelData), parsed on first access.

    Parsing a complete header with pydicom costs far more than reading the pixels, so the
    loader keeps each header's bytes and builds the :class:`~pydicom.dataset.Dataset` only when
    it is indexed. Compares equal to a tuple of the same datasets.
    """

    def __init__(self, items: Iterable[tuple[bytes, str] | Dataset]) -> None:
        self._items: list[Any] = list(items)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return tuple(self[i] for i in range(*index.indices(len(self))))
        item = self._items[index]
        if isinstance(item, Dataset):
            return item
        with self._lock:
            item = self._items[index]
            if not isinstance(item, Dataset):
                item = self._items[index] = header_dataset(*item)
        return item

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"LazyHeaders({len(self)} headers)"

    def __reduce__(self):
        return (LazyHeaders, (self._items,))
