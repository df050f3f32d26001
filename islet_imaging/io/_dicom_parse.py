"""A minimal, fast DICOM header walker for the tags the loader and the scanner need.

pydicom builds a full :class:`~pydicom.dataset.Dataset` for every file; for thousands of slices
that dominates scan and load time. This module walks the top-level data elements of a little
endian file (explicit or implicit VR, including encapsulated pixel data), keeps the raw value
bytes of a fixed set of tags, skips everything else (sequences included) and records where the
pixel data start. Anything unusual (big endian, deflate, no ``DICM`` preamble, malformed
lengths) raises :class:`UnsupportedHeader` and the caller falls back to pydicom.
"""

from __future__ import annotations

import struct
from typing import Any

__all__ = [
    "PIXEL_DATA",
    "TAGS",
    "Header",
    "UnsupportedHeader",
    "decode",
    "parse_header",
]

EXPLICIT_LE = "1.2.840.10008.1.2.1"
IMPLICIT_LE = "1.2.840.10008.1.2"
PIXEL_DATA = 0x7FE00010
_ITEM = 0xFFFEE000
_ITEM_END = 0xFFFEE00D
_SEQ_END = 0xFFFEE0DD
_UNDEFINED = 0xFFFFFFFF
_LONG_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)

# keyword -> (tag, VR) of every element the loader reads itself; all others stay in pydicom
TAGS: dict[str, tuple[int, str]] = {
    "TransferSyntaxUID": (0x00020010, "UI"),
    "ImageType": (0x00080008, "CS"),
    "SOPClassUID": (0x00080016, "UI"),
    "SOPInstanceUID": (0x00080018, "UI"),
    "StudyDate": (0x00080020, "DA"),
    "SeriesDate": (0x00080021, "DA"),
    "StudyTime": (0x00080030, "TM"),
    "SeriesTime": (0x00080031, "TM"),
    "AcquisitionTime": (0x00080032, "TM"),
    "Modality": (0x00080060, "CS"),
    "StudyDescription": (0x00081030, "LO"),
    "SeriesDescription": (0x0008103E, "LO"),
    "PatientID": (0x00100020, "LO"),
    "SliceThickness": (0x00180050, "DS"),
    "EchoTime": (0x00180081, "DS"),
    "EchoNumbers": (0x00180086, "IS"),
    "SpacingBetweenSlices": (0x00180088, "DS"),
    "TriggerTime": (0x00181060, "DS"),
    "DiffusionBValue": (0x00189087, "FD"),
    "SiemensMRHeaderCreator": (0x00190010, "LO"),
    "NumberOfImagesInMosaic": (0x0019100A, "US"),
    "StudyInstanceUID": (0x0020000D, "UI"),
    "SeriesInstanceUID": (0x0020000E, "UI"),
    "SeriesNumber": (0x00200011, "IS"),
    "AcquisitionNumber": (0x00200012, "IS"),
    "InstanceNumber": (0x00200013, "IS"),
    "ImagePositionPatient": (0x00200032, "DS"),
    "ImageOrientationPatient": (0x00200037, "DS"),
    "FrameOfReferenceUID": (0x00200052, "UI"),
    "TemporalPositionIdentifier": (0x00200100, "IS"),
    "SamplesPerPixel": (0x00280002, "US"),
    "PhotometricInterpretation": (0x00280004, "CS"),
    "NumberOfFrames": (0x00280008, "IS"),
    "Rows": (0x00280010, "US"),
    "Columns": (0x00280011, "US"),
    "PixelSpacing": (0x00280030, "DS"),
    "BitsAllocated": (0x00280100, "US"),
    "BitsStored": (0x00280101, "US"),
    "PixelRepresentation": (0x00280103, "US"),
    "RescaleIntercept": (0x00281052, "DS"),
    "RescaleSlope": (0x00281053, "DS"),
    "CSACreator": (0x00290010, "LO"),
    "CSAImageHeaderInfo": (0x00291010, "OB"),
    "Units": (0x00541001, "CS"),
    "FrameReferenceTime": (0x00541300, "DS"),
    "SharedFunctionalGroupsSequence": (0x52009229, "SQ"),
    "PerFrameFunctionalGroupsSequence": (0x52009230, "SQ"),
}
_KEYWORDS = {tag: keyword for keyword, (tag, _vr) in TAGS.items()}
_NUMERIC = {"US": "<H", "UL": "<I", "SS": "<h", "SL": "<i", "FL": "<f", "FD": "<d"}

_H = struct.Struct("<H")
_I = struct.Struct("<I")
_HH = struct.Struct("<HH")
_EXPLICIT = struct.Struct("<HH2sH")  # group, element, VR, 16-bit length
_IMPLICIT = struct.Struct("<HHI")  # group, element, 32-bit length
# every other pair of upper-case letters is read as a VR with a 16-bit length
_SHORT_VRS = frozenset(bytes((a, b)) for a in range(65, 91) for b in range(65, 91)) - _LONG_VRS


