"""DICOM SR (TID 1500): measurements to SR and back, values equal, linked to the SEG segments."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from _exchange_helpers import dciodvfy

from islet_imaging.errors import DicomSeriesError, IsletImagingError
from islet_imaging.io.dicom import load_series
from islet_imaging.io.files import read_mask
from islet_imaging.io.seg import build_seg, seg_segments, write_seg
from islet_imaging.io.sr import build_sr, read_sr, write_sr
from islet_imaging.measure.records import measure_graft


@pytest.fixture(scope="module")
def measured(phantom_study: Path, tmp_path_factory):
    """Phantom visit 0: MR T2, SUV PET, truth deposit labels, H4's measurement table, a SEG."""
    visit = phantom_study / "dicom" / "ISLET-001" / "V0"
    mr = load_series(visit / "T2")
    pet = load_series(visit / "PET", units="suvbw")
    labels = read_mask(phantom_study / "truth" / "ISLET-001" / "V0" / "deposit_labels.nii.gz")
    labels = labels.with_array(labels.array.astype(np.uint16)).as_mask()
    table = measure_graft(labels, mr=mr, suv=pet, pvc=(), shape=False)
    seg_path = write_seg(labels, mr, tmp_path_factory.mktemp("sr") / "seg.dcm", include_graft=True)
    return mr, pet, labels, table, seg_path


def test_measure_graft_table_round_trips_through_sr(measured, tmp_path):
    mr, pet, labels, table, seg_path = measured
    path = write_sr(table, seg_path, [mr, pet], tmp_path / "sr.dcm", time_point="baseline")
    warnings = dciodvfy(path)
    print("dciodvfy warnings (SR):", warnings)

    back = read_sr(path)
    exported = table[table["metric"].isin(["volume", "suv_max", "suv_mean", "suv_peak"])]
    exported = exported[exported["object"] != "reference"]
    assert len(back) == len(exported) > 0
    expected = {(o.lower(), m): v for o, m, v in exported[["object", "metric", "value"]].values}
    got = {(o, m): v for o, m, v in back[["object", "metric", "value"]].values}
    assert got == expected  # exact float equality (FloatingPointValue)

    n = int(labels.array.max())
    assert set(back["object"]) == {"graft", *(f"deposit {k}" for k in range(1, n + 1))}
    units = dict(zip(back["metric"], back["unit"], strict=False))
    assert units["volume"] == "ml"
    assert units["suv_max"] == units["suv_mean"] == units["suv_peak"] == "{SUVbw}g/ml"
    assert set(back.loc[back["metric"] != "volume", "quantity"]) == {"SUVbw"}
    assert set(back["time_point"]) == {"baseline"}

    # every group references the SEG segment with the same tracking identifier and UID
    segments = {s.tracking_id: s for s in seg_segments(seg_path)}
    seg_uid = pydicom.dcmread(seg_path).SOPInstanceUID
    for row in back.itertuples():
        assert row.seg_sop_instance_uid == seg_uid
        assert segments[row.object].number == row.segment_number
        assert segments[row.object].tracking_uid == row.tracking_uid

    ds = pydicom.dcmread(path)
    assert ds.StudyInstanceUID == mr.meta["study_uid"]
    evidence = {
        s.SeriesInstanceUID
        for study in ds.CurrentRequestedProcedureEvidenceSequence
        for s in study.ReferencedSeriesSequence
    }
    assert {mr.meta["series_uid"], pet.meta["series_uid"]} <= evidence


def test_hand_made_table_with_labels_and_awkward_values(measured, tmp_path):
    mr, _, labels, _, _ = measured
    seg = build_seg(labels, mr, include_graft=True)
    values = [0.1 + 0.2, 1 / 3, 123456.78901234567, 2.5e-7]
    table = pd.DataFrame(
        {
            "object": ["deposit", "deposit", "graft", "deposit"],
            "label": [1, 2, 0, 2],
            "metric": ["volume", "suv_max", "volume", "SUVpeak"],
            "value": values,
            "unit": ["mL", "SUVlbm", "mL", "SUVlbm"],
            "method": ["voxel_count", "max_voxel", "voxel_count", "percist_1ml_sphere"],
        }
    )
    back = read_sr(build_sr(table, seg, mr))
    got = {(o, m): v for o, m, v in back[["object", "metric", "value"]].values}
    assert got == {
        ("deposit 1", "volume"): values[0],
        ("deposit 2", "suv_max"): values[1],
        ("graft", "volume"): values[2],
        ("deposit 2", "suv_peak"): values[3],
    }
    assert set(back.loc[back["metric"] != "volume", "unit"]) == {"{SUVlbm}g/ml"}


def test_errors(measured, tmp_path, exchange_series):
    mr, _, labels, table, _ = measured
    deposits_only = build_seg(labels, mr)  # no "graft" segment
    with pytest.raises(IsletImagingError, match="no segment in the SEG") as info:
        build_sr(table, deposits_only, mr)
    assert "graft" in str(info.value)
    with pytest.raises(IsletImagingError, match="no exportable"):
        build_sr(table.assign(metric="mr_mean"), deposits_only, mr)
    with pytest.raises(IsletImagingError, match="required column"):
        build_sr(table.drop(columns=["metric"]), deposits_only, mr)
    with pytest.raises(DicomSeriesError, match="Comprehensive 3D SR"):
        read_sr(exchange_series["mr"][0])
