"""scan(): folders, junk files, zip archives, DICOMDIR; the `islet-imaging scan` command."""

from __future__ import annotations

import json
import shutil
import tempfile
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pydicom
import pytest
from _dicom_synth import datasets, rotation, volume, write
from pydicom.data import get_testdata_file
from pydicom.fileset import FileSet

import islet_imaging as ii
from islet_imaging.cli import main
from islet_imaging.errors import DicomSeriesError

ORIENTATION = {
    "siemens_t1w_sag_classic": "sagittal",
    "siemens_t1w_sag_enhanced": "sagittal",
    "philips_t1w_ax_enhanced": "axial",
    "ge_epi_ax_ffs_vol1": "axial",
    "canon_dti_b0_oblique": "oblique",
    "pet_nema_phantom": "axial",
    "philips_dual_echo_mag_phase": "axial",
}


def test_scan_real_data(testdata, reference):
    index = ii.scan(testdata)
    by_uid = {s.series_uid: s for s in index.series}
    for folder, label in ORIENTATION.items():
        native = reference[folder]["dicom_native"][0]
        entry = (
            by_uid[native["series_uid"]]
            if native["series_uid"]
            else next(s for s in index.series if s.modality == "PT")
        )
        assert entry.orientation == label, folder
        assert entry.n_frames == sum(
            n["n_frames"] for n in reference[folder]["dicom_native"]
        ) + len(reference[folder].get("non_image_objects", [])), folder
    localizer = next(s for s in index.series if s.description == "3-Plane Localizer")
    assert localizer.orientation == "mixed"
    assert localizer.n_instances == 21
    dual = by_uid[reference["philips_dual_echo_mag_phase"]["dicom_native"][0]["series_uid"]]
    assert len(dual.image_types) == 2
    assert {p.path.rsplit("/", 1)[-1] for p in index.problems} == {
        "README.md",
        "SHA256SUMS",
        "reference.json",
    }
    assert all("not a DICOM file" in p.reason for p in index.problems)
    text = json.dumps(index.to_dict())
    names = {
        str(pydicom.dcmread(f, stop_before_pixels=True).get("PatientName", ""))
        for f in localizer.files[:1]
    }
    assert all(n not in text for n in names if n)


def test_junk_and_truncated_files_do_not_stop_the_scan(tmp_path):
    files = write(volume(shape=(4, 8, 8)), tmp_path / "series")
    (tmp_path / "notes.txt").write_text("not dicom")
    (tmp_path / "empty.dcm").write_bytes(b"")
    data = files[0].read_bytes()
    (tmp_path / "header_cut.dcm").write_bytes(data[:400])
    (tmp_path / "pixels_cut.dcm").write_bytes(data[:-20])
    (tmp_path / "sub").mkdir()
    index = ii.scan(tmp_path)
    assert len(index.series) == 1
    assert index.series[0].n_instances == 4
    reasons = {p.path.rsplit("/", 1)[-1]: p.reason for p in index.problems}
    assert set(reasons) == {"notes.txt", "empty.dcm", "header_cut.dcm", "pixels_cut.dcm"}
    assert "not a DICOM file" in reasons["notes.txt"]
    assert "not a DICOM file" in reasons["empty.dcm"]
    assert "truncated" in reasons["header_cut.dcm"]
    assert "truncated" in reasons["pixels_cut.dcm"]
    assert "7FE0,0010" in reasons["pixels_cut.dcm"]
    # the broken files are not mistaken for slices: the series still loads
    loaded = ii.load_series(index.series[0])
    assert loaded.shape == (4, 8, 8)


def test_scan_groups_patients_studies_series(tmp_path):
    write(volume(shape=(2, 4, 4)), tmp_path / "a", patient_id="P1", series_number=3, uid_seed=1)
    write(volume(shape=(2, 4, 4)), tmp_path / "b", patient_id="P1", series_number=1, uid_seed=1)
    write(
        volume(shape=(3, 4, 4), direction=rotation(0, 90, 0)),
        tmp_path / "c",
        patient_id="P2",
        uid_seed=2,
    )
    index = ii.scan(tmp_path)
    assert [p.patient_id for p in index.patients] == ["P1", "P2"]
    p1 = index.patients[0]
    assert len(p1.studies) == 1
    assert [s.series_number for s in p1.studies[0].series] == [1, 3]
    assert index.patients[1].studies[0].series[0].orientation == "sagittal"
    assert index.find(index.series[2].series_uid) is index.series[2]
    with pytest.raises(ii.IsletImagingError, match="no such series"):
        index.find("1.2.3")


