"""De-identification of DICOM files for export (DICOM PS3.15 Annex E, Basic Profile).

What is done, per file (the profile is the table :data:`PROFILE`, applied recursively to every
sequence item):

* Attributes of PS3.15 Table E.1-1 get the Basic Application Level Confidentiality Profile action
  (X remove, Z empty, D dummy, U new UID, K keep), with these options, recorded in
  DeidentificationMethodCodeSequence (CID 7050):

  - 113107 *Retain Longitudinal Temporal Information with Modified Dates*: every date
    (DA, and the date part of DT) is shifted by a whole number of days that depends only on the
    key and the patient ID, times are kept. Time differences within and across visits of a
    patient (injection to scan for SUV decay correction, visit intervals) stay exact.
  - 113108 *Retain Patient Characteristics*: PatientSex, PatientSize and PatientWeight are kept
    (SUVbw needs the weight, SUL the sex and height); PatientAge is removed.
  - 113111 *Retain Safe Private*: private tags are removed except the safe list
    :data:`SAFE_PRIVATE` needed for PET quantitation (Philips SUV scale factor (7053,xx00) and
    activity concentration scale factor (7053,xx09); GE scan DateTime (0009,xx0D), date-shifted).

* Pseudonyms are keyed HMAC-SHA256 digests: PatientID and PatientName become the same
  pseudonym ``ANON-<10 characters>`` for the same patient and key, in every file and every run.
* Every UID that is not a standard DICOM UID (SOP class, transfer syntax, ...) is replaced by
  ``2.25.<128-bit integer>`` derived from the key and the original UID, so references between
  files (SEG to image, series, frame of reference) stay consistent.
* Safety nets beyond the table: any other person name (VR PN) is removed, any other date is
  shifted, overlays (60xx) and curves (50xx) are removed, a file flagged
  BurnedInAnnotation=YES is refused (pixel data are not cleaned).
* PatientIdentityRemoved = YES, LongitudinalTemporalInformationModified = MODIFIED,
  DeidentificationMethod is set.

Geometry (positions, orientation, spacing), pixel data, rescale and PET quantification tags
(Units, CorrectedImage, DecayCorrection, RadiopharmaceuticalInformationSequence doses and
half-life) are not in the table and are kept.

Limitations: SR ContentSequence is removed as the table says (export SR reports separately);
free text in descriptions is removed, not cleaned.
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import enum
import hashlib
import hmac
import os
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.tag import Tag
from pydicom.uid import UID_dictionary

from islet_imaging import __version__
from islet_imaging.errors import IsletImagingError
from islet_imaging.io._dicom_datetime import parse_da
from islet_imaging.io._dicom_files import write_object

__all__ = [
    "PROFILE",
    "SAFE_PRIVATE",
    "Action",
    "Deidentifier",
    "ExportReport",
    "export_deidentified",
]


class Action(enum.StrEnum):
    """Action codes of PS3.15 Table E.1-1 (after choosing among compound codes)."""

    REMOVE = "X"
    EMPTY = "Z"
    DUMMY = "D"
    UID = "U"
    KEEP = "K"
    SHIFT = "C"  # "clean": dates shifted (Retain Longitudinal ... Modified Dates option)


# PS3.15 Table E.1-1 (subset relevant to MR / PET / SEG / SR / RTSTRUCT objects).
# Columns: tag | attribute | Basic Profile | with options 113107 (dates) / 113108 (characteristics)
# Compound basic codes are resolved conservatively: X/Z -> Z, X/D and Z/D -> D (dates -> C),
# X/Z/D -> Z, X/Z/U* -> U (sequences of references: UIDs remapped inside).
_TABLE = """
0008,0050 | Accession Number | Z |
0018,4000 | Acquisition Comments | X |
0040,0555 | Acquisition Context Sequence | X |
0008,0022 | Acquisition Date | Z | C
0008,002A | Acquisition DateTime | D | C
0018,1400 | Acquisition Device Processing Description | D |
0018,9424 | Acquisition Protocol Description | X |
0008,0032 | Acquisition Time | Z | C
0040,4035 | Actual Human Performers Sequence | X |
0010,21B0 | Additional Patient History | X |
0038,0010 | Admission ID | X |
0038,0020 | Admitting Date | X | C
0008,1084 | Admitting Diagnoses Code Sequence | X |
0008,1080 | Admitting Diagnoses Description | X |
0038,0021 | Admitting Time | X | C
0010,2110 | Allergies | X |
4000,0010 | Arbitrary | X |
0040,A078 | Author Observer Sequence | X |
0010,1081 | Branch of Service | X |
0018,1007 | Cassette ID | X |
0040,0280 | Comments on the Performed Procedure Step | X |
0040,0310 | Comments on Radiation Dose | X |
0020,9161 | Concatenation UID | U |
0040,3001 | Confidentiality Constraint on Patient Data Description | X |
0070,0086 | Content Creator's Identification Code Sequence | X |
0070,0084 | Content Creator's Name | Z |
0008,0023 | Content Date | D | C
0040,A730 | Content Sequence | X |
0008,0033 | Content Time | D | C
0018,1042 | Contrast/Bolus Start Time | X | C
0018,1043 | Contrast/Bolus Stop Time | X | C
0018,A003 | Contribution Description | X |
0010,2150 | Country of Residence | X |
0038,0300 | Current Patient Location | X |
0008,0025 | Curve Date | X | C
0008,0035 | Curve Time | X | C
0040,A07C | Custodial Organization Sequence | X |
0018,9701 | Decay Correction DateTime | D | C
0018,1000 | Device Serial Number | Z |
0018,1002 | Device UID | U |
0018,700A | Detector ID | X |
FFFA,FFFA | Digital Signatures Sequence | X |
0400,0100 | Digital Signature UID | X |
0020,9164 | Dimension Organization UID | U |
0038,0040 | Discharge Diagnosis Description | X |
4008,011A | Distribution Address | X |
4008,0119 | Distribution Name | X |
300A,0013 | Dose Reference UID | U |
0010,2160 | Ethnic Group | X |
0008,0058 | Failed SOP Instance UID List | U |
0070,031A | Fiducial UID | U |
0040,2017 | Filler Order Number / Imaging Service Request | X |
0018,9074 | Frame Acquisition DateTime | D | C
0020,9158 | Frame Comments | X |
0020,0052 | Frame of Reference UID | U |
0018,9151 | Frame Reference DateTime | D | C
0018,1008 | Gantry ID | X |
0018,1005 | Generator ID | X |
0070,0001 | Graphic Annotation Sequence | D |
0040,4037 | Human Performers Name | X |
0040,4036 | Human Performers Organization | X |
0088,0200 | Icon Image Sequence | X |
0008,4000 | Identifying Comments | X |
0020,4000 | Image Comments | X |
0028,4000 | Image Presentation Comments | X |
0040,2400 | Imaging Service Request Comments | X |
4008,0300 | Impressions | X |
0008,0015 | Instance Coercion DateTime | X |
0008,0012 | Instance Creation Date | D | C
0008,0013 | Instance Creation Time | Z | C
0008,0014 | Instance Creator UID | U |
0008,0081 | Institution Address | X |
0008,0082 | Institution Code Sequence | Z |
0008,0080 | Institution Name | Z |
0008,1040 | Institutional Department Name | X |
0008,1041 | Institutional Department Type Code Sequence | X |
0010,1050 | Insurance Plan Identification | X |
0040,1011 | Intended Recipients of Results Identification Sequence | X |
4008,0111 | Interpretation Approver Sequence | X |
4008,010C | Interpretation Author | X |
4008,0115 | Interpretation Diagnosis Description | X |
4008,0202 | Interpretation ID Issuer | X |
4008,0102 | Interpretation Recorder | X |
4008,010B | Interpretation Text | X |
4008,010A | Interpretation Transcriber | X |
0018,0035 | Intervention Drug Start Time | X | C
0018,0027 | Intervention Drug Stop Time | X | C
0008,3010 | Irradiation Event UID | U |
0038,0011 | Issuer of Admission ID | X |
0010,0021 | Issuer of Patient ID | X |
0038,0061 | Issuer of Service Episode ID | X |
0028,1214 | Large Palette Color Lookup Table UID | U |
0010,21D0 | Last Menstrual Date | X | C
0400,0404 | MAC | X |
0002,0003 | Media Storage SOP Instance UID | U |
0010,2000 | Medical Alerts | X |
0010,1090 | Medical Record Locator | X |
0010,1080 | Military Rank | X |
0400,0550 | Modified Attributes Sequence | X |
0008,1060 | Name of Physician(s) Reading Study | X |
0040,1010 | Names of Intended Recipients of Results | X |
0040,A192 | Observation Date (Trial) | X | C
0040,A032 | Observation DateTime | D | C
0040,A193 | Observation Time (Trial) | X | C
0010,2180 | Occupation | X |
0008,1072 | Operators' Identification Sequence | D |
0008,1070 | Operators' Name | Z |
0040,2010 | Order Callback Phone Number | X |
0040,2008 | Order Entered By | X |
0040,2009 | Order Enterer's Location | X |
0400,0561 | Original Attributes Sequence | X |
0010,1000 | Other Patient IDs | X |
0010,1002 | Other Patient IDs Sequence | X |
0010,1001 | Other Patient Names | X |
0040,A07A | Participant Sequence | X |
0010,1040 | Patient's Address | X |
0010,1010 | Patient's Age | X |
0010,0030 | Patient's Birth Date | Z |
0010,1005 | Patient's Birth Name | X |
0010,0032 | Patient's Birth Time | X |
0010,4000 | Patient Comments | X |
0010,0020 | Patient ID | Z |
0038,0400 | Patient's Institution Residence | X |
0010,0050 | Patient's Insurance Plan Code Sequence | X |
0010,1060 | Patient's Mother's Birth Name | X |
0010,0010 | Patient's Name | Z |
0010,0101 | Patient's Primary Language Code Sequence | X |
0010,0102 | Patient's Primary Language Modifier Code Sequence | X |
0010,21F0 | Patient's Religious Preference | X |
0010,0040 | Patient's Sex | Z | K
0010,2203 | Patient's Sex Neutered | Z |
0010,1020 | Patient's Size | X | K
0038,0500 | Patient State | X |
0010,2154 | Patient's Telephone Numbers | X |
0040,1004 | Patient Transport Arrangements | X |
0010,1030 | Patient's Weight | X | K
0040,0243 | Performed Location | X |
0040,0254 | Performed Procedure Step Description | X |
0040,0250 | Performed Procedure Step End Date | X | C
0040,0251 | Performed Procedure Step End Time | X | C
0040,0253 | Performed Procedure Step ID | X |
0040,0244 | Performed Procedure Step Start Date | X | C
0040,0245 | Performed Procedure Step Start Time | X | C
0040,0241 | Performed Station AE Title | X |
0040,4030 | Performed Station Geographic Location Code Sequence | X |
0040,0242 | Performed Station Name | X |
0040,0248 | Performed Station Name Code Sequence | X |
0008,1052 | Performing Physician Identification Sequence | X |
0008,1050 | Performing Physician's Name | X |
0040,1102 | Person's Address | X |
0040,1101 | Person Identification Code Sequence | D |
0040,A123 | Person Name | D |
0040,1103 | Person's Telephone Numbers | X |
4008,0114 | Physician Approving Interpretation | X |
0008,1062 | Physician(s) Reading Study Identification Sequence | X |
0008,1048 | Physician(s) of Record | X |
0008,1049 | Physician(s) of Record Identification Sequence | X |
0040,2016 | Placer Order Number / Imaging Service Request | X |
0018,1004 | Plate ID | X |
0040,0012 | Pre-Medication | X |
0010,21C0 | Pregnancy Status | X |
0018,1030 | Protocol Name | D |
0018,1078 | Radiopharmaceutical Start DateTime | X | C
0018,1072 | Radiopharmaceutical Start Time | X | C
0018,1079 | Radiopharmaceutical Stop DateTime | X | C
0018,1073 | Radiopharmaceutical Stop Time | X | C
0040,2001 | Reason for the Imaging Service Request | X |
0032,1030 | Reason for Study | X |
0040,A13A | Referenced DateTime | D | C
0008,1140 | Referenced Image Sequence | U |
0008,1120 | Referenced Patient Sequence | X |
0008,1111 | Referenced Performed Procedure Step Sequence | U |
0008,1155 | Referenced SOP Instance UID | U |
0004,1511 | Referenced SOP Instance UID in File | U |
0008,1110 | Referenced Study Sequence | U |
3006,0024 | Referenced Frame of Reference UID | U |
0008,0092 | Referring Physician's Address | X |
0008,0096 | Referring Physician's Identification Sequence | X |
0008,0090 | Referring Physician's Name | Z |
0008,0094 | Referring Physician's Telephone Numbers | X |
3006,00C2 | Related Frame of Reference UID | U |
0040,0275 | Request Attributes Sequence | X |
0032,1070 | Requested Contrast Agent | X |
0040,1400 | Requested Procedure Comments | X |
0032,1060 | Requested Procedure Description | Z |
0040,1001 | Requested Procedure ID | X |
0040,1005 | Requested Procedure Location | X |
0032,1032 | Requesting Physician | X |
0032,1033 | Requesting Service | X |
0010,2299 | Responsible Organization | X |
0010,2297 | Responsible Person | X |
4008,4000 | Results Comments | X |
4008,0118 | Results Distribution List Sequence | X |
4008,0042 | Results ID Issuer | X |
0040,4034 | Scheduled Human Performers Sequence | X |
0038,001E | Scheduled Patient Institution Residence | X |
0040,000B | Scheduled Performing Physician Identification Sequence | X |
0040,0006 | Scheduled Performing Physician's Name | X |
0040,0004 | Scheduled Procedure Step End Date | X | C
0040,0005 | Scheduled Procedure Step End Time | X | C
0040,0007 | Scheduled Procedure Step Description | X |
0040,0011 | Scheduled Procedure Step Location | X |
0040,0002 | Scheduled Procedure Step Start Date | X | C
0040,0003 | Scheduled Procedure Step Start Time | X | C
0040,0001 | Scheduled Station AE Title | X |
0040,4027 | Scheduled Station Geographic Location Code Sequence | X |
0040,0010 | Scheduled Station Name | X |
0040,4025 | Scheduled Station Name Code Sequence | X |
0032,1020 | Scheduled Study Location | X |
0032,1021 | Scheduled Study Location AE Title | X |
0008,0021 | Series Date | D | C
0008,103E | Series Description | X |
0020,000E | Series Instance UID | U |
0008,0031 | Series Time | D | C
0038,0062 | Service Episode Description | X |
0038,0060 | Service Episode ID | X |
0010,21A0 | Smoking Status | X |
0018,1020 | Software Versions | Z |
0008,0018 | SOP Instance UID | U |
0008,2112 | Source Image Sequence | U |
0002,0016 | Source Application Entity Title | X |
0038,0050 | Special Needs | X |
0018,9516 | Start Acquisition DateTime | D | C
0008,1010 | Station Name | Z |
0018,9517 | Stop Acquisition DateTime | D | C
0088,0140 | Storage Media File-set UID | U |
0032,4000 | Study Comments | X |
0008,0020 | Study Date | Z | C
0008,1030 | Study Description | X |
0020,0010 | Study ID | Z |
0032,0012 | Study ID Issuer | X |
0020,000D | Study Instance UID | U |
0008,0030 | Study Time | Z | C
0020,0200 | Synchronization Frame of Reference UID | U |
0040,DB0D | Template Extension Creator UID | U |
0040,DB0C | Template Extension Organization UID | U |
4000,4000 | Text Comments | X |
2030,0020 | Text String | X |
0008,0201 | Timezone Offset From UTC | X |
0088,0910 | Topic Author | X |
0088,0912 | Topic Keywords | X |
0088,0906 | Topic Subject | X |
0088,0904 | Topic Title | X |
0062,0021 | Tracking UID | U |
0008,1195 | Transaction UID | U |
0018,5011 | Transducer Identification Sequence | X |
0040,A124 | UID | U |
0018,1009 | Unique Device Identifier | X |
0018,100A | UDI Sequence | X |
0040,A088 | Verifying Observer Identification Code Sequence | Z |
0040,A075 | Verifying Observer Name | D |
0040,A073 | Verifying Observer Sequence | D |
0040,A027 | Verifying Organization | X |
0038,4000 | Visit Comments | X |
0040,A030 | Verification DateTime | D | C
0040,A121 | Date | D | C
0040,A120 | DateTime | D | C
0040,A122 | Time | D | C
"""


@dataclass(frozen=True)
class ProfileRow:
    """One row of the profile table."""

    tag: int
    name: str
    basic: Action
    with_options: Action


def _parse_table(text: str) -> dict[int, ProfileRow]:
    rows = {}
    for line in text.strip().splitlines():
        tag_text, name, basic, option = (part.strip() for part in line.split("|"))
        group, element = tag_text.split(",")
        tag = Tag(int(group, 16), int(element, 16))
        rows[int(tag)] = ProfileRow(
            int(tag), name, Action(basic), Action(option) if option else Action(basic)
        )
    return rows


#: PS3.15 Table E.1-1 rows: tag -> :class:`ProfileRow`
PROFILE: dict[int, ProfileRow] = _parse_table(_TABLE)


@dataclass(frozen=True)
class SafePrivate:
    """A private element kept for quantitation: group, private creator, element offset (0xYY)."""

    group: int
    creator: str
    offset: int
    description: str
    is_datetime: bool = False


#: private elements kept (Retain Safe Private Option) because SUV computation needs them
SAFE_PRIVATE: tuple[SafePrivate, ...] = (
    SafePrivate(0x7053, "Philips PET Private Group", 0x00, "SUV scale factor"),
    SafePrivate(0x7053, "Philips PET Private Group", 0x09, "activity concentration scale factor"),
    SafePrivate(0x0009, "GEMS_PETD_01", 0x0D, "scan DateTime (decay reference)", True),
)

_METHOD_CODES = (
    ("113100", "Basic Application Confidentiality Profile"),
    ("113107", "Retain Longitudinal Temporal Information Modified Dates Option"),
    ("113108", "Retain Patient Characteristics Option"),
    ("113111", "Retain Safe Private Option"),
)
_DUMMY = {"PN": "ANONYMOUS", "LO": "ANONYMOUS", "SH": "ANONYMOUS", "LT": "", "ST": "", "UT": ""}
_MAX_SHIFT_DAYS = 3650


class Deidentifier:
    """Keyed, deterministic de-identification of datasets (see the module docstring).

    Parameters
    ----------
    key
        Secret for the HMACs. The same key gives the same pseudonyms, date shifts and UIDs in
        every run; keep it to add later visits of the same patients to an export. Never logged.

    Examples
    --------
    >>> d = Deidentifier("secret")
    >>> d.pseudonym("PAT-1") == Deidentifier("secret").pseudonym("PAT-1")
    True
    >>> d.map_uid("1.2.3") == d.map_uid("1.2.3"), d.map_uid("1.2.3").startswith("2.25.")
    (True, True)
    """

    def __init__(self, key: str | bytes) -> None:
        if not key:
            raise IsletImagingError("the de-identification key is empty", tag="key")
        self._key = key.encode() if isinstance(key, str) else bytes(key)

    def __repr__(self) -> str:
        return "Deidentifier(key=***)"

    def _digest(self, purpose: str, value: str) -> bytes:
        return hmac.new(self._key, f"{purpose}\0{value}".encode(), hashlib.sha256).digest()

    def pseudonym(self, patient_id: str) -> str:
        """Pseudonymous patient ID (also used as patient name)."""
        code = base64.b32encode(self._digest("patient", patient_id)).decode()[:10]
        return f"ANON-{code}"

    def date_shift_days(self, patient_id: str) -> int:
        """Whole days added to every date of this patient (negative: between 1 and 10 years)."""
        n = int.from_bytes(self._digest("dates", patient_id)[:8], "big")
        return -(365 + n % (_MAX_SHIFT_DAYS - 365 + 1))

    def map_uid(self, uid: str) -> str:
        """Replacement UID (``2.25.<int>``), the same for the same input UID and key."""
        return "2.25." + str(int.from_bytes(self._digest("uid", uid)[:16], "big"))

    # ------------------------------------------------------------------ dataset
    def deidentify(self, ds: Dataset) -> Dataset:
        """Return a de-identified copy of ``ds`` (file meta included)."""
        if str(ds.get("BurnedInAnnotation", "")).upper() == "YES":
            raise IsletImagingError(
                "image has burned-in annotation; pixel data are not cleaned",
                path=getattr(ds, "filename", None),
                tag="BurnedInAnnotation",
                value="YES",
                hint="exclude this series from the export",
            )
        patient_id = str(ds.get("PatientID", "") or "")
        shift = self.date_shift_days(patient_id)
        out = copy.deepcopy(ds)
        self._clean(out, shift)
        pseudo = self.pseudonym(patient_id)
        out.PatientID = pseudo
        out.PatientName = pseudo
        out.PatientIdentityRemoved = "YES"
        out.LongitudinalTemporalInformationModified = "MODIFIED"
        out.DeidentificationMethod = f"islet-imaging {__version__}: PS3.15 E.1-1 Basic Profile"
        codes = []
        for value, meaning in _METHOD_CODES:
            item = Dataset()
            item.CodeValue = value
            item.CodingSchemeDesignator = "DCM"
            item.CodeMeaning = meaning
            codes.append(item)
        out.DeidentificationMethodCodeSequence = codes
        if hasattr(ds, "file_meta"):
            meta = copy.deepcopy(ds.file_meta)
            if "MediaStorageSOPInstanceUID" in meta:
                meta.MediaStorageSOPInstanceUID = out.SOPInstanceUID
            for keyword in ("SourceApplicationEntityTitle", "SendingApplicationEntityTitle"):
                if keyword in meta:
                    del meta[keyword]
            out.file_meta = meta
        return out

    def _clean(self, ds: Dataset, shift: int) -> None:
        creators = _private_creators(ds)
        for elem in list(ds):
            tag = int(elem.tag)
            if elem.tag.is_private:
                self._private(ds, elem, creators, shift)
                continue
            group = elem.tag.group
            if (0x6000 <= group <= 0x60FF and group % 2 == 0 and elem.tag.element >= 0x3000) or (
                0x5000 <= group <= 0x50FF and group % 2 == 0
            ):
                del ds[elem.tag]  # overlay data / comments, curves
                continue
            row = PROFILE.get(tag)
            action = row.with_options if row else _default_action(elem)
            _apply(ds, elem, action, self, shift)
            if elem.tag in ds and elem.VR == "SQ" and action is not Action.REMOVE:
                for item in ds[elem.tag].value:
                    self._clean(item, shift)

    def _private(self, ds: Dataset, elem, creators: dict[int, str], shift: int) -> None:
        tag = elem.tag
        if tag.is_private_creator:
            keep = any(s.group == tag.group and s.creator == str(elem.value) for s in SAFE_PRIVATE)
            if not keep:
                del ds[tag]
            return
        block = (tag.group << 16) | (tag.element >> 8)
        creator = creators.get(block)
        for safe in SAFE_PRIVATE:
            if (
                safe.group == tag.group
                and creator == safe.creator
                and (tag.element & 0xFF) == safe.offset
            ):
                if safe.is_datetime and elem.value:
                    elem.value = _shift_dt(str(elem.value), shift)
                return
        del ds[tag]


def _private_creators(ds: Dataset) -> dict[int, str]:
    return {
        (e.tag.group << 16) | (e.tag.element & 0xFF): str(e.value)
        for e in ds
        if e.tag.is_private and e.tag.is_private_creator
    }


def _default_action(elem) -> Action:
    if elem.VR == "PN":
        return Action.REMOVE
    if elem.VR in ("DA", "DT"):
        return Action.SHIFT
    if elem.VR == "UI":
        return Action.UID
    return Action.KEEP


def _shift_da(value: str, days: int) -> str:
    text = value.strip()
    if len(text) < 8 or not text[:8].isdigit():
        return ""
    shifted = parse_da(text[:8]) + dt.timedelta(days=days)
    return shifted.strftime("%Y%m%d")


def _shift_dt(value: str, days: int) -> str:
    text = value.strip()
    date = _shift_da(text[:8], days)
    return date + text[8:] if date else ""


def _map_values(value, func: Callable[[str], str]):
    if isinstance(value, (list, pydicom.multival.MultiValue)):
        return [func(str(v)) for v in value]
    return func(str(value)) if value not in (None, "") else value


def _apply(ds: Dataset, elem, action: Action, deid: Deidentifier, shift: int) -> None:
    if action is Action.KEEP:
        return
    if action is Action.REMOVE:
        del ds[elem.tag]
    elif action is Action.EMPTY:
        elem.value = [] if elem.VR == "SQ" else None
    elif action is Action.SHIFT:
        if elem.VR == "DA":
            elem.value = _map_values(elem.value, lambda v: _shift_da(v, shift))
        elif elem.VR == "DT":
            elem.value = _map_values(elem.value, lambda v: _shift_dt(v, shift))
        # TM: whole-day shifts leave times unchanged
    elif action is Action.UID:
        if elem.VR == "UI":
            elem.value = _map_values(
                elem.value, lambda v: v if v in UID_dictionary else deid.map_uid(v)
            )
        # sequences (X/Z/U*): kept, their items are cleaned (UIDs remapped) by the caller
    elif action is Action.DUMMY:
        if elem.VR == "SQ":
            return  # items are cleaned by the caller
        if elem.VR in ("DA", "DT", "TM"):
            _apply(ds, elem, Action.SHIFT, deid, shift)
        elif elem.VR == "UI":
            _apply(ds, elem, Action.UID, deid, shift)
        else:
            elem.value = _DUMMY.get(elem.VR)


# --------------------------------------------------------------------------- export
@dataclass
class ExportReport:
    """What :func:`export_deidentified` did."""

    written: list[Path] = field(default_factory=list)
    #: files that are not DICOM instances (ignored)
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    #: DICOM files that could not be de-identified safely (not exported)
    refused: list[tuple[Path, str]] = field(default_factory=list)
    patients: int = 0


def _iter_files(src: Path) -> Iterator[Path]:
    if src.is_file():
        yield src
        return
    for root, dirs, files in os.walk(src):
        dirs.sort()
        for name in sorted(files):
            yield Path(root) / name


def export_deidentified(
    src: str | os.PathLike,
    out: str | os.PathLike,
    *,
    key: str | bytes | None = None,
) -> ExportReport:
    """De-identify every DICOM file under ``src`` into ``out`` (inputs are never modified).

    Files are written atomically as ``out/<pseudonym>/<study UID>/<series UID>/<SOP UID>.dcm``
    (new UIDs); an existing file is never overwritten (:class:`IsletImagingError`). Non-DICOM
    files are listed in ``report.skipped``, files refused (burned-in annotation) in
    ``report.refused``.

    Parameters
    ----------
    src
        File or folder tree of DICOM files.
    out
        Output folder (created).
    key
        HMAC secret: with the same key, pseudonyms, date shifts and UIDs are the same across
        runs (export later visits with the same key). Default: a random key, so nothing links
        this export to another one.
    """
    src, out = Path(src), Path(out)
    if not src.exists():
        raise IsletImagingError("no such file or folder", path=src, tag="SRC")
    if out.resolve() == src.resolve() or src.resolve() in out.resolve().parents:
        raise IsletImagingError(
            "the output folder must not be inside the input", path=out, tag="OUT"
        )
    deid = Deidentifier(key if key else secrets.token_bytes(32))
    report = ExportReport()
    patients = set()
    for path in _iter_files(src):
        try:
            ds = pydicom.dcmread(path)
        except (pydicom.errors.InvalidDicomError, OSError) as exc:
            report.skipped.append((path, f"not DICOM: {type(exc).__name__}"))
            continue
        if "SOPInstanceUID" not in ds:
            report.skipped.append((path, "no SOPInstanceUID (DICOMDIR or not a stored instance)"))
            continue
        try:
            clean = deid.deidentify(ds)
        except IsletImagingError as exc:
            report.refused.append((path, exc.message))
            continue
        patients.add(clean.PatientID)
        target = (
            out
            / str(clean.PatientID)
            / str(clean.get("StudyInstanceUID", "nostudy"))
            / str(clean.get("SeriesInstanceUID", "noseries"))
            / f"{clean.SOPInstanceUID}.dcm"
        )
        write_object(clean, target)
        report.written.append(target)
    report.patients = len(patients)
    return report
