"""Our PS3.15 Table E.1-1 (Basic Application Level Confidentiality Profile) against an independent
copy of the standard's table.

Oracle: the PyPI package dicom-anonymizer (module ``dicomanonymizer``, Kitware), which ships
Table E.1-1 as lists of tags per action code (X, Z, D, U, Z/D, X/Z, X/D, X/Z/D, X/Z/U*) for
several editions of the standard; we use its newest edition, 2026c. It is used only as an oracle
here, none of its code runs in islet_imaging.

Every attribute of the oracle must be in our table with a compatible action (PS3.15 E.1.1) and,
when a dataset carrying it is de-identified, its original value must not survive, unless an option
listed in DeidentificationMethodCodeSequence explains why (exceptions below, each citing it).
"""

from __future__ import annotations

import copy
import datetime as dt

import pytest
from dicomanonymizer.dicomfields_selector import dicom_anonymization_database_selector
from pydicom.datadict import DicomDictionary, dictionary_VR
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset

from islet_imaging.io.deidentify import PROFILE, Action, Deidentifier

EDITION = "dicomfields_2026c"
ORACLE_DB = dicom_anonymization_database_selector(EDITION)
CATEGORIES = ("X", "Z", "D", "U", "Z_D", "X_Z", "X_D", "X_Z_D", "X_Z_U_STAR")
#: tag -> action code of the Basic Profile column (single-tag rows)
ORACLE: dict[int, str] = {
    (entry[0] << 16) | entry[1]: code
    for code in CATEGORIES
    for entry in ORACLE_DB[f"{code}_TAGS"]
    if len(entry) == 2
}
#: repeating-group rows (group, element, group mask, element mask): curves 50xx, overlays 60xx
REPEATING = [entry for entry in ORACLE_DB["X_TAGS"] if len(entry) == 4]

# PS3.15 E.1.1: X remove; Z zero length or dummy; D dummy; U UID replaced consistently;
# compound codes allow any of their parts
COMPATIBLE = {
    "X": {Action.REMOVE},
    "Z": {Action.EMPTY, Action.DUMMY},
    "D": {Action.DUMMY},
    "U": {Action.UID},
    "Z_D": {Action.EMPTY, Action.DUMMY},
    "X_Z": {Action.REMOVE, Action.EMPTY},
    "X_D": {Action.REMOVE, Action.DUMMY},
    "X_Z_D": {Action.REMOVE, Action.EMPTY, Action.DUMMY},
    "X_Z_U_STAR": {Action.REMOVE, Action.EMPTY, Action.UID},
}
# Retain Longitudinal Temporal Information with Modified Dates Option (DCM 113107): the option
# column of Table E.1-1 is C for dates and times; we shift DA/DT by whole days per patient, so TM
# (time of day) is unchanged
DATES_OPTION, DATE_VRS = "113107", {"DA", "DT", "TM"}
# Retain Patient Characteristics Option (DCM 113108): K for sex, size and weight (SUVbw needs the
# weight, SUL the sex and height); all other characteristics (age, ethnic group, ...) still go
CHARACTERISTICS_OPTION = "113108"
CHARACTERISTICS = {0x00100040, 0x00101020, 0x00101030}  # PatientSex, PatientSize, PatientWeight
# Stricter than the profile (nothing can leak): SR Content Sequence is removed instead of D,
# because its content items are not cleaned (module docstring, Limitations)
STRICTER = {0x0040A730: Action.REMOVE}


def _vr(tag: int) -> str | None:
    return dictionary_VR(tag).split(" ")[0] if tag in DicomDictionary else None


def _name(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X}) {PROFILE[tag].name if tag in PROFILE else ''}"


def test_oracle_is_the_standard_table():
    """The oracle really holds Table E.1-1 (not a handful of tags), one action per attribute."""
    assert len(ORACLE) > 600
    assert sum(len(ORACLE_DB[f"{c}_TAGS"]) for c in CATEGORIES) == len(ORACLE) + len(REPEATING)
    # rows known from the standard, one per kind of action
    assert ORACLE[0x00100030] == "Z"  # Patient's Birth Date
    assert ORACLE[0x00080081] == "X"  # Institution Address
    assert ORACLE[0x0020000D] == "U"  # Study Instance UID
    assert ORACLE[0x00189701] == "D"  # Decay Correction DateTime
    assert ORACLE[0x00081140] == "X_Z_U_STAR"  # Referenced Image Sequence
    assert {(e[0], e[1]) for e in REPEATING} == {
        (0x5000, 0x0000),
        (0x6000, 0x3000),
        (0x6000, 0x4000),
    }


def test_every_profile_attribute_has_a_compatible_row():
    method = Deidentifier("key").deidentify(Dataset()).DeidentificationMethodCodeSequence
    declared = {item.CodeValue for item in method}
    problems = []
    for tag, code in sorted(ORACLE.items()):
        row = PROFILE.get(tag)
        if row is None:
            problems.append(f"{_name(tag)}: missing (profile {code})")
            continue
        if row.basic not in COMPATIBLE[code] and STRICTER.get(tag) is not row.basic:
            problems.append(f"{_name(tag)}: {row.basic.value}, profile {code}")
        if row.with_options is row.basic:
            continue
        dates = row.with_options is Action.SHIFT and _vr(tag) in DATE_VRS
        kept = row.with_options is Action.KEEP and tag in CHARACTERISTICS
        dates = dates and DATES_OPTION in declared
        kept = kept and CHARACTERISTICS_OPTION in declared
        if not (dates or kept):
            problems.append(
                f"{_name(tag)}: {row.with_options.value} with options, no option says so"
            )
    assert not problems, "\n".join(problems)