def test_zip_archive_and_unsafe_members(tmp_path):
    vol = volume(shape=(3, 6, 6), direction=rotation(0, 0, 30))
    files = write(vol, tmp_path / "src")
    archive = tmp_path / "study.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in files:
            zf.write(f, f"DICOM/{f.name}")
        zf.writestr("../evil.dcm", files[0].read_bytes())
        zf.writestr("/abs.dcm", files[0].read_bytes())
        zf.writestr("readme.txt", "hello")
    index = ii.scan(archive)
    assert len(index.series) == 1
    entry = index.series[0]
    assert entry.files[0] == f"{archive}/DICOM/{files[0].name}"
    unsafe = [p for p in index.problems if "leaves the archive root" in p.reason]
    assert sorted(p.path.rsplit("/", 1)[-1] for p in unsafe) == ["abs.dcm", "evil.dcm"]
    assert any(p.path.endswith("readme.txt") for p in index.problems)
    assert not (tmp_path.parent / "evil.dcm").exists()
    loaded = ii.load_series(entry)
    np.testing.assert_array_equal(loaded.array, vol.array)
    assert loaded.same_grid(vol, atol=1e-4)
    np.testing.assert_array_equal(ii.load_series(archive).array, vol.array)


def test_dicomdir_file_set(tmp_path, monkeypatch):
    vol = volume(shape=(4, 5, 5))
    (tmp_path / "stage").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "stage"))  # FileSet's staging
    fs = FileSet()
    for ds in datasets(vol):
        fs.add(ds)
    fs.write(tmp_path / "media")
    fs._stage["t"].cleanup()  # FileSet keeps a TemporaryDirectory open until garbage collection
    dicomdir = tmp_path / "media" / "DICOMDIR"
    index = ii.scan(dicomdir)
    assert len(index.series) == 1
    assert index.series[0].n_instances == 4
    assert not index.problems
    np.testing.assert_array_equal(ii.load_series(dicomdir).array, vol.array)
    # a record pointing outside the DICOMDIR folder is refused
    ds = pydicom.dcmread(dicomdir)
    record = next(r for r in ds.DirectoryRecordSequence if "ReferencedFileID" in r)
    outside = tmp_path / "outside.dcm"
    shutil.copy(tmp_path / "media" / "/".join(record.ReferencedFileID), outside)
    with warnings.catch_warnings():  # '..' is not a valid CS value: that is the point
        warnings.simplefilter("ignore", UserWarning)
        record.ReferencedFileID = ["..", "outside.dcm"]
        ds.save_as(dicomdir)
    index = ii.scan(dicomdir)
    assert index.series[0].n_instances == 3
    assert any("leaves the DICOMDIR folder" in p.reason for p in index.problems)


def test_scan_missing_path(tmp_path):
    with pytest.raises(ii.IsletImagingError, match="path not found"):
        ii.scan(tmp_path / "nothing")


def test_progress_bar_on_request(tmp_path, capsys):
    write(volume(shape=(3, 4, 4)), tmp_path)
    index = ii.scan(tmp_path, progress=True)
    assert len(index.series) == 1
    assert capsys.readouterr().out == ""


def test_cli_scan_table_and_json(tmp_path, capsys):
    write(
        volume(shape=(3, 4, 4)), tmp_path, series_description="T1 forearm", patient_name="DOE^JANE"
    )
    (tmp_path / "junk.bin").write_bytes(b"\x00" * 10)
    assert main(["scan", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "T1 forearm" in out
    assert "axial" in out
    assert "junk.bin" in out
    assert "DOE" not in out
    assert main(["scan", str(tmp_path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    series = data["patients"][0]["studies"][0]["series"][0]
    assert series["n_instances"] == 3
    assert series["description"] == "T1 forearm"
    assert data["problems"][0]["path"].endswith("junk.bin")
    assert "DOE" not in json.dumps(data)


@pytest.mark.parametrize("source", ["synthetic", "examples_jpeg2k.dcm"])
def test_a_file_cut_at_any_byte_of_its_header_is_reported_not_raised(tmp_path, source):
    if source == "synthetic":
        data = write(volume(shape=(1, 8, 8)), tmp_path / "whole")[0].read_bytes()
    else:  # undefined-length sequences and items, JPEG 2000
        data = Path(get_testdata_file(source)).read_bytes()
    header_end = data.index(b"\xe0\x7f\x10\x00")  # (7FE0,0010) PixelData
    cut = tmp_path / "cut"
    cut.mkdir()
    for n in range(132, header_end + 12):
        (cut / f"{n:05d}.dcm").write_bytes(data[:n])
    index = ii.scan(cut)
    reasons = [p.reason for p in index.problems]
    expected = ("truncated file", "without SeriesInstanceUID")
    assert all(any(e in r for e in expected) for r in reasons), set(reasons)
    # a cut between two elements leaves a valid (shorter) dataset: listed, but no image in it
    listed = [Path(f) for s in index.series for f in s.files]
    assert len(listed) + len(reasons) == header_end + 12 - 132
    for path in listed:
        with pytest.raises(DicomSeriesError, match=path.name):
            ii.load_series([path])
