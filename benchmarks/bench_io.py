"""Benchmark DICOM scan and load against references measured in the same run.

Data are generated into a temporary folder:

* ``mr``: one MR series of 160 slices of 256 x 256 (int16, explicit VR little endian);
* ``mixed``: a 500-file folder: MR 200 x 128², MR 150 x 96² sagittal, PET 100 x 128² with
  per-slice rescale, MR 40 x 64² RLE-compressed, and 10 non-DICOM files.

References: ``raw`` (open + read of every file: the I/O floor), ``raw_read_float32`` (the same
plus conversion of the pixel bytes into a preallocated float32 array: the floor of any loader
returning float32, MR series only), SimpleITK ``ImageSeriesReader``
(GDCM file-name sorting included, one read per series), naive pydicom (``dcmread`` + ``pixel_array``
+ sort + stack) and, for the scan, ``pydicom.dcmread(stop_before_pixels=True)`` over the same
files. Every figure is the best of ``--repeat`` runs with a warm page cache. Targets: load at least
2x faster than ImageSeriesReader and within 2.5x of the raw read; scan at least 3x faster than
plain ``dcmread(stop_before_pixels=True)``.

Run ``python benchmarks/bench_io.py``; results go to ``benchmarks/results/io.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk

import islet_imaging as ii
from islet_imaging.io.dicom_write import write_series

RESULTS = Path(__file__).resolve().parent / "results" / "io.json"
AXIAL = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
MR_SHAPE = (160, 256, 256)
SAGITTAL = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])


def _series(folder: Path, shape, *, modality="MR", direction=AXIAL, seed=0, **options) -> None:
    rng = np.random.default_rng(seed)
    array = rng.integers(0, 2000, size=shape).astype(np.float32)
    if modality == "PT":
        array *= rng.uniform(0.5, 50, size=(shape[0], 1, 1)).astype(np.float32)
    vol = ii.Volume(array, spacing=(2.0, 0.9, 0.9), origin=(-100, -110, -80), direction=direction)
    write_series(vol, folder, modality=modality, uid_seed=seed, **options)


def make_data(root: Path) -> dict[str, Path]:
    mr = root / "mr"
    _series(mr, MR_SHAPE, series_number=1)
    mixed = root / "mixed"
    _series(mixed / "t1", (200, 128, 128), seed=1, series_number=2)
    _series(mixed / "sag", (150, 96, 96), seed=2, direction=SAGITTAL, series_number=3)
    _series(mixed / "pet", (100, 128, 128), modality="PT", seed=3, series_number=4)
    _series(mixed / "rle", (40, 64, 64), seed=4, series_number=5, transfer_syntax="rle")
    for n in range(10):
        (mixed / f"notes_{n}.txt").write_text("not a DICOM file\n" * 20)
    return {"mr": mr, "mixed": mixed}


def files_of(folder: Path) -> list[str]:
    return sorted(str(p) for p in folder.rglob("*") if p.is_file())


# ----------------------------------------------------------------------------- references
def raw_read(files: list[str]) -> int:
    total = 0
    for f in files:
        with open(f, "rb") as fh:
            total += len(fh.read())
    return total


def raw_read_float32(files: list[str], shape: tuple[int, int, int]) -> np.ndarray:
    """The floor of any loader with float32 output: read each file, convert its last
    rows x columns int16 values (the pixel data) into a preallocated float32 array."""
    out = np.empty(shape, np.float32)
    count = shape[1] * shape[2]
    for k, f in enumerate(files):
        with open(f, "rb") as fh:
            data = fh.read()
        pixels = np.frombuffer(data, "<i2", count=count, offset=len(data) - 2 * count)
        np.copyto(out[k], pixels.reshape(shape[1:]), casting="unsafe")
    return out


def sitk_read(folder: Path) -> list:
    images = []
    for sub in sorted({os.path.dirname(f) for f in files_of(folder)}):
        for uid in sitk.ImageSeriesReader.GetGDCMSeriesIDs(sub):
            reader = sitk.ImageSeriesReader()
            reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(sub, uid))
            images.append(reader.Execute())
    return images


def naive_pydicom(files: list[str]) -> list[np.ndarray]:
    series = defaultdict(list)
    for f in files:
        try:
            ds = pydicom.dcmread(f)
        except pydicom.errors.InvalidDicomError:
            continue
        series[ds.SeriesInstanceUID].append(ds)
    volumes = []
    for datasets in series.values():
        datasets.sort(key=lambda d: float(d.ImagePositionPatient[2]))
        volumes.append(
            np.stack(
                [
                    d.pixel_array * float(d.get("RescaleSlope", 1))
                    + float(d.get("RescaleIntercept", 0))
                    for d in datasets
                ]
            ).astype(np.float32)
        )
    return volumes


def plain_header_read(files: list[str]) -> int:
    n = 0
    for f in files:
        try:
            pydicom.dcmread(f, stop_before_pixels=True)
            n += 1
        except pydicom.errors.InvalidDicomError:
            pass
    return n


def best(fn, repeat: int) -> float:
    fn()  # warm-up (page cache, imports)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def run(repeat: int) -> dict:
    sitk.ProcessObject.SetGlobalWarningDisplay(False)  # "No Series were found" for notes/
    with tempfile.TemporaryDirectory() as tmp:
        data = make_data(Path(tmp))
        results = {}
        for name, folder in data.items():
            files = files_of(folder)
            size_mb = sum(os.path.getsize(f) for f in files) / 1e6
            t = {
                "raw_read": best(lambda files=files: raw_read(files), repeat),
                **(
                    {
                        "raw_read_float32": best(
                            lambda f=files: raw_read_float32(f, MR_SHAPE), repeat
                        )
                    }
                    if name == "mr"
                    else {}
                ),
                "load": best(lambda folder=folder: ii.load_volumes(folder), repeat),
                "sitk_series_reader": best(lambda folder=folder: sitk_read(folder), repeat),
                "naive_pydicom": best(lambda files=files: naive_pydicom(files), repeat),
                "scan": best(lambda folder=folder: ii.scan(folder, progress=False), repeat),
                "dcmread_stop_before_pixels": best(
                    lambda files=files: plain_header_read(files), repeat
                ),
            }
            results[name] = {
                "n_files": len(files),
                "megabytes": round(size_mb, 1),
                "seconds": {k: round(v, 5) for k, v in t.items()},
                "ratios": {
                    "load_vs_raw_read": round(t["load"] / t["raw_read"], 2),
                    **(
                        {"load_vs_raw_read_float32": round(t["load"] / t["raw_read_float32"], 2)}
                        if "raw_read_float32" in t
                        else {}
                    ),
                    "sitk_vs_load": round(t["sitk_series_reader"] / t["load"], 2),
                    "naive_pydicom_vs_load": round(t["naive_pydicom"] / t["load"], 2),
                    "dcmread_headers_vs_scan": round(
                        t["dcmread_stop_before_pixels"] / t["scan"], 2
                    ),
                },
            }
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    results = run(args.repeat)
    targets = {
        "load_vs_raw_read": ("<=", 2.5),
        "sitk_vs_load": (">=", 2.0),
        "dcmread_headers_vs_scan": (">=", 3.0),
    }
    for name, res in results.items():
        print(f"\n{name}: {res['n_files']} files, {res['megabytes']} MB")
        for key, value in res["seconds"].items():
            print(f"  {key:28s} {value * 1000:9.1f} ms")
        for key, value in res["ratios"].items():
            op, goal = targets.get(key, (None, None))
            status = ""
            if op:
                ok = value <= goal if op == "<=" else value >= goal
                status = f"  (target {op} {goal}: {'met' if ok else 'NOT met'})"
            print(f"  {key:28s} {value:9.2f}x{status}")
    payload = {
        "benchmark": "io",
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "repeat": args.repeat,
        "results": results,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"\nwritten {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
