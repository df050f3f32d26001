"""Tidy measurement records of a graft: one row per object × metric, with provenance.

:func:`measure_graft` is the one entry point used by the CLI, the study pipeline and the napari
widgets. Columns of the returned table:

``object``
    ``"graft"`` (all deposits together), ``"deposit <k>"`` (label k) or ``"reference"``.
``metric``, ``value``, ``unit``
    e.g. ``volume`` / 0.42 / ``mL``, ``suv_peak`` / 5.1 / ``SUVbw``.
``method``
    How the number was obtained (``voxel_count``, ``marching_cubes``, ``percist_1ml_sphere``,
    ``pvc_rc``, ``pvc_gtm``...).
``modality``, ``image_series_uid``
    The image measured (empty for shape metrics).
``mask_series_uid``, ``mask_method``, ``mask_parameters``, ``mask_sha256``
    The mask: source series, segmentation method and parameters (JSON), and its hash
    (:func:`mask_sha256`).
``parameters``
    JSON of the measurement parameters (FWHM, sphere volume...).
``software_version``
    ``islet_imaging.__version__``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from islet_imaging.errors import IsletImagingError
from islet_imaging.measure._grid import label_fractions, label_fractions_box
from islet_imaging.measure.intensity import (
    PEAK_SPHERE_ML,
    _statistics,
    _suv_peak,
    contrast_to_noise,
)
from islet_imaging.measure.pvc import fwhm_from_volume, gtm_correct, rc_correct
from islet_imaging.measure.shape import mesh_features, object_volumes_ml
from islet_imaging.volume import Volume

__all__ = ["COLUMNS", "mask_sha256", "measure_graft"]

COLUMNS = [
    "object",
    "metric",
    "value",
    "unit",
    "method",
    "modality",
    "image_series_uid",
    "mask_series_uid",
    "mask_method",
    "mask_parameters",
    "mask_sha256",
    "parameters",
    "software_version",
]


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def mask_sha256(mask: Volume) -> str:
    """SHA-256 of a mask's labels and geometry (hex).

    The hash covers the labels as little-endian int32 in array order, the shape and the affine
    rounded to 1e-4 mm, so the same segmentation gives the same hash whatever its dtype or file
    format, and a mask moved in space does not.

    Examples
    --------
    >>> import numpy as np
    >>> from islet_imaging.volume import Volume
    >>> a = Volume(np.ones((1, 2, 2), bool)); b = Volume(np.ones((1, 2, 2), np.uint8))
    >>> mask_sha256(a) == mask_sha256(b)
    True
    """
    digest = hashlib.sha256()
    geometry = {"shape": list(mask.shape), "affine": np.round(mask.affine, 4).tolist()}
    digest.update(_json(geometry).encode())
    array = mask.array
    if array.dtype == np.dtype("<i4") and array.flags.c_contiguous:
        digest.update(array)
    else:  # slice by slice: the same bytes without a full int32 copy
        for plane in array:
            digest.update(np.ascontiguousarray(plane, dtype="<i4"))
    return digest.hexdigest()


def _as_labels(mask: Volume) -> Volume:
    if mask.array.dtype == bool or int(mask.array.max(initial=0)) <= 1:
        from islet_imaging.segment.graft import split_deposits

        return split_deposits(mask, min_volume_mm3=0.0, separate_touching=False)
    if not np.issubdtype(mask.array.dtype, np.integer):
        raise IsletImagingError(
            "the mask must hold integer labels", tag="labels", value=str(mask.array.dtype)
        )
    return mask


def _masks_on(
    image: Volume, labels: Volume, ids: list[int]
) -> tuple[tuple[slice, ...], dict[int, np.ndarray]]:
    """Boolean masks of each label (and 0 = union) on ``image``'s grid (occupancy ≥ 0.5).

    The masks are given on the box ``image.array[box]`` outside which they are empty:
    ``(box, {label: mask on the box})``.
    """
    box, fractions = label_fractions_box(labels, image, ids)
    if box is None:
        box = tuple(slice(0, 0) for _ in image.shape)
        fractions = {lab: np.zeros((0, 0, 0), np.float32) for lab in ids}
    out = {lab: fractions[lab] >= 0.5 for lab in ids}
    union = np.clip(sum(fractions.values()), 0, 1) if ids else np.zeros(image.array[box].shape)
    out[0] = union >= 0.5
    return box, out


def _statistics_on(image: Volume, box: tuple[slice, ...], mask: np.ndarray) -> dict[str, float]:
    """:func:`first_order` of ``image`` in ``mask`` given on ``image.array[box]``."""
    values = np.asarray(image.array)[box][mask].astype(np.float64)
    if values.size == 0:
        raise IsletImagingError("the mask selects no voxel of the image", tag="mask", value=0)
    return _statistics(values)


def _as_int(mask: Volume) -> Volume:
    """A mask as int32 labels (bool True → 1), kept as is when it already is int32."""
    if mask.array.dtype == np.int32:
        return mask
    return mask.with_array(mask.array.astype(np.int32))


def _units(image: Volume, default: str) -> str:
    units = image.meta.get("units")
    return str(units) if units else default


def measure_graft(
    labels: Volume,
    *,
    mr: Volume | None = None,
    suv: Volume | None = None,
    activity: Volume | None = None,
    reference: Volume | None = None,
    fwhm_mm: float | Sequence[float] | None = None,
    pvc: Sequence[str] = ("rc", "gtm"),
    injected_dose_bq: float | None = None,
    body_weight_kg: float | None = None,
    shape: bool = True,
) -> pd.DataFrame:
    """Measure a graft: volumes, deposits, MR and PET statistics, PVC, with provenance.

    Parameters
    ----------
    labels : Volume
        Deposit label map (from :func:`islet_imaging.segment.split_deposits`) or a boolean
        graft mask (its connected components are the deposits). Any grid.
    mr : Volume, optional
        MR image: mean, SD, median, min, max per object; ratio and CNR vs ``reference``.
    suv : Volume, optional
        PET in SUV (or any PET units): SUVmax, SUVmean, SUVpeak, SUV·mL, %ID (SUVbw with a
        known weight), ratios to ``reference``, partial-volume corrected means.
    activity : Volume, optional
        PET in Bq/mL (before SUV conversion): total activity in kBq (Σ concentration ×
        occupancy × PET voxel volume, no partial-volume correction) and, with
        ``injected_dose_bq``, %ID.
    reference : Volume, optional
        Reference-muscle mask (any grid).
    fwhm_mm : float or 3 floats, optional
        PET PSF FWHM for partial-volume correction; default :func:`fwhm_from_volume` of the
        PET, and no correction when unknown.
    pvc : sequence of {"rc", "gtm"}
        Correction methods to report.
    injected_dose_bq : float, optional
        Decay-corrected injected dose (Bq) matching ``activity``.
    body_weight_kg : float, optional
        Patient weight for %ID from SUVbw (default: the weight recorded by ``to_suv``).
    shape : bool
        Report mesh-based shape metrics (surface, diameter, sphericity).

    Returns
    -------
    pandas.DataFrame
        Tidy table with the columns :data:`COLUMNS`.

    Examples
    --------
    >>> import numpy as np
    >>> from islet_imaging.volume import Volume
    >>> labels = np.zeros((4, 10, 10), np.int32); labels[1:3, 2:6, 2:6] = 1
    >>> table = measure_graft(Volume(labels, spacing=(2.0, 1.0, 1.0), meta={"kind": "mask"}))
    >>> table.query("metric == 'volume' and object == 'graft'")[["value", "unit"]].values.tolist()
    [[0.064, 'mL']]
    """
    from islet_imaging import __version__

    labels = _as_labels(labels)
    volumes = object_volumes_ml(labels)
    ids = sorted(volumes)
    meta = labels.meta
    mask_method = meta.get("graft_method") or meta.get("method")
    mask_params = meta.get("graft_parameters") or meta.get("parameters")
    common = {
        "mask_series_uid": meta.get("source_series_uid"),
        "mask_method": mask_method,
        "mask_parameters": _json({"mask": mask_params, "deposits": meta.get("parameters")}),
        "mask_sha256": mask_sha256(labels),
        "software_version": __version__,
    }
    rows: list[dict[str, Any]] = []

    def add(obj, metric, value, unit, method, image=None, **params):
        rows.append(
            {
                "object": obj,
                "metric": metric,
                "value": float(value),
                "unit": unit,
                "method": method,
                "modality": None if image is None else image.meta.get("modality"),
                "image_series_uid": None if image is None else image.meta.get("series_uid"),
                **common,
                "parameters": _json(params),
            }
        )

    names = {0: "graft", **{lab: f"deposit {lab}" for lab in ids}}
    total = float(sum(volumes.values()))
    add("graft", "volume", total, "mL", "voxel_count")
    add("graft", "deposit_count", len(ids), "1", "connected_components")
    for lab in ids:
        add(names[lab], "volume", volumes[lab], "mL", "voxel_count")
    if shape and ids:
        for lab in [0, *ids]:
            feats = mesh_features(labels, None if lab == 0 else lab)
            method = "marching_cubes"
            add(names[lab], "mesh_volume", feats["mesh_volume_ml"], "mL", method)
            add(names[lab], "surface_area", feats["surface_area_mm2"], "mm2", method)
            add(names[lab], "max_diameter", feats["max_diameter_mm"], "mm", method)
            add(names[lab], "sphericity", feats["sphericity"], "1", method)

    if mr is not None and ids:
        _measure_mr(add, mr, labels, ids, names, reference)
    if suv is not None and ids:
        _measure_pet(add, suv, labels, ids, names, reference, volumes, fwhm_mm, pvc, body_weight_kg)
    if activity is not None and ids:
        fractions = label_fractions(labels, activity, ids)
        fractions[0] = np.clip(sum(fractions.values()), 0, 1)
        values = np.asarray(activity.array, np.float64)
        for lab in [0, *ids]:
            kbq = float((values * fractions[lab]).sum()) * activity.voxel_volume_ml / 1000.0
            add(names[lab], "total_activity", kbq, "kBq", "occupancy_weighted_sum", activity)
            if injected_dose_bq:
                add(
                    names[lab],
                    "percent_injected_dose",
                    100 * kbq * 1000 / injected_dose_bq,
                    "%ID",
                    "activity_over_dose",
                    activity,
                    injected_dose_bq=injected_dose_bq,
                )
    return pd.DataFrame(rows, columns=COLUMNS)


def _measure_mr(add, mr, labels, ids, names, reference) -> None:
    unit = _units(mr, "a.u.")
    box, masks = _masks_on(mr, labels, ids)
    ref_stats = None
    if reference is not None:
        ref_box, ref_masks = _masks_on(mr, _as_int(reference), [1])
        ref_stats = _statistics_on(mr, ref_box, ref_masks[1])
        add("reference", "mr_mean", ref_stats["mean"], unit, "first_order", mr)
        add("reference", "mr_sd", ref_stats["sd"], unit, "first_order", mr)
    for lab in [0, *ids]:
        if not masks[lab].any():
            continue
        stats = _statistics_on(mr, box, masks[lab])
        for key in ("mean", "sd", "median", "minimum", "maximum"):
            add(names[lab], f"mr_{key}", stats[key], unit, "first_order", mr)
        if ref_stats is not None:
            add(
                names[lab],
                "mr_ratio_to_reference",
                stats["mean"] / ref_stats["mean"],
                "1",
                "mean_over_reference_mean",
                mr,
            )
            if ref_stats["sd"] > 0:
                cnr = contrast_to_noise(stats["mean"], ref_stats["mean"], ref_stats["sd"])
                add(names[lab], "mr_cnr", cnr, "1", "mean_difference_over_reference_sd", mr)


def _measure_pet(add, suv, labels, ids, names, reference, volumes, fwhm_mm, pvc, weight) -> None:
    unit = _units(suv, "SUV")
    box, masks = _masks_on(suv, labels, ids)
    offset = np.array([s.start for s in box])
    total = float(sum(volumes.values()))
    ref_mean = None
    if reference is not None:
        ref_frac = label_fractions(_as_int(reference), suv, [1])
        if ref_frac[1].sum() > 0:
            values = np.asarray(suv.array, np.float64)
            ref_mean = float((values * ref_frac[1]).sum() / ref_frac[1].sum())
            add("reference", "suv_mean", ref_mean, unit, "occupancy_weighted_mean", suv)
    if weight is None and unit == "SUVbw":
        weight = ((suv.meta.get("suv") or {}).get("tags") or {}).get("weight_kg")
    for lab in [0, *ids]:
        mask = masks[lab]
        if not mask.any():
            continue
        stats = _statistics_on(suv, box, mask)
        vol = total if lab == 0 else volumes[lab]
        add(names[lab], "suv_max", stats["maximum"], unit, "max_voxel", suv)
        add(names[lab], "suv_mean", stats["mean"], unit, "mean_voxel", suv)
        peak, centre = _suv_peak(suv, mask, offset)
        add(
            names[lab],
            "suv_peak",
            peak,
            unit,
            "percist_1ml_sphere",
            suv,
            sphere_ml=PEAK_SPHERE_ML,
            centre_mm=np.round(centre, 2).tolist(),
        )
        add(names[lab], "total_uptake", stats["mean"] * vol, f"{unit}*mL", "suv_mean_x_volume", suv)
        if weight and unit == "SUVbw":
            add(
                names[lab],
                "percent_injected_dose",
                100 * stats["mean"] * vol / (weight * 1000),
                "%ID",
                "suvbw_x_volume_over_weight",
                suv,
                weight_kg=weight,
            )
        if ref_mean:
            add(
                names[lab],
                "suv_mean_ratio_to_reference",
                stats["mean"] / ref_mean,
                "1",
                "mean_over_reference_mean",
                suv,
            )
            add(
                names[lab],
                "suv_max_ratio_to_reference",
                stats["maximum"] / ref_mean,
                "1",
                "max_over_reference_mean",
                suv,
            )
    fwhm, source = fwhm_mm, "user"
    if fwhm is None:
        fwhm, source = fwhm_from_volume(suv), "image"
    if fwhm is None or not pvc:
        return
    params = {"fwhm_mm": fwhm, "fwhm_source": source}
    if "rc" in pvc:
        background = ref_mean or 0.0
        res = rc_correct(suv, labels, fwhm_mm=fwhm, background=background)
        for lab, r in res.items():
            add(names[lab], "recovery_coefficient", r["rc"], "1", "pvc_rc", suv, **params)
            add(
                names[lab],
                "suv_mean_pvc",
                r["corrected"],
                unit,
                "pvc_rc",
                suv,
                background=background,
                **params,
            )
    if "gtm" in pvc:
        res = gtm_correct(suv, labels, fwhm_mm=fwhm)
        weighted = sum(res[lab]["corrected"] * volumes[lab] for lab in ids) / total
        add("graft", "suv_mean_pvc", weighted, unit, "pvc_gtm", suv, **params)
        for lab in ids:
            add(names[lab], "suv_mean_pvc", res[lab]["corrected"], unit, "pvc_gtm", suv, **params)
        add(
            "reference",
            "suv_background_pvc",
            res["background"]["corrected"],
            unit,
            "pvc_gtm",
            suv,
            **params,
        )
