"""Forearm body mask, bone exclusion, muscle compartment and the reference-muscle ROI on MR.

The forearm on T1/T2 MR has three tissue classes inside the skin: fat (subcutaneous fat and the
marrow of radius and ulna, bright), muscle (intermediate) and cortical bone/tendon (dark). The
functions here separate them relative to the muscle signal (the mode of the body histogram),
so they need no absolute intensity and work on any scanner scaling.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage as ndi
from skimage.filters import threshold_multiotsu

from islet_imaging.errors import SegmentationError
from islet_imaging.segment._common import check_same_grid, mask_volume
from islet_imaging.segment.cleanup import (
    ball_footprint,
    keep_largest,
    label_components,
    seeds_to_indices,
)
from islet_imaging.volume import Volume

__all__ = ["body_mask", "bone_mask", "muscle_mask", "muscle_masks", "reference_muscle_roi"]


def _fill_holes_2d(mask: np.ndarray) -> np.ndarray:
    """Fill holes slice by slice along each of the three axes (open-ended limbs stay filled).

    A hole of a slice is a background component of that slice that does not reach the slice
    border; all slices of one axis are labelled in a single call with in-plane connectivity.
    """
    out = ndi.binary_fill_holes(mask)
    for axis in range(3):
        structure = np.zeros((3, 3, 3), bool)
        plane = [slice(None)] * 3
        plane[axis] = 1
        structure[tuple(plane)] = ndi.generate_binary_structure(2, 1)
        labels, n = ndi.label(~out, structure=structure)
        border = np.zeros(n + 1, bool)
        for other in (a for a in range(3) if a != axis):
            for end in (0, -1):
                border[np.unique(np.take(labels, end, axis=other))] = True
        border[0] = True
        out = out | ~border[labels]
    return out


def body_mask(mr: Volume) -> Volume:
    """Mask of the forearm (everything inside the skin) on an MR image.

    The lower of two 3-class Otsu thresholds separates air from tissue (a 2-class Otsu would
    often split muscle from fat instead). Outside air is the set of non-tissue components that
    touch the array border and hold at least 20 % of the largest one; everything else (dark
    cortex, vessels, pockets cut by the field of view) is body. The largest component is kept.

    Parameters
    ----------
    mr : Volume
        MR image, any orientation.

    Returns
    -------
    Volume
        Boolean mask, ``meta['method'] = 'body_otsu'``.
    """
    array = np.asarray(mr.array, dtype=np.float32)
    if not np.isfinite(array).all() or array.max() <= array.min():
        raise SegmentationError(
            "image is constant or not finite", tag="mr", value=mr.meta.get("series_uid")
        )
    tissue = array > threshold_multiotsu(array, classes=3)[0]
    labels, n = label_components(~tissue)
    counts = np.bincount(labels.ravel(), minlength=n + 1)
    counts[0] = 0
    border = np.zeros(n + 1, bool)
    for axis in range(3):
        for end in (0, -1):
            border[np.unique(np.take(labels, end, axis=axis))] = True
    outside = border & (counts >= 0.2 * counts.max(initial=0))
    outside[0] = False
    body = keep_largest(mr.with_array(~outside[labels])).array
    return mask_volume(mr, body, method="body_otsu", parameters={})


def _mode(values: np.ndarray) -> float:
    """Most frequent value of a smoothed 256-bin histogram."""
    hist, edges = np.histogram(values, bins=256)
    hist = ndi.gaussian_filter1d(hist.astype(float), 2.0)
    peak = int(np.argmax(hist))
    return float(0.5 * (edges[peak] + edges[peak + 1]))


def _classes(mr: Volume, body: np.ndarray) -> np.ndarray:
    """Three tissue classes inside the body: 0 = dark (cortex, tendon), 1 = muscle, 2 = bright.

    Muscle is the bulk of the forearm, so its signal ``m`` is the mode of the body histogram.
    Dark is below ``m / 2``; bright is above the midpoint between ``m`` and the fat peak (the
    mode of the values above ``1.5 m``), or above ``1.5 m`` when there is no fat peak.
    """
    values = mr.array[body].astype(np.float32)
    muscle = _mode(values)
    high = values[values > 1.5 * muscle]
    bright = 0.5 * (muscle + _mode(high)) if high.size > 0.02 * values.size else 1.5 * muscle
    return np.digitize(mr.array, [0.5 * muscle, bright]).astype(np.uint8)


def bone_mask(mr: Volume, *, body: Volume | None = None, cortex_mm: float = 3.0) -> Volume:
    """Radius and ulna (marrow and the dark cortex around it) on MR, in any orientation.

    Marrow is a bright (fat-class) component (found on the bright class as is, and on it
    eroded by one and two steps of the finest voxel size then dilated back, so that
    partial-volume bridges through a thin cortex do not join it to the fat; with thick slices
    the erosion is in plane only, as the marrow may be only two slices thick) inside the body
    that does not run along the skin (less than 10 % of it within 3 mm of the body surface) and
    whose outer shell is at least 20 % dark (cortex, blurred by partial volume); bright
    components surrounded by muscle (grafts,
    oedema) are therefore not bone, and subcutaneous fat, which reaches the skin, is not either.
    The cortex is everything within ``cortex_mm`` of the marrow widened by one voxel size along
    each axis (an ellipsoid of semi-axes ``cortex_mm`` + spacing): the dark cortex, and the
    voxels that partial volume mixes between cortex, marrow and muscle, which reach one slice
    thickness away from the bone across thick slices.

    Parameters
    ----------
    mr : Volume
        MR image.
    body : Volume, optional
        Body mask (default: :func:`body_mask`).
    cortex_mm : float
        Largest cortex thickness (mm).

    Returns
    -------
    Volume
        Boolean mask, ``meta['method'] = 'bone_marrow_cortex'``.
    """
    body_arr = (body if body is not None else body_mask(mr)).array.astype(bool)
    classes = _classes(mr, body_arr)
    depth = ndi.distance_transform_edt(body_arr, sampling=mr.spacing)
    bone = _bone(mr, body_arr, classes, depth, cortex_mm)
    return mask_volume(mr, bone, method="bone_marrow_cortex", parameters={"cortex_mm": cortex_mm})


def _bone(
    mr: Volume, body_arr: np.ndarray, classes: np.ndarray, depth: np.ndarray, cortex_mm: float
) -> np.ndarray:
    superficial = depth <= 3.0
    bright = (classes == 2) & body_arr
    marrow = np.zeros(mr.shape, bool)
    # partial volume can bridge marrow and fat through a thin cortex: also try eroded cores
    # erode by the finest voxel size (mm): in plane only for thick slices, whose marrow may be
    # a couple of slices thick
    step = ball_footprint(mr.spacing, min(mr.spacing))
    for grow in (0, 1, 2):
        cores = ndi.binary_erosion(bright, step, iterations=grow) if grow else bright
        labels, _ = label_components(cores)
        for index, slices in enumerate(ndi.find_objects(labels), start=1):
            if slices is None:
                continue
            this = labels[slices] == index
            if np.mean(superficial[slices][this]) > 0.1:
                continue  # subcutaneous fat lies along the skin
            crop = tuple(slice(max(0, s.start - 2), s.stop + 2) for s in slices)
            this = labels[crop] == index
            if grow:
                this = ndi.binary_dilation(this, step, iterations=grow, mask=bright[crop])
            shell = ndi.binary_dilation(this) & ~this
            if shell.any() and np.mean(classes[crop][shell] == 0) > 0.2:
                marrow[crop] |= this
    # the cortex, widened by partial volume: a voxel mixes the tissue up to one voxel size away
    # along each axis (an ellipsoid of semi-axes cortex_mm + spacing around the marrow)
    reach = [s / (cortex_mm + s) for s in mr.spacing]
    near = ndi.distance_transform_edt(~marrow, sampling=reach) <= 1.0
    return marrow | (near & body_arr)


def muscle_mask(
    mr: Volume,
    *,
    body: Volume | None = None,
    exclude_bone: bool = True,
    include_enclosed: bool = True,
    skin_mm: float = 2.0,
    min_volume_mm3: float = 1000.0,
) -> Volume:
    """Muscle compartment of the forearm on MR.

    Muscle is the intermediate class inside the body eroded by ``skin_mm``; components below
    ``min_volume_mm3`` or lying mostly within ``skin_mm + 3`` mm of the skin (the skin itself
    has a muscle-like signal) are dropped; voxels touching fat outside the compartment
    (muscle/fat partial-volume mixtures) and bone are removed. Bright voxels the muscle encloses
    are not mixtures and are kept even where they touch that fat: a graft bulging against the
    subcutaneous fat (3 mm sagittal slices reach across the last millimetre of muscle) stays
    whole in the compartment.

    Parameters
    ----------
    mr : Volume
        T1- or T2-weighted MR image.
    body : Volume, optional
        Body mask (default: :func:`body_mask`).
    exclude_bone : bool
        Remove :func:`bone_mask` (default True).
    include_enclosed : bool
        Add what the muscle encloses (grafts, vessels, oedema): the compartment in which a graft
        is searched. False gives muscle tissue only (for reference statistics).
    skin_mm : float
        Thickness (mm) of the rim removed at the skin surface.
    min_volume_mm3 : float
        Smallest muscle component kept (mm³).

    Returns
    -------
    Volume
        Boolean mask, ``meta['method'] = 'muscle_otsu'``.
    """
    tissue, compartment = muscle_masks(
        mr, body=body, exclude_bone=exclude_bone, skin_mm=skin_mm, min_volume_mm3=min_volume_mm3
    )
    return compartment if include_enclosed else tissue


def muscle_masks(
    mr: Volume,
    *,
    body: Volume | None = None,
    exclude_bone: bool = True,
    skin_mm: float = 2.0,
    min_volume_mm3: float = 1000.0,
    exclude_dark_edges: bool = False,
) -> tuple[Volume, Volume]:
    """Muscle tissue and muscle compartment at once: ``muscle_mask`` with
    ``include_enclosed=False`` and ``True``, sharing the work.

    Bone (:func:`bone_mask`) is removed with a cortex margin of 3 mm, widened by one voxel size
    along each axis (partial volume of thick slices). With ``exclude_dark_edges`` the voxels
    touching dark tissue (cortex, tendon) outside the compartment are removed too, as those
    touching fat always are (used to search dark, iron-labelled grafts, which partial volume
    with cortex would mimic); the compartment then also takes in what muscle and fat enclose
    together, and keeps its voxels next to fat (muscle/fat mixtures are brighter than muscle,
    they cannot mimic a dark graft), so that a dark graft bulging against the subcutaneous fat
    is searched whole.
    """
    body_vol = body if body is not None else body_mask(mr)
    check_same_grid(mr, body_vol, "body")
    body_arr = body_vol.array.astype(bool)
    depth = ndi.distance_transform_edt(body_arr, sampling=mr.spacing)
    inner = depth > skin_mm
    classes = _classes(mr, body_arr)
    muscle = (classes == 1) & inner
    labels, n = label_components(muscle)
    voxel_mm3 = float(np.prod(mr.spacing))
    counts = np.bincount(labels.ravel(), minlength=n + 1) * voxel_mm3
    superficial = ndi.sum_labels(depth <= skin_mm + 3.0, labels, np.arange(n + 1))
    keep = (counts >= min_volume_mm3) & (superficial * voxel_mm3 <= 0.5 * counts)
    keep[0] = False
    tissue = keep[labels]
    compartment = _fill_holes_2d(tissue) & inner
    fat = (classes == 2) & body_arr
    if exclude_dark_edges:
        # a dark graft may bulge against the subcutaneous fat: also what muscle and fat enclose
        compartment |= _fill_holes_2d(tissue | fat) & ~fat & inner
    bone = _bone(mr, body_arr, classes, depth, cortex_mm=3.0) if exclude_bone else None
    out = []
    for muscle, fat_edges in ((tissue, True), (compartment, not exclude_dark_edges)):
        # voxels touching fat outside the compartment are muscle/fat partial-volume mixtures
        # (brighter than muscle: they cannot mimic a dark graft); bright voxels the muscle
        # encloses (a graft bulging against the subcutaneous fat) are not, and stay
        other = ((fat & fat_edges) | ((classes == 0) & exclude_dark_edges)) & ~muscle & body_arr
        edge = ndi.binary_dilation(other, structure=np.ones((3, 3, 3), bool))
        muscle = muscle & ~(edge & ~fat)
        if bone is not None:
            muscle &= ~bone
        out.append(muscle)
    params = {"exclude_bone": exclude_bone, "skin_mm": skin_mm, "min_volume_mm3": min_volume_mm3}
    return (
        mask_volume(
            mr, out[0], method="muscle_otsu", parameters={**params, "include_enclosed": False}
        ),
        mask_volume(
            mr, out[1], method="muscle_otsu", parameters={**params, "include_enclosed": True}
        ),
    )


def reference_muscle_roi(
    mr: Volume,
    *,
    muscle: Volume | None = None,
    graft: Volume | None = None,
    center_mm: Sequence[float] | None = None,
    radius_mm: float = 5.0,
    min_distance_mm: float = 10.0,
) -> Volume:
    """A spherical ROI of normal muscle, away from the graft, for reference statistics.

    Automatic placement: among muscle voxels at least ``min_distance_mm + radius_mm`` from the
    graft (and from anything the muscle encloses), the centre is the point deepest inside the
    muscle (largest distance to its boundary, in mm). By hand: give ``center_mm``.

    Parameters
    ----------
    mr : Volume
        MR image (its grid is used).
    muscle : Volume, optional
        Muscle tissue mask (default: ``muscle_mask(mr, include_enclosed=False)``).
    graft : Volume, optional
        Graft mask to stay away from. Default: the non-muscle regions enclosed by muscle.
    center_mm : 3 floats, optional
        LPS position (mm) of the ROI centre, to place it by hand.
    radius_mm : float
        ROI radius in mm (the ROI is the ball intersected with muscle).
    min_distance_mm : float
        Minimum distance (mm) between the ROI and the graft.

    Returns
    -------
    Volume
        Boolean mask, ``meta['method']`` = ``'reference_auto'`` or ``'reference_manual'``,
        ``meta['center_mm']`` the LPS centre.
    """
    if radius_mm <= 0:
        raise SegmentationError("must be > 0 mm", tag="radius_mm", value=radius_mm)
    if muscle is None:
        muscle = muscle_mask(mr, include_enclosed=False)
    check_same_grid(mr, muscle, "muscle")
    muscle_arr = muscle.array.astype(bool)
    params = {"radius_mm": radius_mm, "min_distance_mm": min_distance_mm}
    if center_mm is not None:
        center = seeds_to_indices(mr, [center_mm])[0]
        method = "reference_manual"
        allowed = muscle_arr
    else:
        if graft is None:
            avoid = _fill_holes_2d(muscle_arr) & ~muscle_arr
        else:
            check_same_grid(mr, graft, "graft")
            avoid = graft.array.astype(bool)
        # placement on a grid of about 2 mm (distance maps are the costly part)
        step = [max(1, int(2.0 // s)) for s in mr.spacing]
        sub = tuple(slice(None, None, st) for st in step)
        coarse = [s * st for s, st in zip(mr.spacing, step, strict=True)]
        slack = max(c for c in coarse)
        depth = ndi.distance_transform_edt(muscle_arr[sub], sampling=coarse)
        if avoid.any():
            far = ndi.distance_transform_edt(~avoid[sub], sampling=coarse)
            depth = np.where(far >= min_distance_mm + radius_mm + slack, depth, 0)
        candidates = depth
        allowed = muscle_arr
        if candidates.max(initial=0) <= 0:
            raise SegmentationError(
                "no muscle far enough from the graft for a reference ROI",
                tag="min_distance_mm",
                value=min_distance_mm,
                hint="lower min_distance_mm or give center_mm by hand",
            )
        best = np.unravel_index(int(np.argmax(candidates)), candidates.shape)
        center = np.asarray(best) * np.asarray(step)
        method = "reference_auto"
    ball = ball_footprint(mr.spacing, radius_mm)
    half = np.array(ball.shape) // 2
    roi = np.zeros(mr.shape, bool)
    lo = center - half
    src = tuple(
        slice(max(0, -lo[a]), ball.shape[a] - max(0, lo[a] + ball.shape[a] - mr.shape[a]))
        for a in range(3)
    )
    dst = tuple(slice(max(0, lo[a]), min(mr.shape[a], lo[a] + ball.shape[a])) for a in range(3))
    roi[dst] = ball[src]
    roi &= allowed
    if not roi.any():
        raise SegmentationError(
            "the reference ROI contains no muscle voxel",
            tag="center_mm",
            value=None if center_mm is None else list(center_mm),
            hint="place the centre inside muscle or enlarge radius_mm",
        )
    center_lps = mr.index_to_world(center).round(3).tolist()
    return mask_volume(mr, roi, method=method, parameters=params, center_mm=center_lps)
