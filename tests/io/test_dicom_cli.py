"""`islet-imaging convert` end to end, and a dcm2niix cross-check of a synthetic oblique series."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from _dicom_synth import AFFINE_TOL_MM, canonical, rotation, volume, write

import islet_imaging as ii
from islet_imaging.cli import main

DCM2NIIX = Path(sys.executable).with_name("dcm2niix")


def test_convert_real_series_matches_dcm2niix(tmp_path, testdata, reference, capsys):
    out = tmp_path / "ge.nii.gz"
    assert main(["convert", str(testdata / "ge_epi_ax_ffs_vol1"), str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    img = nib.as_closest_canonical(nib.load(out))
    ref = reference["ge_epi_ax_ffs_vol1"]["dcm2niix"][0]
    assert list(img.shape) == ref["shape_canonical_ras"]
    np.testing.assert_allclose(img.affine, ref["affine_canonical_ras"], atol=AFFINE_TOL_MM)
    assert float(np.asarray(img.dataobj, dtype=np.float64).mean()) == pytest.approx(
        ref["mean"], rel=1e-6
    )


def test_convert_several_volumes_and_overwrite(tmp_path, testdata, capsys):
    out = tmp_path / "mixed.nrrd"
    assert main(["convert", str(testdata / "mixed_series_ge"), str(out)]) == 0
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == [
        "mixed_s5_1.nrrd",
        "mixed_s5_2.nrrd",
        "mixed_s5_3.nrrd",
        "mixed_s6_1.nrrd",
        "mixed_s7_1.nrrd",
    ]
    back = ii.read_volume(tmp_path / "mixed_s6_1.nrrd")
    assert back.meta["series_number"] == 6
    assert back.shape == (10, 64, 64)
    capsys.readouterr()
    # refuses to overwrite, exit code 2, one-line error naming the file
    assert main(["convert", str(testdata / "mixed_series_ge"), str(out)]) == 2
    err = capsys.readouterr().err
    assert "refusing to overwrite" in err
    assert "mixed_s5_1.nrrd" in err
    assert main(["convert", str(testdata / "mixed_series_ge"), str(out), "--overwrite"]) == 0


def test_convert_series_uid_and_geometry(tmp_path, testdata, reference, capsys):
    uid = reference["mixed_series_ge"]["dicom_native"][2]["series_uid"]
    out = tmp_path / "one.nii"
    assert main(["convert", str(testdata / "mixed_series_ge"), str(out), "--series-uid", uid]) == 0
    assert ii.read_volume(out).shape == (10, 64, 64)
    assert [p.name for p in tmp_path.iterdir()] == ["one.nii"]
    gap = testdata / "philips_t1w_ax_missing_slice"
    assert main(["convert", str(gap), str(tmp_path / "gap.nii.gz")]) == 2
    err = capsys.readouterr().err
    assert "0011.dcm" in err
    assert "0013.dcm" in err
    assert len(err.strip().splitlines()) == 1
    assert main(["convert", str(gap), str(tmp_path / "gap.nii.gz"), "--geometry", "resample"]) == 0
    assert "warning: irregular slice spacing" in capsys.readouterr().out
    assert ii.read_volume(tmp_path / "gap.nii.gz").shape == (24, 256, 256)


def test_dcm2niix_cross_check_on_synthetic_oblique_series(tmp_path):
    vol = volume(
        shape=(7, 20, 16), spacing=(3.3, 1.1, 0.9), direction=rotation(17, -23, 31), seed=9
    )
    write(vol, tmp_path / "dicom")
    subprocess.run(
        [
            str(DCM2NIIX),
            "-p",
            "n",
            "-z",
            "n",
            "-b",
            "n",
            "-f",
            "ref",
            "-o",
            str(tmp_path),
            str(tmp_path / "dicom"),
        ],
        check=True,
        capture_output=True,
    )
    ref = nib.as_closest_canonical(nib.load(tmp_path / "ref.nii"))
    ours = canonical(ii.load_series(tmp_path / "dicom"))
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours.affine, ref.affine, atol=AFFINE_TOL_MM)
    np.testing.assert_array_equal(np.asarray(ours.dataobj), ref.get_fdata())