_NOT_DECODED = object()


class _CutShort(Exception):
    """The buffer ends inside an element, a sequence or an item (read more, or truncated)."""


class UnsupportedHeader(Exception):
    """The fast walker cannot read this file; use pydicom instead (not an error by itself)."""


class Header:
    """Raw values of :data:`TAGS` found in one file, plus where the pixel data are.

    Attributes
    ----------
    values : dict
        keyword -> raw value bytes (decode with :func:`decode`).
    pixel_offset, pixel_length : int or None
        Byte offset and length of the PixelData value (length None if encapsulated).
    header_end : int
        Offset where the PixelData element starts (or the end of the parsed bytes).
    transfer_syntax : str
    stopped : bool
        True if the walk stopped at the pixel data or at ``stop_after``.
    truncated : bool
        True if an element runs past the end of the buffer.
    """

    __slots__ = (
        "_decoded",
        "header_end",
        "pixel_length",
        "pixel_offset",
        "stopped",
        "transfer_syntax",
        "truncated",
        "values",
    )

    def __init__(self) -> None:
        self.values: dict[str, bytes] = {}
        self._decoded: dict[str, Any] = {}
        self.pixel_offset: int | None = None
        self.pixel_length: int | None = None
        self.header_end = 0
        self.transfer_syntax = ""
        self.stopped = False
        self.truncated = False

    def get(self, keyword: str, default: Any = None) -> Any:
        """Decoded value of ``keyword`` (see :func:`decode`), or ``default`` if absent."""
        value = self._decoded.get(keyword, _NOT_DECODED)
        if value is _NOT_DECODED:
            raw = self.values.get(keyword)
            value = None if raw is None else _decode_shared(raw, TAGS[keyword][1])
            self._decoded[keyword] = value
        return default if value is None else value


_SHARED: dict[tuple[bytes, str], Any] = {}
_SHARED_MAX = 4096  # entries; only values of at most 64 bytes are remembered


def _decode_shared(raw: bytes, vr: str) -> Any:
    """:func:`decode`, remembering recent short values: the files of a series repeat most of
    them (orientation, spacing, UIDs, rescale...). Decoded values are immutable: safe to share."""
    if len(raw) > 64:
        return decode(raw, vr)
    key = (raw, vr)
    value = _SHARED.get(key, _NOT_DECODED)
    if value is _NOT_DECODED:
        value = decode(raw, vr)
        if len(_SHARED) >= _SHARED_MAX:
            _SHARED.clear()
        _SHARED[key] = value
    return value


def decode(raw: bytes, vr: str) -> Any:
    """Decode raw little-endian value bytes: strings, numbers, or tuples for multi-values."""
    if vr in _NUMERIC:
        fmt = _NUMERIC[vr]
        size = struct.calcsize(fmt)
        n = len(raw) // size
        if n == 0:
            return None
        values = struct.unpack("<" + fmt[1] * n, raw[: n * size])
        return values[0] if n == 1 else values
    if vr in ("OB", "SQ"):
        return raw
    text = raw.decode("utf-8", "replace").strip(" \x00")
    if not text:
        return None
    parts = [p.strip(" \x00") for p in text.split("\\")]
    if vr in ("DS", "IS"):
        try:
            numbers = [float(p) if vr == "DS" else int(float(p)) for p in parts if p]
        except ValueError:
            return None
        if not numbers:
            return None
        return numbers[0] if len(numbers) == 1 else tuple(numbers)
    if vr == "CS" and len(parts) > 1:
        return tuple(parts)
    return text if len(parts) == 1 else tuple(parts)


def _skip_undefined(buf: bytes, pos: int, explicit: bool) -> int:
    """Skip the items of an undefined-length sequence starting at ``pos``; return end offset."""
    end = len(buf)
    while pos + 8 <= end:
        group, elem = _HH.unpack_from(buf, pos)
        tag = (group << 16) | elem
        length = _I.unpack_from(buf, pos + 4)[0]
        pos += 8
        if tag == _SEQ_END:
            return pos
        if tag != _ITEM:
            raise UnsupportedHeader(f"unexpected tag {tag:08X} in sequence")
        if length != _UNDEFINED:
            pos += length
            continue
        pos = _skip_dataset(buf, pos, explicit)
    raise _CutShort


def _skip_dataset(buf: bytes, pos: int, explicit: bool) -> int:
    """Skip elements of an undefined-length item up to and including its delimiter."""
    end = len(buf)
    while pos + 8 <= end:
        tag, vr, length, pos = _element_header(buf, pos, explicit)
        if tag == _ITEM_END:
            return pos
        if length == _UNDEFINED:
            pos = _skip_undefined(buf, pos, explicit and vr != b"UN")
        else:
            pos += length
    raise _CutShort


