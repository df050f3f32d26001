"""Graft delineation on MR and PET, PET-guided MR delineation and deposit separation.

Every function returns a mask :class:`~islet_imaging.volume.Volume` on the grid of the image
it was computed from, with ``meta``: ``kind='mask'``, ``method``, ``parameters`` (JSON-able
dict), ``source_series_uid`` (and ``guide_series_uid`` for PET-guided MR). Seeds are LPS points
in mm; sizes are in mm and mm³, never voxels.

MR methods (:class:`MRMethod`)
    ``reference``: voxels brighter than mean + k·SD of a reference-muscle ROI (darker than
    mean − k·SD with ``polarity='dark'``, for iron-labelled islets) are the cores. A core must
    also stand k·SD above the muscle around it (median in a 3–8 mm shell), which rejects bias
    field and muscle-to-muscle signal differences; its edge is then placed at
    ``boundary_fraction`` (default half) of the way from that local muscle level to the core's
    level (90th percentile) and the region grown from the core down to it (hysteresis), which
    is unbiased for partial-volume edges.
    ``otsu`` / ``multi_otsu``: Otsu threshold(s) computed inside the muscle compartment; the
    brightest (or darkest) class is the graft. ``region_growing``: from each seed, the connected
    voxels beyond the level half-way between reference muscle and the seed neighbourhood.
PET methods (:class:`PETMethod`)
    ``percent_max``: per hot spot, voxels ≥ fraction × SUVmax (41 % default, 50 % common)
    connected to the maximum. ``background_corrected``: threshold B + fraction·(SUVmax − B),
    B = median SUV in a shell 5–15 mm around the 50 % region (fraction 0.5: the 50 %
    isocontour with local background correction). ``absolute``: SUV ≥ threshold.
    ``region_growing``: voxels connected to each seed with SUV ≥ threshold (default
    fraction × SUV at the seed).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from scipy import ndimage as ndi
from skimage.filters import threshold_multiotsu, threshold_otsu
from skimage.morphology import h_maxima, local_maxima, reconstruction
from skimage.segmentation import watershed

from islet_imaging.errors import SegmentationError
from islet_imaging.segment._common import (
    StrEnum,
    as_enum,
    check_same_grid,
    mask_volume,
    nonzero_box,
    resample_mask_like,
)
from islet_imaging.segment.cleanup import (
    ball_footprint,
    label_components,
    remove_small_objects,
    seeds_to_indices,
)
from islet_imaging.segment.muscle import muscle_masks
from islet_imaging.volume import Volume

__all__ = [
    "MRMethod",
    "PETMethod",
    "Polarity",
    "segment_graft_mr",
    "segment_graft_mr_pet_guided",
    "segment_graft_pet",
    "split_deposits",
]


LEVEL_PCT = 90
#: Shell (mm from a core) where the local muscle level around an MR core is measured.
BACKGROUND_SHELL_MM = (3.0, 8.0)
#: First margin (mm) around seeds of the box in which connected regions are looked for; the
#: box grows until the region fits (results do not depend on it, only the time does).
FLOOD_MARGIN_MM = 15.0


class MRMethod(StrEnum):
    """MR graft delineation methods (also accepted as strings)."""

    REFERENCE = "reference"
    OTSU = "otsu"
    MULTI_OTSU = "multi_otsu"
    REGION_GROWING = "region_growing"


class PETMethod(StrEnum):
    """PET graft delineation methods (also accepted as strings)."""

    PERCENT_MAX = "percent_max"
    BACKGROUND_CORRECTED = "background_corrected"
    ABSOLUTE = "absolute"
    REGION_GROWING = "region_growing"


class Polarity(StrEnum):
    """Whether the graft is brighter (T2, contrast) or darker (iron-labelled, T2*) than muscle."""

    BRIGHT = "bright"
    DARK = "dark"


def _crop(slices: tuple[slice, ...], shape: Sequence[int], margin: Sequence[int]):
    return tuple(
        slice(max(0, s.start - m), min(n, s.stop + m))
        for s, n, m in zip(slices, shape, margin, strict=True)
    )


def _margin(spacing: Sequence[float], mm: float) -> list[int]:
    return [int(np.ceil(mm / s)) + 1 for s in spacing]


def _shell(region: np.ndarray, spacing: Sequence[float], shell_mm: Sequence[float]) -> np.ndarray:
    """Voxels farther than ``shell_mm[0]`` and at most ``shell_mm[1]`` mm from ``region``."""
    inner, outer = shell_mm
    distance = ndi.distance_transform_edt(~region, sampling=spacing)
    return (distance > inner) & (distance <= outer)


def _ball_values(
    values: np.ndarray, index: np.ndarray, spacing: Sequence[float], radius_mm: float
) -> np.ndarray:
    """Values of the voxels within ``radius_mm`` of voxel ``index`` (clipped at the border)."""
    ball = ball_footprint(spacing, radius_mm)
    half = np.array(ball.shape) // 2
    lo = np.maximum(index - half, 0)
    hi = np.minimum(index + half + 1, values.shape)
    sub = values[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))]
    start, stop = lo - index + half, hi - index + half
    return sub[ball[tuple(slice(a, b) for a, b in zip(start, stop, strict=True))]]


def _region(image: Volume, region: Volume | None) -> np.ndarray:
    if region is None:
        return np.ones(image.shape, bool)
    region = resample_mask_like(region, image)
    return region.array.astype(bool)


def _grow(
    signal: np.ndarray, allowed: np.ndarray, low: float, marker: np.ndarray, crop: tuple
) -> np.ndarray:
    """Components of ``signal >= low`` inside ``allowed`` and ``crop`` touching ``marker``."""
    candidate = (signal[crop] >= low) & allowed[crop]
    labels, _ = label_components(candidate)
    hit = np.unique(labels[marker[crop] & candidate])
    out = np.zeros(signal.shape, bool)
    out[crop] = np.isin(labels, hit[hit > 0])
    return out


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """``ndi.binary_fill_holes(mask)``, computed in the mask's bounding box only.

    Exact: every background voxel outside the box grown by one voxel reaches the array border
    through background, so a cavity lies inside that box and is found there.
    """
    box = nonzero_box(mask)
    if box is None:
        return mask.copy()
    crop = _crop(box, mask.shape, [1] * mask.ndim)
    out = mask.copy()
    out[crop] = ndi.binary_fill_holes(mask[crop])
    return out


def _flood(
    select: Callable[[tuple[slice, ...]], np.ndarray],
    marker: np.ndarray,
    shape: Sequence[int],
    margin: Sequence[int],
) -> tuple[tuple[slice, ...], np.ndarray]:
    """The 26-connected components of a candidate set that contain a marker voxel.

    ``select(crop)`` returns the boolean candidate set on the array region ``crop``;
    ``marker`` is an ``(n, 3)`` array of voxel indices. The components are labelled in the
    markers' bounding box grown by ``margin`` voxels, and the box is doubled until no
    selected component touches a side of it that is not the array border, so the result is
    exactly that of labelling the whole array. Returns ``(crop, mask on crop)``.
    """
    marker = np.asarray(marker, int).reshape(-1, 3)
    lo, hi = marker.min(0), marker.max(0) + 1
    seed_box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    margin = [max(int(m), 1) for m in margin]
    while True:
        crop = _crop(seed_box, shape, margin)
        candidate = select(crop)
        labels, _ = label_components(candidate)
        local = marker - [s.start for s in crop]
        hit = np.unique(labels[tuple(local.T)])
        keep = np.zeros(int(labels.max(initial=0)) + 1, bool)
        keep[hit[hit > 0]] = True
        grown = keep[labels]
        touches = any(
            (crop[a].start > 0 and grown.take(0, axis=a).any())
            or (crop[a].stop < shape[a] and grown.take(-1, axis=a).any())
            for a in range(len(shape))
        )
        if not touches:
            return crop, grown
        margin = [2 * m for m in margin]


def _keep_hit(mask: np.ndarray, marker: np.ndarray, margin: Sequence[int]) -> np.ndarray:
    """The components of ``mask`` containing a voxel of ``marker`` (boolean array or indices)."""
    if marker.dtype == bool:
        marker = np.argwhere(marker & mask)
    else:
        marker = marker[mask[tuple(np.asarray(marker).T)]]
    out = np.zeros(mask.shape, bool)
    if len(marker) == 0:
        return out
    crop, grown = _flood(lambda c: mask[c], marker, mask.shape, margin)
    out[crop] = grown
    return out


# ----------------------------------------------------------------------------------------- MR
def segment_graft_mr(
    mr: Volume,
    *,
    method: MRMethod | str = MRMethod.REFERENCE,
    k: float = 5.0,
    polarity: Polarity | str = Polarity.BRIGHT,
    reference: Volume | None = None,
    region: Volume | None = None,
    seeds_mm: Sequence[Sequence[float]] | None = None,
    classes: int = 3,
    boundary_fraction: float | None = 0.5,
    threshold: float | None = None,
    min_volume_mm3: float = 10.0,
    _marker: np.ndarray | None = None,
) -> Volume:
    """Delineate the graft on an MR image.

    Parameters
    ----------
    mr : Volume
        MR image (T2, T1 post-contrast or T2* for ``polarity='dark'``).
    method : MRMethod or str
        ``'reference'`` (default), ``'otsu'``, ``'multi_otsu'`` or ``'region_growing'``.
    k : float
        Detection threshold in reference-muscle SDs (``reference`` method).
    polarity : Polarity or str
        ``'bright'`` (default) or ``'dark'`` (iron-labelled islets, hypointense).
    reference : Volume, optional
        Reference-muscle ROI mask on the MR grid, e.g. from :func:`reference_muscle_roi`.
        Default: all muscle tissue of :func:`muscle_masks` (which leaves out the graft and
        the voxels next to it), whose SD then includes the bias field and the differences
        between muscles, a robust detection scale.
    region : Volume, optional
        Search region mask (default: the muscle compartment from :func:`muscle_mask`).
    seeds_mm : (n, 3) array_like, optional
        LPS seed points in mm. Required for ``region_growing``; for the other methods only
        the components containing a seed are kept.
    classes : int
        Number of classes of ``multi_otsu``.
    boundary_fraction : float or None
        Where the edge of each object is placed between the muscle mean (0) and the object's
        median intensity (1); None keeps the detection threshold as the edge.
    threshold : float, optional
        Explicit lower intensity bound (upper for ``dark``) for ``region_growing``.
    min_volume_mm3 : float
        Objects smaller than this (mm³) are dropped.

    Returns
    -------
    Volume
        Boolean mask on the MR grid with provenance meta.

    Raises
    ------
    SegmentationError
        Unknown method, missing seeds, mask grids that do not match, or nothing found.
    """
    method = as_enum(MRMethod, method, "method")
    polarity = as_enum(Polarity, polarity, "polarity")
    sign = 1.0 if polarity is Polarity.BRIGHT else -1.0
    signal = sign * np.asarray(mr.array, dtype=np.float32)
    tissue = None
    if region is None:
        tissue, region = muscle_masks(mr, exclude_dark_edges=polarity is Polarity.DARK)
    else:
        check_same_grid(mr, region, "region")
    allowed = region.array.astype(bool)
    seeds = None if seeds_mm is None else seeds_to_indices(mr, seeds_mm)
    margin = _margin(mr.spacing, FLOOD_MARGIN_MM)
    params: dict[str, Any] = {
        "polarity": polarity.value,
        "min_volume_mm3": min_volume_mm3,
        "seeds_mm": None if seeds_mm is None else np.asarray(seeds_mm, float).tolist(),
    }
    ref_stats = None
    if method in (MRMethod.REFERENCE, MRMethod.REGION_GROWING):
        if reference is None:
            if tissue is None:
                tissue, _ = muscle_masks(mr)
            reference = tissue.with_meta(method="reference_muscle_tissue")
        check_same_grid(mr, reference, "reference")
        ref_values = signal[reference.array.astype(bool)]
        if ref_values.size < 2:
            raise SegmentationError("reference ROI is empty", tag="reference", value=0)
        ref_stats = (float(ref_values.mean()), float(ref_values.std()))
        params["reference_mean"] = sign * ref_stats[0]
        params["reference_sd"] = ref_stats[1]
        params["reference_method"] = reference.meta.get("method")
        params["boundary_fraction"] = boundary_fraction

    if method is MRMethod.REFERENCE:
        mean, sd = ref_stats
        high = mean + k * sd
        params["k"] = k
        params["threshold"] = sign * high
        mask = _hysteresis(
            mr, signal, allowed, k, mean, sd, boundary_fraction, min_volume_mm3, seeds=seeds
        )
    elif method is MRMethod.OTSU:
        t = float(threshold_otsu(signal[allowed]))
        params["threshold"] = sign * t
        mask = (signal > t) & allowed
    elif method is MRMethod.MULTI_OTSU:
        ts = threshold_multiotsu(signal[allowed], classes=classes)
        params.update(classes=classes, threshold=sign * float(ts[-1]))
        mask = (signal > ts[-1]) & allowed
    else:
        if seeds is None:
            raise SegmentationError(
                "region growing needs seed points",
                tag="seeds_mm",
                value=None,
                hint="give one or more LPS points in mm inside the graft",
            )
        mean, sd = ref_stats
        mask = np.zeros(mr.shape, bool)
        lows = []
        for seed in seeds:
            if threshold is not None:
                low = sign * threshold
            else:
                level = float(np.median(_ball_values(signal, seed, mr.spacing, 1.5)))
                low = mean + (0.5 if boundary_fraction is None else boundary_fraction) * (
                    level - mean
                )
            lows.append(sign * low)
            if signal[tuple(seed)] < low:
                continue

            def select(crop, low=low, seed=seed):
                inside = allowed[crop].copy()
                inside[tuple(seed - [c.start for c in crop])] = True
                return inside & (signal[crop] >= low)

            crop, grown = _flood(select, seed, mr.shape, margin)
            mask[crop] |= grown
        params["threshold"] = lows
    if seeds is not None and method is not MRMethod.REGION_GROWING:
        mask = _keep_hit(mask, seeds, margin)
    if _marker is not None:
        mask = _keep_hit(mask, _marker, margin)
    mask = _fill_holes(mask)
    result = mask_volume(mr, mask, method=f"mr_{method.value}", parameters=params)
    return remove_small_objects(result, min_volume_mm3=min_volume_mm3)


def _hysteresis(
    mr: Volume,
    signal: np.ndarray,
    allowed: np.ndarray,
    k: float,
    mean: float,
    sd: float,
    boundary_fraction: float | None,
    min_volume_mm3: float,
    seeds: np.ndarray | None = None,
) -> np.ndarray:
    """Cores above mean + k·SD, kept when they stand out from their own surroundings.

    For each core, the local muscle level ``b`` is the median of the search region in a shell
    :data:`BACKGROUND_SHELL_MM` around it (the reference mean when the shell is empty). A core
    whose level (90th percentile) is less than k·SD above ``b`` is a bias-field or
    muscle-signal variation and is dropped; otherwise its edge is placed at
    ``b + boundary_fraction·(level − b)`` (at least 2 SD above ``b``) and the region is grown
    from the core down to that level. With ``seeds`` (voxel indices, ``(n, 3)``) only the cores
    that can reach the seeds' object are grown: the objects containing a seed are then
    exactly those obtained with every core grown, the other objects may be missing.
    """
    core = (signal >= mean + k * sd) & allowed
    box = nonzero_box(core)
    if box is None:
        return core
    # the cores are labelled in their bounding box only (same components, less work)
    labels = np.zeros(mr.shape, np.int32)
    labels[box], n = label_components(core[box])
    voxel_mm3 = float(np.prod(mr.spacing))
    counts = np.bincount(labels[box].ravel(), minlength=n + 1)
    margin = _margin(mr.spacing, BACKGROUND_SHELL_MM[1])
    out = np.zeros(mr.shape, bool)
    crops = {}
    for index, local_slices in enumerate(ndi.find_objects(labels[box]), start=1):
        if local_slices is None or counts[index] * voxel_mm3 < min_volume_mm3 / 4:
            continue
        slices = tuple(
            slice(s.start + b.start, s.stop + b.start)
            for s, b in zip(local_slices, box, strict=True)
        )
        crops[index] = _crop(slices, mr.shape, margin)

    def grow(index: int) -> None:
        """Add the region grown from core ``index`` (it lies within ``crops[index]``)."""
        crop = crops[index]
        this = labels[crop] == index
        values = signal[crop]
        level = float(np.percentile(values[this], LEVEL_PCT))
        shell = _shell(this, mr.spacing, BACKGROUND_SHELL_MM) & allowed[crop] & ~core[crop]
        local = float(np.median(values[shell])) if shell.sum() >= 10 else mean
        if level - local < k * sd:
            return
        if boundary_fraction is None:
            out[crop] |= this
            return
        low = max(local + boundary_fraction * (level - local), local + 2.0 * sd)
        marker = this & (values >= low)
        if not marker.any():
            return
        candidate = (values >= low) & allowed[crop]
        grown, _ = label_components(candidate)
        hit = np.unique(grown[marker & candidate])
        out[crop] |= np.isin(grown, hit[hit > 0])

    if seeds is None:
        for index in crops:
            grow(index)
        return out
    # Only the objects connected to a seed are kept afterwards: grow the cores whose region
    # (within their crop) can touch the seeds' object found so far, until no other can.
    # The seeds' object is then the same as with every core grown.
    lo, hi = seeds.min(0), seeds.max(0) + 1
    todo = dict(crops)
    while True:
        near = [
            index
            for index, crop in todo.items()
            if all(c.start <= b and c.stop >= a for c, a, b in zip(crop, lo, hi, strict=True))
        ]
        if not near:
            return out
        for index in near:
            grow(index)
            del todo[index]
        kept = nonzero_box(_keep_hit(out, seeds, margin))
        if kept is not None:
            lo = np.minimum(seeds.min(0), [s.start for s in kept])
            hi = np.maximum(seeds.max(0) + 1, [s.stop for s in kept])


# ---------------------------------------------------------------------------------------- PET
def _local_max(suv: np.ndarray, index: np.ndarray, spacing, radius_mm: float) -> np.ndarray:
    ball = ball_footprint(spacing, radius_mm)
    half = np.array(ball.shape) // 2
    lo = np.maximum(index - half, 0)
    hi = np.minimum(index + half + 1, suv.shape)
    sub = suv[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
    bsub = ball[
        tuple(slice(lo[a] - (index[a] - half[a]), hi[a] - (index[a] - half[a])) for a in range(3))
    ]
    flat = np.where(bsub, sub, -np.inf)
    return lo + np.array(np.unravel_index(int(np.argmax(flat)), sub.shape))


def _hot_spots(
    suv: Volume,
    values: np.ndarray,
    allowed: np.ndarray,
    seeds: np.ndarray | None,
    min_peak_suv: float | None,
    search_radius_mm: float,
) -> list[np.ndarray]:
    if seeds is not None:
        return [_local_max(values, s, suv.spacing, search_radius_mm) for s in seeds]
    masked = np.where(allowed, values, -np.inf)
    if min_peak_suv is None:
        return [np.array(np.unravel_index(int(np.argmax(masked)), values.shape))]
    peaks = (masked == ndi.maximum_filter(masked, size=3)) & (masked >= min_peak_suv)
    found = np.argwhere(peaks)
    order = np.argsort(-values[tuple(found.T)], kind="stable")
    return [found[i] for i in order]


def segment_graft_pet(
    suv: Volume,
    *,
    method: PETMethod | str = PETMethod.PERCENT_MAX,
    fraction: float | None = None,
    threshold: float | None = None,
    seeds_mm: Sequence[Sequence[float]] | None = None,
    region: Volume | None = None,
    min_peak_suv: float | None = None,
    search_radius_mm: float = 10.0,
    background_shell_mm: tuple[float, float] = (5.0, 15.0),
    min_volume_mm3: float = 0.0,
) -> Volume:
    """Delineate the graft (hot spots) on a PET SUV image.

    Parameters
    ----------
    suv : Volume
        PET image in SUV (or Bq/mL: thresholds are then in those units).
    method : PETMethod or str
        ``'percent_max'`` (default), ``'background_corrected'``, ``'absolute'`` or
        ``'region_growing'`` (see the module docstring).
    fraction : float, optional
        Fraction of SUVmax (default 0.41 for ``percent_max``, 0.5 otherwise).
    threshold : float, optional
        SUV threshold for ``absolute`` (required) and ``region_growing``.
    seeds_mm : (n, 3) array_like, optional
        LPS seeds (mm). With seeds, each hot spot is the maximum within ``search_radius_mm`` of
        a seed. Without seeds, the brightest voxel of ``region`` is the one hot spot, or, with
        ``min_peak_suv``, every local maximum ≥ ``min_peak_suv``.
    region : Volume, optional
        Search region mask, any grid (resampled nearest-neighbour onto the PET grid).
    background_shell_mm : (float, float)
        Inner and outer distance (mm) of the background shell (``background_corrected``).
    min_volume_mm3 : float
        Objects smaller than this (mm³) are dropped.

    Returns
    -------
    Volume
        Boolean mask on the PET grid with provenance meta.
    """
    method = as_enum(PETMethod, method, "method")
    values = np.asarray(suv.array, dtype=np.float32)
    allowed = _region(suv, region)
    seeds = None if seeds_mm is None else seeds_to_indices(suv, seeds_mm)
    if fraction is None:
        fraction = 0.41 if method is PETMethod.PERCENT_MAX else 0.5
    if not 0 < fraction < 1:
        raise SegmentationError("must be between 0 and 1", tag="fraction", value=fraction)
    params: dict[str, Any] = {
        "fraction": fraction,
        "seeds_mm": None if seeds_mm is None else np.asarray(seeds_mm, float).tolist(),
        "min_volume_mm3": min_volume_mm3,
    }
    everything = tuple(slice(0, n) for n in suv.shape)
    if method is PETMethod.ABSOLUTE:
        if threshold is None:
            raise SegmentationError(
                "the absolute method needs a threshold",
                tag="threshold",
                value=None,
                hint="give the SUV threshold, e.g. threshold=2.5",
            )
        params = {"threshold": threshold, "min_volume_mm3": min_volume_mm3}
        mask = (values >= threshold) & allowed
        if seeds is not None:
            mask = _keep_hit(mask, seeds, _margin(suv.spacing, FLOOD_MARGIN_MM))
    elif method is PETMethod.REGION_GROWING:
        if seeds is None:
            raise SegmentationError(
                "region growing needs seed points",
                tag="seeds_mm",
                value=None,
                hint="give one or more LPS points in mm inside the hot spot",
            )
        mask = np.zeros(suv.shape, bool)
        used = []
        for seed in seeds:
            low = threshold if threshold is not None else fraction * float(values[tuple(seed)])
            used.append(low)
            marker = np.zeros(suv.shape, bool)
            marker[tuple(seed)] = True
            mask |= _grow(values, allowed | marker, low, marker, everything)
        params["threshold"] = used
    else:
        spots = _hot_spots(suv, values, allowed, seeds, min_peak_suv, search_radius_mm)
        mask = np.zeros(suv.shape, bool)
        used = []
        for spot in spots:
            if mask[tuple(spot)]:
                continue
            peak = float(values[tuple(spot)])
            marker = np.zeros(suv.shape, bool)
            marker[tuple(spot)] = True
            if method is PETMethod.PERCENT_MAX:
                low = fraction * peak
            else:
                background = _shell_background(
                    suv, values, allowed, marker, 0.5 * peak, background_shell_mm
                )
                low = background + fraction * (peak - background)
            used.append({"peak": peak, "threshold": low})
            mask |= _grow(values, allowed | marker, low, marker, everything)
        params["hot_spots"] = used
        params["min_peak_suv"] = min_peak_suv
        if method is PETMethod.BACKGROUND_CORRECTED:
            params["background_shell_mm"] = list(background_shell_mm)
    result = mask_volume(suv, mask, method=f"pet_{method.value}", parameters=params)
    return remove_small_objects(result, min_volume_mm3=min_volume_mm3)


def _shell_background(
    suv: Volume,
    values: np.ndarray,
    allowed: np.ndarray,
    marker: np.ndarray,
    level: float,
    shell_mm: tuple[float, float],
) -> float:
    """Median SUV in a shell ``shell_mm`` around the ``level`` region grown from ``marker``."""
    everything = tuple(slice(0, n) for n in suv.shape)
    core = _grow(values, allowed | marker, level, marker, everything)
    slices = ndi.find_objects(core.astype(np.uint8))[0]
    crop = _crop(slices, suv.shape, _margin(suv.spacing, shell_mm[1]))
    shell = _shell(core[crop], suv.spacing, shell_mm) & allowed[crop]
    if not shell.any():
        raise SegmentationError(
            "no background voxel around the hot spot", tag="background_shell_mm", value=shell_mm
        )
    return float(np.median(values[crop][shell]))


# --------------------------------------------------------------------------------- PET-guided
def segment_graft_mr_pet_guided(
    mr: Volume,
    suv: Volume,
    *,
    pet_method: PETMethod | str = PETMethod.PERCENT_MAX,
    fraction: float | None = 0.5,
    min_peak_suv: float | None = None,
    pet_seeds_mm: Sequence[Sequence[float]] | None = None,
    margin_mm: float = 5.0,
    k: float = 5.0,
    polarity: Polarity | str = Polarity.BRIGHT,
    reference: Volume | None = None,
    region: Volume | None = None,
    min_volume_mm3: float = 10.0,
) -> Volume:
    """MR graft delineation seeded by PET hot spots, measured on the MR grid.

    The PET hot spots (:func:`segment_graft_pet`) are resampled onto the MR grid
    (nearest-neighbour) and dilated by ``margin_mm`` to absorb registration and resolution
    errors; the MR ``reference`` delineation is then kept only where it touches them. ``suv``
    must already be registered to ``mr`` (same frame of reference, see
    :func:`islet_imaging.register.register_pet_to_mr`).

    Returns
    -------
    Volume
        Boolean mask on the MR grid; ``meta['guide_series_uid']`` is the PET series.
    """
    pet_mask = segment_graft_pet(
        suv,
        method=pet_method,
        fraction=fraction,
        min_peak_suv=min_peak_suv,
        seeds_mm=pet_seeds_mm,
    )
    zone = resample_mask_like(pet_mask, mr).array.astype(bool)
    if margin_mm > 0 and zone.any():
        zone = ndi.binary_dilation(zone, structure=ball_footprint(mr.spacing, margin_mm))
    if not zone.any():
        raise SegmentationError(
            "the PET hot spots do not overlap the MR field of view",
            tag="suv",
            value=suv.meta.get("series_uid"),
            hint="register the PET to the MR first",
        )
    mask = segment_graft_mr(
        mr,
        method=MRMethod.REFERENCE,
        k=k,
        polarity=polarity,
        reference=reference,
        region=region,
        min_volume_mm3=min_volume_mm3,
        _marker=zone,
    )
    params = {
        **dict(mask.meta["parameters"]),
        "pet_method": pet_mask.meta["method"],
        "pet_parameters": pet_mask.meta["parameters"],
        "margin_mm": margin_mm,
    }
    return mask.with_meta(
        method="mr_pet_guided", parameters=params, guide_series_uid=suv.meta.get("series_uid")
    )


# ----------------------------------------------------------------------------------- deposits
#: Two watershed parts stay separate deposits only if the distance map at the saddle between
#: them is at most this fraction of the smaller part's maximum (a real neck, not a bulge).
NECK_RATIO = 0.75


#: Two parts of a deposit component are separate deposits on the image when the dimmer part's
#: peak stands at least ``1 - BRIDGE_FRACTION`` of the component's contrast (its level minus the
#: local muscle level) above the saddle of the signal between them: the saddle lies below
#: :data:`BRIDGE_FRACTION` of the way from the muscle to the peak, a partial-volume bridge
#: across a gap between two deposits, not their full-signal interior.
BRIDGE_FRACTION = 0.8

#: ... and at least this many noise standard deviations above it (noise SD of the smoothed
#: signal, from the muscle shell). A noise bump of a uniform deposit stands above its saddle by
#: the difference of two noise values (SD ≈ √2·σ): 4σ is ≈ 2.8 SD of that difference. On a
#: uniform ball with white or correlated noise (CNR 2 to 10) bumps seeded deposits at 2σ, none
#: at 3σ; 4σ keeps a margin, and the phantoms' partial-volume bridges still cut up to 8σ.
NOISE_SIGMAS = 4.0

#: More candidate peaks than this in one component is noise or texture the noise estimate
#: missed, not deposits: that component is left to the shape-only split.
MAX_SIGNAL_PEAKS = 32

_FACES = [(1, 0, 0), (0, 1, 0), (0, 0, 1)]
#: the 13 "forward" offsets of the 26-neighbourhood (each neighbour pair once)
_NEIGHBOURS = [tuple(i - 1 for i in o) for o in np.ndindex(3, 3, 3) if o > (1, 1, 1)]


def _saddles(
    parts: np.ndarray, height: np.ndarray, offsets: Sequence[tuple[int, int, int]]
) -> dict[tuple[int, int], float]:
    """Highest ``min(height)`` over the neighbour pairs (``offsets``) joining two parts."""
    saddle: dict[tuple[int, int], float] = {}
    for offset in offsets:
        a = tuple(
            slice(max(0, -o), n - max(0, o)) for o, n in zip(offset, parts.shape, strict=True)
        )
        b = tuple(
            slice(max(0, o), n - max(0, -o)) for o, n in zip(offset, parts.shape, strict=True)
        )
        left, right = parts[a], parts[b]
        touch = (left != right) & (left > 0) & (right > 0)
        pairs = np.stack(
            [np.minimum(left[touch], right[touch]), np.maximum(left[touch], right[touch])], 1
        )
        values = np.minimum(height[a][touch], height[b][touch])
        for (p, q), value in zip(map(tuple, pairs.tolist()), values.tolist(), strict=True):
            saddle[(p, q)] = max(saddle.get((p, q), -np.inf), value)
    return saddle


def _merged(parts: np.ndarray, pairs: Sequence[tuple[int, int]]) -> np.ndarray:
    """``parts`` with the parts of each pair merged, relabelled 1..m in order of first label."""
    parent = list(range(int(parts.max()) + 1))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for p, q in pairs:
        parent[find(p)] = find(q)
    roots = np.array([find(x) for x in range(len(parent))])
    _, relabel = np.unique(roots, return_inverse=True)
    return relabel.astype(np.int32)[parts]


def _merge_shallow(parts: np.ndarray, distance: np.ndarray) -> np.ndarray:
    """Merge adjacent watershed parts joined by a wide neck (see :data:`NECK_RATIO`)."""
    peaks = ndi.maximum(distance, parts, np.arange(int(parts.max()) + 1))
    saddle = _saddles(parts, distance, _FACES)
    return _merged(
        parts,
        [(p, q) for (p, q), v in saddle.items() if v > NECK_RATIO * min(peaks[p], peaks[q])],
    )


def _split_by_shape(this: np.ndarray, spacing: Sequence[float], depth: float) -> np.ndarray:
    """Watershed parts of the distance map of ``this`` (see :func:`split_deposits`)."""
    distance = ndi.distance_transform_edt(this, sampling=spacing)
    markers, count = ndi.label(h_maxima(distance, depth), structure=np.ones((3, 3, 3)))
    if count < 2:
        return this.astype(np.int32)
    return _merge_shallow(watershed(-distance, markers, mask=this), distance)


def _split_by_signal(
    this: np.ndarray,
    signal: np.ndarray,
    muscle: np.ndarray,
    spacing: Sequence[float],
    min_voxels: float,
) -> np.ndarray:
    """Parts of one component separated by partial-volume bridges of the signal.

    ``signal`` is the image (negated for dark grafts) on the crop of ``this``, ``muscle`` the
    crop's voxels where the local muscle level is measured (a shell around the component).
    The signal is first smoothed by a Gaussian of σ = the finest voxel dimension (mm, the
    same on every axis: a voxel in-plane, less across thick slices, so a bridge one slice
    thick is kept). On the smoothed signal: ``b`` the median and ``σ`` the noise SD
    (MAD × 1.4826) of the muscle voxels, ``level`` the 90th percentile of the component and
    ``h = max((1 − BRIDGE_FRACTION)·(level − b), NOISE_SIGMAS·σ)``. The cores are the
    regional maxima of the reconstruction of ``signal − h`` under ``signal``: around each
    peak standing at least ``h`` above the saddle to a higher one, the voxels within ``h`` of
    it (equal peaks joined above that level are one core). More than
    :data:`MAX_SIGNAL_PEAKS` cores is noise: the component is returned whole. The other
    voxels (rims, bridges) go to the nearest core (watershed of the distance to the cores,
    26-connected), so the parts' union is the component and a dimmer deposit keeps its rim
    next to a brighter one. A part smaller than ``min_voxels`` is merged into the neighbour
    it shares the highest saddle of the signal with.
    """
    parts = this.astype(np.int32)
    if muscle.sum() < 10:
        return parts
    sigma = [min(spacing) / d for d in spacing]
    smooth = ndi.gaussian_filter(signal.astype(np.float64), sigma, mode="nearest")
    inside = smooth[this]
    background = float(np.median(smooth[muscle]))
    noise_sd = 1.4826 * float(np.median(np.abs(smooth[muscle] - background)))
    contrast = float(np.percentile(inside, LEVEL_PCT)) - background
    if contrast <= 0:
        return parts
    h = max((1 - BRIDGE_FRACTION) * contrast, NOISE_SIGMAS * noise_sd)
    height = np.where(this, smooth, inside.min())
    full = np.ones((3, 3, 3), bool)
    dome = reconstruction(height - h, height, footprint=full)
    cores, count = ndi.label(local_maxima(dome, footprint=full) & this, structure=full)
    if not 2 <= count <= MAX_SIGNAL_PEAKS:
        return parts
    away = ndi.distance_transform_edt(cores == 0, sampling=spacing)
    parts = watershed(away, cores, mask=this, connectivity=full).astype(np.int32)
    while parts.max() > 1:
        sizes = np.bincount(parts.ravel())
        small = int(np.argmin(np.where(np.arange(sizes.size) > 0, sizes, np.inf)))
        if sizes[small] >= min_voxels:
            break
        saddle = {k: v for k, v in _saddles(parts, height, _NEIGHBOURS).items() if small in k}
        parts = _merged(parts, [max(saddle, key=saddle.get)])
    return parts


def split_deposits(
    mask: Volume,
    *,
    image: Volume | None = None,
    polarity: Polarity | str = Polarity.BRIGHT,
    min_volume_mm3: float = 10.0,
    separate_touching: bool = True,
    split_depth_mm: float | None = None,
) -> Volume:
    """Label the deposits of a graft mask.

    Deposits are the 26-connected components. With ``separate_touching``:

    1. With ``image``, a component is first cut where its signal shows a partial-volume
       bridge between deposits that are apart (a gap thinner than a voxel keeps them in one
       component): a maximum of the signal seeds its own part when it stands at least
       ``1 −`` :data:`BRIDGE_FRACTION` of the component's contrast above the saddle joining
       it to a higher maximum, and at least :data:`NOISE_SIGMAS` noise SDs (so noise bumps
       of one uniform deposit never seed). The signal is smoothed first (Gaussian, σ = the
       finest voxel dimension in mm). The contrast is the component's level (90th
       percentile) minus the local muscle level (median of the image in a shell
       :data:`BACKGROUND_SHELL_MM` around it, graft voxels left out), the same levels the
       MR delineation places edges with; the noise SD is the robust spread
       (MAD × 1.4826) of that shell. A component with more than :data:`MAX_SIGNAL_PEAKS`
       candidate seeds is left to step 2. The voxels within the required height of a
       seed's peak are its core; every other voxel (rims, bridges) goes to the nearest core,
       so the deposits' union is still the mask; a part smaller than ``min_volume_mm3`` goes
       back to the neighbour it shares the highest saddle with.
       Dark grafts (``polarity='dark'``) are handled on the negated signal.
    2. A component (or part) whose distance map (mm, computed with the physical voxel
       spacing) has several maxima standing more than ``split_depth_mm`` above the saddle
       between them is cut along the watershed of the distance map; two parts are merged back
       unless the saddle is at most :data:`NECK_RATIO` of the smaller part's maximum
       (touching spheres become two deposits; a single elongated ellipsoid stays one).

    Deposits below ``min_volume_mm3`` are dropped. Labels are 1..n by decreasing volume.

    Parameters
    ----------
    mask : Volume
        Boolean (or label) graft mask.
    image : Volume, optional
        The image the mask was delineated on (same grid). Without it, step 1 is skipped.
    polarity : Polarity or str
        ``'bright'`` (default) or ``'dark'``: whether the graft is brighter or darker than
        muscle on ``image``.
    min_volume_mm3 : float
        Smallest deposit kept, in mm³.
    separate_touching : bool
        Split touching deposits by watershed (default True).
    split_depth_mm : float, optional
        Minimum depth (mm) of a distance-map maximum to seed its own deposit; default: the
        largest voxel dimension (robust to staircase artefacts of thick slices).

    Returns
    -------
    Volume
        int32 label map, ``meta['kind'] = 'mask'``, ``meta['method'] = 'deposits_watershed'``
        or ``'deposits_components'``, ``meta['parameters']``.

    Raises
    ------
    SegmentationError
        ``image`` not on the mask's grid, or an unknown ``polarity``.
    """
    polarity = as_enum(Polarity, polarity, "polarity")
    signal = None
    if image is not None:
        check_same_grid(mask, image, "image")
        sign = 1.0 if polarity is Polarity.BRIGHT else -1.0
        signal = sign * np.asarray(image.array, dtype=np.float32)
    binary = mask.array.astype(bool)
    # components are labelled in the box of the mask only (same labels, in the same order)
    box = nonzero_box(binary) or tuple(slice(0, 0) for _ in mask.shape)
    labels = np.zeros(mask.shape, np.int32)
    labels[box], n = label_components(binary[box])
    depth = float(max(mask.spacing)) if split_depth_mm is None else float(split_depth_mm)
    voxel_mm3 = float(np.prod(mask.spacing))
    if separate_touching and n:
        margin = [1, 1, 1] if signal is None else _margin(mask.spacing, BACKGROUND_SHELL_MM[1])
        out = np.zeros(mask.shape, np.int32)
        next_label = 1
        for index, slices in enumerate(ndi.find_objects(labels), start=1):
            crop = _crop(slices, mask.shape, margin)
            this = labels[crop] == index
            pieces = this.astype(np.int32)
            if signal is not None:
                muscle = _shell(this, mask.spacing, BACKGROUND_SHELL_MM) & ~binary[crop]
                pieces = _split_by_signal(
                    this, signal[crop], muscle, mask.spacing, min_volume_mm3 / voxel_mm3
                )
            region = out[crop]
            for piece in range(1, int(pieces.max()) + 1):
                parts = _split_by_shape(pieces == piece, mask.spacing, depth)
                region[parts > 0] = parts[parts > 0] + next_label - 1
                next_label += max(int(parts.max()), 1)
        labels = out
    counts = np.bincount(labels[box].ravel(), minlength=1)
    counts[0] = 0
    order = [
        lab
        for lab in np.argsort(-counts, kind="stable")
        if counts[lab] * voxel_mm3 >= max(min_volume_mm3, 1e-12)
    ]
    lut = np.zeros(counts.size, np.int32)
    lut[order] = np.arange(1, len(order) + 1, dtype=np.int32)
    relabelled = np.zeros(mask.shape, np.int32)
    relabelled[box] = lut[labels[box]]
    params = {
        "min_volume_mm3": min_volume_mm3,
        "separate_touching": separate_touching,
        "split_depth_mm": depth,
        "connectivity": 26,
        "signal_split": signal is not None,
    }
    if signal is not None:
        params.update(
            polarity=polarity.value,
            bridge_fraction=BRIDGE_FRACTION,
            noise_sigmas=NOISE_SIGMAS,
            max_signal_peaks=MAX_SIGNAL_PEAKS,
        )
    method = "deposits_watershed" if separate_touching else "deposits_components"
    meta = {
        **{k: v for k, v in mask.meta.items() if k not in ("method", "parameters")},
        "kind": "mask",
        "method": method,
        "parameters": params,
        "graft_method": mask.meta.get("method"),
        "graft_parameters": mask.meta.get("parameters"),
    }
    return Volume(relabelled, mask.spacing, mask.origin, mask.direction, meta)
