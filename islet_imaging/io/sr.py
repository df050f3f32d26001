"""Graft measurements as a DICOM Comprehensive 3D SR (TID 1500 Measurement Report), and back.

Each measured object (the whole graft, or one deposit) becomes one TID 1411 "Volumetric ROI
measurements" group that references its segment of a DICOM SEG (see :mod:`islet_imaging.io.seg`)
and carries the segment's tracking identifier (label + UID), so that viewers and later visits can
link the same graft or deposit. Exported metrics (the rest of the table is not exported):

============  ====================================  =====================  ======================
metric        concept                               derivation             unit (UCUM)
============  ====================================  =====================  ======================
volume        SCT 118565006 "Volume"                                       ``ml``
suv_max       DCM 126401 "SUVbw" (126402 SUVlbm...) SCT 56851009 Maximum   ``{SUVbw}g/ml`` ...
suv_mean      idem                                  SCT 373098007 Mean     idem
suv_peak      idem                                  DCM 126031 Peak Value  idem
============  ====================================  =====================  ======================

The SUV unit codes follow DICOM CID 85 as used by dcmqi / 3D Slicer (``{SUVbw}g/ml``); the
form ``g/ml{SUVbw}`` (pydicom's code dictionary) is accepted when reading.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
import pandas as pd
import pydicom
from pydicom.sr.coding import Code

from islet_imaging import __version__
from islet_imaging.errors import IsletImagingError
from islet_imaging.io._dicom_files import read_object, write_object
from islet_imaging.io.seg import (
    _as_seg,
    _source_name_warnings_ignored,
    seg_segments,
    source_headers,
)
from islet_imaging.volume import Volume

__all__ = ["METRICS", "build_sr", "object_tracking_id", "read_sr", "write_sr"]

COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"

_VOLUME = Code("118565006", "SCT", "Volume")
_ML = Code("ml", "UCUM", "milliliter")
_DERIVATIONS = {
    "suv_max": Code("56851009", "SCT", "Maximum"),
    "suv_mean": Code("373098007", "SCT", "Mean"),
    "suv_peak": Code("126031", "DCM", "Peak Value Within ROI"),
}
# SUV kind -> (concept, UCUM unit) per DICOM CID 7180 / CID 85
_SUV_MEANING = "Standardized Uptake Value"
_SUV = {
    "bw": (
        Code("126401", "DCM", "SUVbw"),
        Code("{SUVbw}g/ml", "UCUM", f"{_SUV_MEANING} body weight"),
    ),
    "lbm": (
        Code("126402", "DCM", "SUVlbm"),
        Code("{SUVlbm}g/ml", "UCUM", f"{_SUV_MEANING} lean body mass"),
    ),
    "bsa": (
        Code("126403", "DCM", "SUVbsa"),
        Code("{SUVbsa}cm2/ml", "UCUM", f"{_SUV_MEANING} body surface area"),
    ),
    "ibw": (
        Code("126404", "DCM", "SUVibw"),
        Code("{SUVibw}g/ml", "UCUM", f"{_SUV_MEANING} ideal body weight"),
    ),
}
_ALIASES = {
    "volume": "volume",
    "volumeml": "volume",
    "graftvolume": "volume",
    "suvmax": "suv_max",
    "suvmean": "suv_mean",
    "suvpeak": "suv_peak",
}
#: the metrics written to SR (canonical names)
METRICS = ("volume", "suv_max", "suv_mean", "suv_peak")


def _canonical_metric(name: str) -> str | None:
    return _ALIASES.get(re.sub(r"[^a-z0-9]", "", str(name).lower()))


def _suv_kind(unit: Any) -> str:
    text = str(unit or "").lower()
    for kind in ("lbm", "bsa", "ibw"):
        if kind in text or (kind == "lbm" and "sul" in text):
            return kind
    return "bw"


def object_tracking_id(obj: Any, label: Any = None) -> str:
    """Tracking identifier of a measured object: ``"graft"`` for the whole graft (label 0,
    "graft", "all", "total"), ``"deposit <n>"`` for deposit label n (``obj`` = n, or
    ``obj`` = "deposit" and ``label`` = n), else the lowercased name (e.g. "reference").

    Examples
    --------
    >>> object_tracking_id(0), object_tracking_id(3), object_tracking_id("Deposit 2")
    ('graft', 'deposit 3', 'deposit 2')
    >>> object_tracking_id("deposit", 4)
    'deposit 4'
    """
    if str(obj).strip().lower() == "deposit" and label is not None and not pd.isna(label):
        return f"deposit {int(label)}"
    if isinstance(obj, (int, np.integer)) or (isinstance(obj, str) and obj.strip().isdigit()):
        n = int(obj)
        return "graft" if n == 0 else f"deposit {n}"
    text = str(obj).strip().lower()
    return "graft" if text in {"graft", "all", "total", "whole graft"} else text


def _column(df: pd.DataFrame, names: Sequence[str], *, required: bool = True) -> str | None:
    for name in names:
        if name in df.columns:
            return name
    if required:
        raise IsletImagingError(
            "the measurement table lacks a required column",
            tag=" / ".join(names),
            value=list(df.columns),
            hint="pass the tidy table returned by measure_graft",
        )
    return None


def build_sr(
    measurements: pd.DataFrame,
    seg: str | os.PathLike | pydicom.Dataset,
    images: Volume | Sequence[Volume],
    *,
    time_point: str | None = None,
    series_number: int = 901,
    series_description: str = "Islet graft measurements",
) -> hd.sr.Comprehensive3DSR:
    """Build a TID 1500 Measurement Report of ``measurements`` referencing the segments of ``seg``.

    Parameters
    ----------
    measurements : DataFrame
        Tidy table of :func:`~islet_imaging.measure.records.measure_graft` (or the study
        pipeline), one row per object × metric, with columns ``metric``, ``value``, ``unit``,
        ``object`` ("graft", "deposit <n>", "reference"; or "deposit" with a ``label`` column)
        or only ``label`` (0 = graft), and optionally ``method``. Rows whose metric is not in
        :data:`METRICS` are not exported. Volumes are in mL; the SUV kind (bw, lbm, bsa, ibw) is
        read from ``unit``.
    seg
        The DICOM SEG (path or dataset) whose segments the objects are; each object is matched to
        the segment with the same tracking identifier (:func:`object_tracking_id`).
    images
        The source image Volume(s) (MR the SEG was drawn on, PET the SUV came from), recorded as
        evidence.
    time_point
        Visit label (e.g. "baseline", "M3") recorded as TID 1502 time point context.

    Returns
    -------
    highdicom.sr.Comprehensive3DSR
    """
    seg_ds = _as_seg(seg)
    segments = {s.tracking_id: s for s in seg_segments(seg_ds)}
    obj_col = _column(measurements, ("object", "label"))
    label_col = "label" if obj_col == "object" and "label" in measurements.columns else None
    metric_col = _column(measurements, ("metric",))
    value_col = _column(measurements, ("value",))
    unit_col = _column(measurements, ("unit",))
    method_col = _column(measurements, ("method",), required=False)
    images = [images] if isinstance(images, Volume) else list(images)
    evidence = [seg_ds]
    for image in images:
        evidence.extend(source_headers(image))

    algorithm = hd.sr.AlgorithmIdentification(name="islet-imaging", version=__version__)
    groups = []
    table = measurements.assign(
        _metric=measurements[metric_col].map(_canonical_metric),
        _object=[
            object_tracking_id(obj, None if label_col is None else label)
            for obj, label in zip(
                measurements[obj_col],
                measurements[label_col] if label_col else [None] * len(measurements),
                strict=True,
            )
        ],
    )
    table = table[table["_metric"].notna()]
    if table.empty:
        raise IsletImagingError(
            "no exportable measurement in the table",
            tag="metric",
            value=sorted(set(measurements[metric_col].astype(str))),
            hint=f"the SR carries {', '.join(METRICS)}",
        )
    missing = sorted(set(table["_object"]) - set(segments))
    if missing:
        raise IsletImagingError(
            "measured objects have no segment in the SEG",
            tag="TrackingID",
            value=missing,
            hint=f"the SEG has segments {sorted(segments)}: write it from the same labels "
            "(include_graft=True for graft totals, reference_mask= for the reference muscle)",
        )
    for track, rows in table.groupby("_object", sort=True):
        segment = segments[track]
        items = []
        for _, row in rows.iterrows():
            metric = row["_metric"]
            if metric == "volume":
                name, unit, derivation = _VOLUME, _ML, None
            else:
                name, unit = _SUV[_suv_kind(row[unit_col])]
                derivation = _DERIVATIONS[metric]
            params = None
            if method_col and isinstance(row[method_col], str) and row[method_col]:
                params = {"method": row[method_col]}
            items.append(
                hd.sr.Measurement(
                    name=name,
                    value=float(row[value_col]),
                    unit=unit,
                    derivation=derivation,
                    algorithm_id=hd.sr.AlgorithmIdentification(
                        name="islet-imaging", version=__version__, parameters=params
                    )
                    if params
                    else algorithm,
                )
            )
        groups.append(
            hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(
                    uid=segment.tracking_uid, identifier=segment.tracking_id
                ),
                referenced_segment=hd.sr.ReferencedSegment.from_segmentation(
                    seg_ds, segment_number=segment.number
                ),
                finding_type=Code("246345001", "SCT", "Graft material"),
                time_point_context=hd.sr.TimePointContext(time_point=time_point)
                if time_point
                else None,
                measurements=items,
            )
        )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(
            observer_device_context=hd.sr.ObserverContext(
                observer_type=Code("121007", "DCM", "Device"),
                observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
                    uid=hd.UID(), name="islet-imaging", model_name=__version__
                ),
            )
        ),
        procedure_reported=Code("363679005", "SCT", "Imaging procedure"),
        imaging_measurements=groups,
    )
    with _source_name_warnings_ignored():
        return _comprehensive_sr(evidence, report, series_number, series_description)


def _comprehensive_sr(
    evidence: list[pydicom.Dataset],
    report: hd.sr.MeasurementReport,
    series_number: int,
    series_description: str,
) -> hd.sr.Comprehensive3DSR:
    return hd.sr.Comprehensive3DSR(
        evidence=evidence,
        content=report,
        series_instance_uid=hd.UID(),
        series_number=series_number,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="islet-imaging",
        is_complete=True,
        series_description=series_description[:64],
    )


def write_sr(
    measurements: pd.DataFrame,
    seg: str | os.PathLike | pydicom.Dataset,
    images: Volume | Sequence[Volume],
    path: str | os.PathLike,
    *,
    overwrite: bool = False,
    **options: Any,
) -> Path:
    """Write the SR of :func:`build_sr` to ``path`` atomically (never overwriting by default)."""
    sr = build_sr(measurements, seg, images, **options)
    return write_object(sr, path, overwrite=overwrite)


def _metric_of(item: Any) -> str | None:
    name = item.name
    if name.value == _VOLUME.value and name.scheme_designator == "SCT":
        return "volume"
    derivation = item.derivation
    if derivation is None:
        return None
    for metric, code in _DERIVATIONS.items():
        if derivation.value == code.value:
            return metric
    return None


def read_sr(sr: str | os.PathLike | pydicom.Dataset) -> pd.DataFrame:
    """Read the measurements of a TID 1500 SR back into a tidy table.

    Returns
    -------
    DataFrame
        One row per object × metric: ``object`` (tracking identifier, e.g. "graft",
        "deposit 2"), ``tracking_uid``, ``segment_number``, ``seg_sop_instance_uid``,
        ``metric`` (volume, suv_max, suv_mean, suv_peak), ``value``, ``unit`` (UCUM code),
        ``quantity`` (concept meaning, e.g. "Volume", "SUVbw"), ``time_point``.
    """
    ds = read_object(
        sr, sop_class=COMPREHENSIVE_3D_SR, label="DICOM SR", description="a Comprehensive 3D SR"
    )
    report = hd.sr.Comprehensive3DSR.from_dataset(ds, copy=False)
    rows = []
    for group in report.content.get_volumetric_roi_measurement_groups():
        ref = group.referenced_segment
        ref_sop = ref[0].ReferencedSOPSequence[0] if ref is not None else None
        time_point = None
        for item in group[0].ContentSequence:
            if item.ConceptNameCodeSequence[0].CodeValue == "C2348792":  # UMLS Time Point
                time_point = str(item.TextValue)
        for item in group.get_measurements():
            metric = _metric_of(item)
            if metric is None:
                continue
            measured = item[0].MeasuredValueSequence[0]
            value = measured.get("FloatingPointValue", measured.NumericValue)
            rows.append(
                {
                    "object": group.tracking_identifier,
                    "tracking_uid": group.tracking_uid,
                    "segment_number": None
                    if ref_sop is None
                    else int(ref_sop.ReferencedSegmentNumber),
                    "seg_sop_instance_uid": None
                    if ref_sop is None
                    else str(ref_sop.ReferencedSOPInstanceUID),
                    "metric": metric,
                    "value": float(value),
                    "unit": item.unit.value,
                    "quantity": item.name.meaning,
                    "time_point": time_point,
                }
            )
    return pd.DataFrame(rows)