def _element_header(buf: bytes, pos: int, explicit: bool) -> tuple[int, bytes, int, int]:
    group, elem = _HH.unpack_from(buf, pos)
    tag = (group << 16) | elem
    if group == 0xFFFE:  # item / delimiters carry no VR
        return tag, b"", _I.unpack_from(buf, pos + 4)[0], pos + 8
    if explicit:
        vr = buf[pos + 4 : pos + 6]
        if vr in _LONG_VRS:
            if pos + 12 > len(buf):
                raise _CutShort
            return tag, vr, _I.unpack_from(buf, pos + 8)[0], pos + 12
        if not (65 <= vr[0] <= 90 and 65 <= vr[1] <= 90):
            raise UnsupportedHeader(f"invalid VR {vr!r} at offset {pos}")
        return tag, vr, _H.unpack_from(buf, pos + 6)[0], pos + 8
    return tag, b"", _I.unpack_from(buf, pos + 4)[0], pos + 8


def parse_header(buf: bytes, *, stop_after: int = PIXEL_DATA) -> Header:
    """Walk the data elements of ``buf`` (the start of, or a whole, DICOM file).

    Parameters
    ----------
    buf
        File bytes, starting with the 128-byte preamble and ``DICM``.
    stop_after
        Stop once an element with a larger tag is reached (pixel data always stop the walk).

    Raises
    ------
    UnsupportedHeader
        If the file needs pydicom (no preamble, big endian, deflate, malformed lengths).
    """
    if len(buf) < 132 or buf[128:132] != b"DICM":
        raise UnsupportedHeader("no DICM preamble")
    header = Header()
    values = header.values
    pos = 132
    end = len(buf)
    # File meta information: always explicit VR little endian
    while pos + 8 <= end and _H.unpack_from(buf, pos)[0] == 0x0002:
        try:
            tag, _vr, length, value_pos = _element_header(buf, pos, True)
        except _CutShort:
            break
        if length == _UNDEFINED:
            raise UnsupportedHeader("bad file meta element")
        if value_pos + length > end:
            break
        pos = value_pos
        if tag == 0x00020010:
            header.transfer_syntax = buf[pos : pos + length].decode("ascii").strip(" \x00")
        pos += length
    if pos + 8 > end or _H.unpack_from(buf, pos)[0] == 0x0002:  # the buffer ends in the meta
        header.header_end, header.truncated = min(pos, end), True
        return header
    ts = header.transfer_syntax
    if ts == IMPLICIT_LE:
        explicit = False
    elif ts.startswith("1.2.840.10008.1.2.") and ts not in (
        "1.2.840.10008.1.2.2",
        "1.2.840.10008.1.2.1.99",
    ):
        explicit = True  # explicit LE and every encapsulated (compressed) syntax
    else:
        raise UnsupportedHeader(f"transfer syntax {ts!r}")
    stop = min(stop_after, PIXEL_DATA)
    first_stop = min(stop + 1, PIXEL_DATA)  # the walk ends at the first tag >= this
    keywords = _KEYWORDS
    unpack_explicit, unpack_implicit, unpack_i = (
        _EXPLICIT.unpack_from,
        _IMPLICIT.unpack_from,
        _I.unpack_from,
    )
    long_vrs, short_vrs = _LONG_VRS, _SHORT_VRS
    while pos + 8 <= end:  # hot loop: one struct call per element header
        start = pos
        if explicit:
            group, elem, vr, length = unpack_explicit(buf, pos)
            if group == 0xFFFE:  # item / delimiters carry no VR
                vr = b""
                length = unpack_i(buf, pos + 4)[0]
                pos += 8
            elif vr in long_vrs:
                if pos + 12 > end:  # the buffer ends inside this element's header
                    break
                length = unpack_i(buf, pos + 8)[0]
                pos += 12
            elif vr in short_vrs:
                pos += 8
            else:
                raise UnsupportedHeader(f"invalid VR {vr!r} at offset {start}")
        else:
            group, elem, length = unpack_implicit(buf, pos)
            vr = b""
            pos += 8
        tag = (group << 16) | elem
        if tag >= first_stop:
            header.header_end = start
            if tag == PIXEL_DATA:
                header.pixel_offset = pos
                header.pixel_length = None if length == _UNDEFINED else length
            header.stopped = True
            return header
        if length == _UNDEFINED:
            if tag in keywords:  # functional groups: keep the position, pydicom parses them
                values[keywords[tag]] = b""
            try:
                pos = _skip_undefined(buf, pos, explicit and vr != b"UN")
            except _CutShort:
                pos = start
                break
            continue
        if pos + length > end:  # the value runs past the buffer (even when none of it is here)
            pos = start
            break
        if tag in keywords:
            values[keywords[tag]] = buf[pos : pos + length]
        pos += length
    header.header_end = min(pos, end)
    header.truncated = pos != end
    return header
