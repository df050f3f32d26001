"""De-identified export: PS3.15 basic profile checked tag by tag, consistent pseudonyms, dates and
UIDs across visits and runs, SUV unchanged."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataelem import RawDataElement
from pydicom.tag import Tag
from pydicom.uid import UID_dictionary

from islet_imaging.cli import main
from islet_imaging.errors import IsletImagingError
from islet_imaging.io.deidentify import (
    PROFILE,
    SAFE_PRIVATE,
    Action,
    Deidentifier,
    export_deidentified,
)
from islet_imaging.io.dicom import load_series
from islet_imaging.io.pet import to_suv
from islet_imaging.io.seg import read_seg, write_seg

KEY = "test-key-0123"
OWN = {"PatientIdentityRemoved", "DeidentificationMethod", "DeidentificationMethodCodeSequence",
       "LongitudinalTemporalInformationModified", "PatientID", "PatientName"}  # fmt: skip


@pytest.fixture(scope="module")
def source(phantom_study: Path, exchange_series, tmp_path_factory) -> Path:
    """Two phantom visits (T2 + PET) + the PHI-rich test series + a SEG on the test MR."""
    src = tmp_path_factory.mktemp("deid_src")
    for visit in ("V0", "V1"):
        for series in ("T2", "PET"):
            shutil.copytree(
                phantom_study / "dicom" / "ISLET-001" / visit / series, src / visit / series
            )
    for name, files in exchange_series.items():
        for f in files:
            (src / "test" / name).mkdir(parents=True, exist_ok=True)
            shutil.copy(f, src / "test" / name / f.name)
    mr = load_series(exchange_series["mr"])
    mask = np.zeros(mr.shape, bool)
    mask[2:4, 3:6, 3:6] = True
    write_seg(mr.with_array(mask), mr, src / "test" / "seg" / "seg.dcm")
    (src / "README.txt").write_text("not DICOM")
    return src


@pytest.fixture(scope="module")
def exported(source: Path, tmp_path_factory):
    out = tmp_path_factory.mktemp("deid_out") / "export"
    report = export_deidentified(source, out, key=KEY)
    return out, report


def _by_sop(paths):
    return {pydicom.dcmread(p).SOPInstanceUID: p for p in paths}


def _shift(value: str, days: int) -> str:
    date = dt.datetime.strptime(value[:8], "%Y%m%d").date() + dt.timedelta(days=days)
    return date.strftime("%Y%m%d") + value[8:]


def _check(orig: pydicom.Dataset, new: pydicom.Dataset, deid: Deidentifier, days: int, where=""):
    """Every attribute of ``orig`` got the action of the profile table in ``new``."""
    creators = {
        (e.tag.group << 16) | (e.tag.element & 0xFF): str(e.value)
        for e in orig
        if e.tag.is_private and e.tag.is_private_creator
    }
    for elem in orig:
        tag, name = elem.tag, f"{where}{elem.keyword or elem.tag}"
        if tag.is_private:
            safe = not tag.is_private_creator and any(
                s.group == tag.group
                and creators.get((tag.group << 16) | (tag.element >> 8)) == s.creator
                and (tag.element & 0xFF) == s.offset
                for s in SAFE_PRIVATE
            )
            if safe:
                expected = _shift(str(elem.value), days) if elem.VR == "DT" else elem.value
                assert new[tag].value == expected, name
            elif not tag.is_private_creator:
                assert tag not in new, f"private {name} kept"
            continue
        if elem.keyword in OWN:
            continue
        row = PROFILE.get(int(tag))
        action = row.with_options if row else None
        if action is None:  # not in the table: safety nets, else kept
            if elem.VR == "PN":
                action = Action.REMOVE
            elif elem.VR in ("DA", "DT"):
                action = Action.SHIFT
            elif elem.VR == "UI":
                action = Action.UID
            elif elem.VR == "SQ":
                action = Action.KEEP
            else:
                assert new[tag].value == elem.value, name
                continue
        if action is Action.REMOVE:
            assert tag not in new, f"{name} not removed"
        elif action is Action.EMPTY:
            assert tag in new, name
            assert not new[tag].value, name
        elif action is Action.SHIFT:
            if elem.VR in ("DA", "DT") and elem.value:
                assert new[tag].value == _shift(str(elem.value), days), name
            else:
                assert new[tag].value == elem.value, name
        elif action is Action.UID and elem.VR == "UI":
            values = list(elem.value) if elem.VM > 1 else [elem.value]
            mapped = [v if v in UID_dictionary else deid.map_uid(v) for v in values]
            got = new[tag].value
            got = list(got) if new[tag].VM > 1 else [got]
            assert got == mapped, name
            assert all(v in UID_dictionary or v not in got for v in values), name
        elif action is Action.DUMMY and elem.VR not in ("SQ", "DA", "DT", "TM", "UI"):
            assert new[tag].value != elem.value or not elem.value, name
        if elem.VR == "SQ" and tag in new and action is not Action.REMOVE:
            for i, (a, b) in enumerate(zip(elem.value, new[tag].value, strict=True)):
                _check(a, b, deid, days, where=f"{name}[{i}].")


def test_every_tag_follows_the_profile(source, exported):
    out, report = exported
    deid = Deidentifier(KEY)
    originals = [p for p in source.rglob("*.dcm")]
    assert len(report.written) == len(originals)
    assert [p.name for p, _ in report.skipped] == ["README.txt"]
    assert not report.refused
    for path in originals:
        orig = pydicom.dcmread(path)
        new_path = (
            out
            / deid.pseudonym(orig.PatientID)
            / deid.map_uid(orig.StudyInstanceUID)
            / deid.map_uid(orig.SeriesInstanceUID)
            / f"{deid.map_uid(orig.SOPInstanceUID)}.dcm"
        )
        new = pydicom.dcmread(new_path)
        _check(orig, new, deid, deid.date_shift_days(orig.PatientID))
        assert new.PatientID == new.PatientName == deid.pseudonym(orig.PatientID)
        assert new.PatientIdentityRemoved == "YES"
        assert new.LongitudinalTemporalInformationModified == "MODIFIED"
        codes = {item.CodeValue for item in new.DeidentificationMethodCodeSequence}
        assert {"113100", "113107", "113108", "113111"} <= codes
        assert new.file_meta.MediaStorageSOPInstanceUID == new.SOPInstanceUID
        raw = new_path.read_bytes()
        for phi in (orig.PatientID, str(orig.PatientName), "19700101", "Lille", "Smith",
                    "Tech^Anne", "SN-12345", "ACC001"):  # fmt: skip
            assert phi.encode() not in raw, f"{phi} left in {new_path.name}"
        # geometry kept
        if "ImagePositionPatient" in orig:
            assert new.ImagePositionPatient == orig.ImagePositionPatient
            assert new.ImageOrientationPatient == orig.ImageOrientationPatient
            assert new.PixelSpacing == orig.PixelSpacing


def test_consistent_across_visits_files_and_runs(source, exported, tmp_path):
    out, _ = exported
    deid = Deidentifier(KEY)
    pseudo = deid.pseudonym("ISLET-001")
    studies = sorted((out / pseudo).iterdir())
    assert len(studies) == 2  # two visits, one pseudonymous patient folder
    dates = {}
    for visit in ("V0", "V1"):
        orig = pydicom.dcmread(next((source / visit / "T2").iterdir()))
        new_dir = out / pseudo / deid.map_uid(orig.StudyInstanceUID)
        new = pydicom.dcmread(next(new_dir.rglob("*.dcm")))
        dates[visit] = (orig.StudyDate, new.StudyDate)
        # MR and PET of a visit keep sharing their (remapped) frame of reference
        pet = pydicom.dcmread(next((source / visit / "PET").iterdir()))
        assert pet.FrameOfReferenceUID == orig.FrameOfReferenceUID
        frames = {pydicom.dcmread(p).FrameOfReferenceUID for p in new_dir.rglob("*.dcm")}
        assert frames == {deid.map_uid(orig.FrameOfReferenceUID)}

    def days(a, b):
        return (dt.date.fromisoformat(_iso(b)) - dt.date.fromisoformat(_iso(a))).days

    assert days(dates["V0"][0], dates["V1"][0]) == days(dates["V0"][1], dates["V1"][1])
    assert days(dates["V0"][0], dates["V0"][1]) == deid.date_shift_days("ISLET-001") < 0

    # a later export of one visit with the same key gives the same names and UIDs
    again = export_deidentified(source / "V1", tmp_path / "again", key=KEY)
    first = {p.relative_to(out) for p in out.rglob("*.dcm")}
    assert {p.relative_to(tmp_path / "again") for p in again.written} <= first
    # another key links nothing
    other = export_deidentified(source / "V1", tmp_path / "other", key="another key")
    assert not {p.relative_to(tmp_path / "other") for p in other.written} & first


def _iso(date: str) -> str:
    return f"{date[:4]}-{date[4:6]}-{date[6:8]}"


def test_seg_references_follow_the_remapped_images(exported, exchange_series):
    out, _ = exported
    deid = Deidentifier(KEY)
    mr = load_series(exchange_series["mr"])
    new_mr_dir = (
        out / deid.pseudonym("PAT-001") / deid.map_uid(mr.meta["study_uid"])
        / deid.map_uid(mr.meta["series_uid"])
    )  # fmt: skip
    new_mr = load_series(new_mr_dir)
    (seg_path,) = [
        p
        for p in out.rglob("*.dcm")
        if pydicom.dcmread(p, stop_before_pixels=True).Modality == "SEG"
    ]
    seg = read_seg(seg_path, reference=new_mr)
    assert seg.meta["referenced_series_uid"] == new_mr.meta["series_uid"]
    assert seg.array.sum() == 2 * 3 * 3
    np.testing.assert_array_equal(new_mr.array, mr.array)


def test_suv_is_unchanged(source, exported):
    out, _ = exported
    deid = Deidentifier(KEY)
    for pet_dir in (source / "V0" / "PET", source / "test" / "pet"):
        orig = load_series(pet_dir)
        new_dir = (
            out / deid.pseudonym(orig.meta["patient_id"]) / deid.map_uid(orig.meta["study_uid"])
            / deid.map_uid(orig.meta["series_uid"])
        )  # fmt: skip
        suv_orig, suv_new = to_suv(orig), to_suv(load_series(new_dir))
        assert np.array_equal(suv_orig.array, suv_new.array)
        assert suv_new.meta["units"] == "SUVbw"
        assert float(suv_orig.array.max()) > 0


def test_never_overwrites_and_cli(source, exported, tmp_path, capsys):
    out, first = exported
    before = {p: p.read_bytes() for p in first.written}
    again = export_deidentified(source / "V0", out, key=KEY)  # every target exists: refused
    assert again.written == []
    assert again.refused
    assert all("not overwriting" in r for _, r in again.refused)
    assert {p: p.read_bytes() for p in first.written} == before
    with pytest.raises(IsletImagingError, match="inside the input"):
        export_deidentified(source, source / "out", key=KEY)
    burned = pydicom.dcmread(next((source / "test" / "mr").iterdir()))
    burned.BurnedInAnnotation = "YES"
    (tmp_path / "in").mkdir()
    burned.save_as(tmp_path / "in" / "burned.dcm")
    shutil.copytree(source / "test" / "pet", tmp_path / "in" / "pet")
    code = main(["export", str(tmp_path / "in"), str(tmp_path / "cli"), "--deidentify",
                 "--key", "cli-secret-key"])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 1  # the burned-in file was refused
    assert "NOT exported" in captured.err
    assert "burned-in" in captured.err
    assert "exported 6 file(s) of 1 patient(s)" in captured.out
    assert "cli-secret-key" not in captured.out + captured.err
    assert "Doe" not in captured.out + captured.err


def test_phi_removed_and_quantitation_kept_explicitly(source, exported):
    out, _ = exported
    deid = Deidentifier(KEY)
    orig = pydicom.dcmread(next((source / "test" / "pet").iterdir()))
    days = deid.date_shift_days("PAT-001")
    new = pydicom.dcmread(
        out / deid.pseudonym("PAT-001") / deid.map_uid(orig.StudyInstanceUID)
        / deid.map_uid(orig.SeriesInstanceUID) / f"{deid.map_uid(orig.SOPInstanceUID)}.dcm"
    )  # fmt: skip
    assert new.PatientBirthDate == ""
    assert "InstitutionAddress" not in new
    assert "PatientAge" not in new
    assert new.InstitutionName == ""
    assert (0x0029, 0x1010) not in new  # unknown private PHI dropped
    assert new.PatientWeight == orig.PatientWeight
    assert new.PatientSize == orig.PatientSize
    assert new.Units == "BQML"
    assert new.DecayCorrection == "START"
    drug = new.RadiopharmaceuticalInformationSequence[0]
    drug0 = orig.RadiopharmaceuticalInformationSequence[0]
    assert drug.RadionuclideTotalDose == drug0.RadionuclideTotalDose
    assert drug.RadiopharmaceuticalStartTime == drug0.RadiopharmaceuticalStartTime
    start0 = drug0.RadiopharmaceuticalStartDateTime
    assert drug.RadiopharmaceuticalStartDateTime == _shift(start0, days)
    assert new.SeriesTime == orig.SeriesTime
    assert new.SeriesDate == _shift(orig.SeriesDate, days) != orig.SeriesDate
    philips, philips0 = (d.private_block(0x7053, "Philips PET Private Group") for d in (new, orig))
    assert philips[0x00].value == philips0[0x00].value
    assert philips[0x09].value == philips0[0x09].value
    ge, ge0 = (d.private_block(0x0009, "GEMS_PETD_01")[0x0D].value for d in (new, orig))
    assert ge == _shift(ge0, days)


# pydicom warns about the invalid date written and read on purpose here
@pytest.mark.filterwarnings("ignore:Invalid value for VR DA")
def test_corrupt_files_duplicates_and_bad_dates_do_not_stop_the_export(exchange_series, tmp_path):
    mr = sorted(exchange_series["mr"])
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(mr[0], src / "a.dcm")
    shutil.copy(mr[0], src / "b_same_instance.dcm")  # a duplicate instance
    data = mr[1].read_bytes()
    cut = data.index(b"\xe0\x7f\x10\x00OW") + 10  # inside the length of PixelData
    (src / "c_truncated.dcm").write_bytes(data[:cut])
    bad = pydicom.dcmread(mr[2])
    bad.SeriesDate = "20241399"  # not a date
    bad.save_as(src / "d_bad_date.dcm")
    shutil.copy(mr[3], src / "e_last.dcm")
    report = export_deidentified(src, tmp_path / "out", key=KEY)
    refused = {p.name: reason for p, reason in report.refused}
    assert set(refused) == {"b_same_instance.dcm", "c_truncated.dcm"}
    assert "not overwriting" in refused["b_same_instance.dcm"]
    assert "truncated or corrupt" in refused["c_truncated.dcm"]
    assert len(report.written) == 3  # a, d (date emptied) and e: the export went on
    deid = Deidentifier(KEY)
    by_sop = {pydicom.dcmread(p).SOPInstanceUID: pydicom.dcmread(p) for p in report.written}
    assert by_sop[deid.map_uid(bad.SOPInstanceUID)].SeriesDate == ""


def test_file_meta_and_preamble_carry_nothing_identifying(exchange_series, tmp_path):
    ds = pydicom.dcmread(sorted(exchange_series["mr"])[0])
    ds.preamble = b"II*\0 DOE^JANE St Elsewhere".ljust(128, b"\0")  # e.g. a TIFF header
    ds.file_meta.SourceApplicationEntityTitle = "ELSEWHERE_MR1"
    ds.file_meta.ReceivingApplicationEntityTitle = "ELSEWHERE_PACS"
    ds.file_meta.SourcePresentationAddress = "https://mr1.elsewhere.example"
    ds.file_meta.PrivateInformationCreatorUID = "1.2.3.4"
    ds.file_meta.PrivateInformation = b"DOE^JANE"
    (tmp_path / "in").mkdir()
    ds.save_as(tmp_path / "in" / "mr.dcm")
    (path,) = export_deidentified(tmp_path / "in", tmp_path / "out", key=KEY).written
    data = path.read_bytes()
    for text in (b"DOE", b"ELSEWHERE", b"elsewhere"):
        assert text not in data
    new = pydicom.dcmread(path)
    assert new.preamble == b"\0" * 128
    assert new.file_meta.MediaStorageSOPInstanceUID == new.SOPInstanceUID
    assert new.file_meta.TransferSyntaxUID == ds.file_meta.TransferSyntaxUID


def test_a_file_cut_at_any_byte_is_refused_never_written_broken(exchange_series, tmp_path):
    original = sorted(exchange_series["mr"])[1]
    data = original.read_bytes()
    src = tmp_path / "in"
    src.mkdir()
    for cut in range(len(data)):  # inside the preamble, the file meta, elements, the pixels
        (src / f"cut_{cut:05d}.dcm").write_bytes(data[:cut])
    corrupt = pydicom.dcmread(original)
    corrupt.PixelData = corrupt.PixelData[:-2]  # an even length, one pixel short
    corrupt.save_as(src / "short_pixels.dcm")
    odd = pydicom.dcmread(original)
    tag = Tag(0x00189089)  # an FD value of 11 bytes: not a multiple of 8, written as it is
    odd[tag] = RawDataElement(tag, "FD", 11, b"\0" * 11, 0, False, True)
    odd.save_as(src / "odd_length.dcm")
    shutil.copy(original, src / "zz_intact.dcm")

    report = export_deidentified(src, tmp_path / "out", key=KEY)  # nothing raises

    (written,) = report.written  # only the intact file, complete
    new, old = pydicom.dcmread(written), pydicom.dcmread(original)
    np.testing.assert_array_equal(new.pixel_array, old.pixel_array)
    assert new.pixel_array.shape == (old.Rows, old.Columns)
    refused = {p.name: reason for p, reason in report.refused}
    skipped = {p.name for p, _ in report.skipped}
    listed = set(refused) | skipped
    assert listed == {p.name for p in src.iterdir()} - {"zz_intact.dcm"}
    pixels = data.index(b"\xe0\x7f\x10\x00")  # the PixelData element
    sop_uid = data.index(b"\x08\x00\x18\x00UI")  # the SOPInstanceUID element
    for cut in range(132, len(data)):  # after the DICM prefix
        name = f"cut_{cut:05d}.dcm"
        if name in refused:
            assert refused[name].startswith("truncated or corrupt DICOM: ")
        else:  # cut between two elements before the SOPInstanceUID: no stored instance
            assert cut < sop_uid
            assert "no SOPInstanceUID" in dict(report.skipped)[src / name]
    assert "PixelData (7FE0,0010)" in refused[f"cut_{len(data) - 1:05d}.dcm"]
    assert "no PixelData (7FE0,0010)" in refused[f"cut_{pixels:05d}.dcm"]
    assert refused["short_pixels.dcm"].startswith("truncated or corrupt DICOM: PixelData")
    assert "(0018,9089)" in refused["odd_length.dcm"]
    values = {str(e.value) for e in old.iterall() if e.VR in ("PN", "LO", "SH", "DA", "UI")}
    for reason in refused.values():  # names the tag, never quotes a value (PHI)
        assert not any(v in reason for v in values if len(v) >= 4)
        assert "\\x" not in reason
        assert "b'" not in reason
