"""CLI end to end on a phantom DICOM study: segment -> mask + sidecar -> measure -> CSV/JSON."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from islet_imaging.cli import main
from islet_imaging.io.files import read_mask


def test_segment_then_measure_from_dicom(phantom_study, tmp_path, capsys):
    visit_dir = phantom_study / "dicom" / "ISLET-001" / "V0"
    truth = json.loads((phantom_study / "truth" / "ISLET-001" / "V0" / "truth.json").read_text())
    mask_path = tmp_path / "graft.nii.gz"
    assert main(["segment", str(visit_dir), "-o", str(mask_path)]) == 0
    labels = read_mask(mask_path)
    volume = np.count_nonzero(labels.array) * labels.voxel_volume_ml
    assert volume == pytest.approx(truth["graft"]["volume_ml_analytic"], rel=0.05)
    sidecar = json.loads((tmp_path / "graft.json").read_text())
    assert sidecar["method"] == "mr_reference"
    assert sidecar["source_series_uid"] == truth["series"]["t2"]["series_uid"]
    # never overwrite silently
    assert main(["segment", str(visit_dir), "-o", str(mask_path)]) == 2
    assert "overwrite" in capsys.readouterr().err

    csv = tmp_path / "m.csv"
    code = main(
        [
            "measure",
            "--mask",
            str(mask_path),
            "--mr",
            str(visit_dir),
            "--pet",
            str(visit_dir),
            "--fwhm",
            str(truth["pet"]["psf_fwhm_mm"]),
            "--csv",
            str(csv),
        ]
    )
    assert code == 0
    table = pd.read_csv(csv)
    row = table.set_index(["object", "metric", "method"])["value"]
    assert row["graft", "volume", "voxel_count"] == pytest.approx(volume)
    assert (
        row["graft", "suv_max", "max_voxel"]
        > 3 * row["reference", "suv_mean", "occupancy_weighted_mean"]
    )
    assert set(table["mask_method"]) == {"mr_reference"}
    assert set(table.loc[table["metric"] == "suv_mean", "image_series_uid"]) == {
        truth["series"]["pet"]["series_uid"]
    }
    assert "PHANTOM" not in csv.read_text()  # no patient name in exports

    out_json = tmp_path / "m.json"
    assert (
        main(["measure", "--mask", str(mask_path), "--mr", str(visit_dir), "--json", str(out_json)])
        == 0
    )
    records = json.loads(out_json.read_text())
    assert {r["metric"] for r in records} >= {"volume", "mr_mean", "mr_cnr"}


def test_pet_segmentation_cli(phantom_study, tmp_path):
    visit_dir = phantom_study / "dicom" / "ISLET-001" / "V0"
    out = tmp_path / "pet.nii.gz"
    assert (
        main(
            [
                "segment",
                str(visit_dir),
                "--modality",
                "pet",
                "--fraction",
                "0.41",
                "-o",
                str(out),
                "--min-volume-mm3",
                "0",
            ]
        )
        == 0
    )
    sidecar = json.loads((tmp_path / "pet.json").read_text())
    assert sidecar["method"] == "pet_percent_max"
    assert sidecar["parameters"]["fraction"] == 0.41
    assert read_mask(out).array.max() >= 1


def test_measure_needs_an_image(tmp_path, capsys):
    from islet_imaging.io.files import write_volume
    from islet_imaging.volume import Volume

    path = write_volume(Volume(np.ones((2, 2, 2), np.uint8)), tmp_path / "m.nii.gz")
    assert main(["measure", "--mask", str(path)]) == 2
    assert "--mr" in capsys.readouterr().err