# a PHI-like value per VR (UIDs and dates so that remapping and shifting can be recognised)
VALUES = {
    "AE": "DOE_AE", "AS": "045Y", "CS": "DOE", "DA": "20010203", "DT": "20010203040506",
    "TM": "040506", "DS": "12.5", "IS": "7", "US": 7, "PN": "Doe^John",
    "LO": "Doe John", "LT": "Doe John", "SH": "Doe John", "ST": "Doe John", "UT": "Doe John",
    "UC": "Doe John", "UI": "1.2.826.0.1.3680043.10.999.1", "UR": "http://doe.invalid/john",
    "OB": b"DOE!", "OW": b"DOE!", "UN": b"DOE!",
}  # fmt: skip
PATIENT = "PAT-PHI-1"


def _element(tag: int) -> DataElement:
    vr = _vr(tag) or "UN"  # a tag newer than pydicom's dictionary arrives as UN (implicit VR)
    if vr == "SQ":
        item = Dataset()
        item.PatientName = "Doe^John"
        item.StudyDescription = "Doe John"
        item.ReferencedSOPInstanceUID = VALUES["UI"]
        return DataElement(tag, "SQ", [item])
    return DataElement(tag, vr, VALUES[vr])


def _rich_dataset() -> Dataset:
    ds = Dataset()
    for tag in ORACLE:
        ds.add(_element(tag))
    for group, element, _, _ in REPEATING:  # instances of the repeating groups 50xx, 60xx
        for g in (group, group + 2):
            ds.add(DataElement((g << 16) | element, "OB", b"DOE!"))
    ds.PatientID = PATIENT
    return ds


def _shift(value: str, days: int) -> str:
    date = dt.datetime.strptime(value[:8], "%Y%m%d").date() + dt.timedelta(days=days)
    return date.strftime("%Y%m%d") + value[8:]


def _outcome(orig: DataElement, new: Dataset, deid: Deidentifier, days: int) -> str:
    if orig.tag not in new:
        return "removed"
    value = new[orig.tag].value
    if value in (None, "", b"") or (orig.VR == "SQ" and len(value) == 0):
        return "emptied"
    if orig.VR == "SQ":
        text = str(value)
        clean = "Doe" not in text and VALUES["UI"] not in text
        return "cleaned" if clean and deid.map_uid(VALUES["UI"]) in text else "leaks"
    if value == orig.value:
        return "unchanged"
    if orig.VR == "UI":
        return "remapped" if value == deid.map_uid(orig.value) else "replaced"
    if orig.VR in ("DA", "DT") and value == _shift(orig.value, days):
        return "shifted"
    return "replaced"


# what the action codes of the profile allow to be seen in the output; a dummy sequence
# ("cleaned") keeps its items with every profile attribute in them de-identified; D rows of
# VRs without a meaningful dummy (OB, UN, UR, AS, LT, ST, UT) are emptied
ALLOWED = {
    "X": {"removed"},
    "Z": {"emptied", "replaced", "cleaned"},
    "D": {"replaced", "emptied", "remapped", "cleaned"},
    "U": {"remapped"},
    "Z_D": {"emptied", "replaced", "cleaned"},
    "X_Z": {"removed", "emptied"},
    "X_D": {"removed", "replaced", "emptied", "cleaned"},
    "X_Z_D": {"removed", "emptied", "replaced", "cleaned"},
    "X_Z_U_STAR": {"removed", "emptied", "cleaned"},
}


@pytest.mark.parametrize("nested", [False, True], ids=["top-level", "in-sequence-item"])
def test_no_profile_attribute_survives_deidentification(nested):
    deid = Deidentifier("profile-test-key")
    days = deid.date_shift_days(PATIENT)
    inner = _rich_dataset()
    if nested:  # the profile applies in every item of a kept (non-profile) sequence too
        ds = Dataset()
        ds.PatientID = PATIENT
        ds.RadiopharmaceuticalInformationSequence = [copy.deepcopy(inner)]
        out = deid.deidentify(ds)
        new = out.RadiopharmaceuticalInformationSequence[0]
    else:
        out = new = deid.deidentify(inner)
    options = {item.CodeValue for item in out.DeidentificationMethodCodeSequence}
    assert "113100" in options  # Basic Application Confidentiality Profile
    problems = []
    for tag, code in sorted(ORACLE.items()):
        allowed = {"removed"} if tag in STRICTER else set(ALLOWED[code])
        vr = _vr(tag)
        if DATES_OPTION in options and vr in ("DA", "DT"):
            allowed.add("shifted")  # 113107: dates shifted, intervals kept
        if DATES_OPTION in options and vr == "TM":
            allowed.add("unchanged")  # 113107: whole-day shifts leave the time of day
        if CHARACTERISTICS_OPTION in options and tag in CHARACTERISTICS:
            allowed.add("unchanged")  # 113108: patient characteristics retained
        got = _outcome(inner[tag], new, deid, days)
        if got not in allowed:
            problems.append(f"{_name(tag)}: {got}, profile {code}")
    for group, element, _, _ in REPEATING:
        for g in (group, group + 2):
            if ((g << 16) | element) in new:
                problems.append(f"({g:04X},{element:04X}): not removed, profile X")
    assert not problems, "\n".join(problems)
