"""Partial-volume correction of PET region means for small deposits.

The scanner point-spread function (PSF) is modelled as a Gaussian of full width at half maximum
``fwhm_mm`` (a float, or 3 floats along the image axes z, y, x). Regions are label maps on
any grid (typically the MR deposits); their occupancy of each PET voxel and their spread are
computed on a grid ``subsample`` times finer than the PET voxels, then averaged back over each
PET voxel, which models the PSF and the voxel integration of the scanner. A deposit therefore
need not be delineated on the coarse PET grid.

Recovery coefficient (RC)
    For a region with weights ``w`` (its occupancy), ``RC = Σ w · (PSF ⊗ w') / Σ w`` where
    ``w'`` is the region's indicator: the fraction of a uniform activity inside the region that
    is still measured inside it after blurring. With a uniform background ``B`` around the
    region, the measured mean is ``RC·A + (1 − RC)·B``, so ``A = (m − (1 − RC)·B) / RC``.
    With ``B = 0`` this is the classic ``A = m / RC``.
Geometric transfer matrix (GTM, Rousset et al. 1998)
    With regions ``i = 1..n`` (deposits) and two background regions (a near ring, usually
    the host muscle, and everything farther), ``G[i, j] = Σ w_i · (PSF ⊗ f_j) / Σ w_i`` and the
    measured means ``t_i`` satisfy ``t = G a``; the true means ``a`` are obtained by solving
    the linear system.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage as ndi

from islet_imaging.errors import IsletImagingError
from islet_imaging.measure._grid import sample_labels
from islet_imaging.volume import Volume

__all__ = [
    "FWHM_TO_SIGMA",
    "fwhm_from_volume",
    "gtm_correct",
    "psf_sigma_voxels",
    "rc_correct",
    "recovery_coefficient",
]

FWHM_TO_SIGMA = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))


def psf_sigma_voxels(fwhm_mm: float | Sequence[float], spacing: Sequence[float]) -> list[float]:
    """Gaussian sigma in voxels along (z, y, x) for a PSF of ``fwhm_mm`` (float or 3 floats)."""
    fwhm = np.broadcast_to(np.asarray(fwhm_mm, dtype=float), (3,))
    if np.any(fwhm <= 0) or not np.all(np.isfinite(fwhm)):
        raise IsletImagingError(
            "PSF FWHM must be positive (mm)",
            tag="fwhm_mm",
            value=fwhm_mm,
            hint="give the scanner resolution, e.g. fwhm_mm=6.0",
        )
    return [float(f * FWHM_TO_SIGMA / s) for f, s in zip(fwhm, spacing, strict=True)]


def fwhm_from_volume(volume: Volume) -> float | None:
    """PSF FWHM (mm) recorded with the image, or None when unknown.

    Looks at ``meta['psf_fwhm_mm']`` (set by the phantom or by the user), then at a private
    tag or the ``ConvolutionKernel`` (0018,1210) text of the first header only when it reads
    ``"psf fwhm <x> mm"``. Nothing is guessed from other fields: give ``fwhm_mm`` otherwise.
    """
    value = volume.meta.get("psf_fwhm_mm")
    if value is not None:
        return float(value)
    headers = volume.meta.get("headers") or ()
    if headers:
        kernel = str(getattr(headers[0], "ConvolutionKernel", "") or "")
        parts = kernel.lower().replace("=", " ").split()
        if "fwhm" in parts:
            i = parts.index("fwhm")
            try:
                return float(parts[i + 1])
            except (IndexError, ValueError):
                return None
    return None


def _fine_labels(
    image: Volume, labels: Volume, ids: Sequence[int], margin_mm: Sequence[float], sub: int
) -> tuple[tuple[slice, ...], np.ndarray]:
    """Crop of ``image`` around the labels (+ margin) and the labels sampled ``sub``× finer.

    Returns the crop (slices of the image grid) and an int array of shape ``crop × sub`` holding
    the label found (nearest voxel of ``labels``) at the centre of each sub-voxel.
    """
    present = np.argwhere(np.isin(labels.array, list(ids)))
    if present.size == 0:
        raise IsletImagingError("the label map is empty", tag="labels", value=list(ids))
    box = np.array([present.min(0) - 1, present.max(0) + 1], float)
    corners = np.array(np.meshgrid(*box.T, indexing="ij")).reshape(3, -1).T
    idx = image.world_to_index(labels.index_to_world(corners))
    margin = np.array([math.ceil(m / s) for m, s in zip(margin_mm, image.spacing, strict=True)])
    lo = np.maximum(np.floor(idx.min(0)).astype(int) - margin, 0)
    hi = np.minimum(np.ceil(idx.max(0)).astype(int) + 1 + margin, image.shape)
    if np.any(hi <= lo):
        raise IsletImagingError(
            "the labels lie outside the PET field of view",
            tag="labels",
            hint="register the PET to the MR first",
        )
    crop = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    return crop, sample_labels(labels, image, lo, hi, sub).astype(np.int32, copy=False)


def _coarse(fine: np.ndarray, sub: int) -> np.ndarray:
    nz, ny, nx = (n // sub for n in fine.shape)
    return fine.reshape(nz, sub, ny, sub, nx, sub).mean(axis=(1, 3, 5))


def _spread(indicator: np.ndarray, sigma_fine: Sequence[float], sub: int) -> np.ndarray:
    """Regional spread function on the coarse grid: blur on the fine grid, average back."""
    blurred = ndi.gaussian_filter(
        indicator.astype(np.float32), sigma_fine, mode="nearest", truncate=4.0
    )
    return _coarse(blurred, sub)


def recovery_coefficient(mask: Volume, *, fwhm_mm: float | Sequence[float]) -> float:
    """Mean recovery coefficient of a region on its own grid.

    ``RC = Σ m · (PSF ⊗ m) / Σ m`` for the mask ``m``: the fraction of a uniform activity in
    the region still measured inside it after blurring, in a cold background.

    Parameters
    ----------
    mask : Volume
        Boolean mask (or occupancy in [0, 1]) on a grid fine compared with the PSF.
    fwhm_mm : float or 3 floats
        PSF FWHM (mm).

    Returns
    -------
    float
        RC in (0, 1].

    Examples
    --------
    >>> import numpy as np
    >>> from islet_imaging.volume import Volume
    >>> cube = np.zeros((40, 40, 40)); cube[5:35, 5:35, 5:35] = 1
    >>> round(recovery_coefficient(Volume(cube), fwhm_mm=1.0), 2)
    0.99
    """
    fraction = np.asarray(mask.array, dtype=np.float64)
    sigma = psf_sigma_voxels(fwhm_mm, mask.spacing)
    idx = np.argwhere(fraction > 0)
    if idx.size == 0:
        raise IsletImagingError("the mask is empty", tag="mask", value=0)
    crop = tuple(slice(a, b + 1) for a, b in zip(idx.min(0), idx.max(0), strict=True))
    f = np.pad(fraction[crop], [(math.ceil(4 * s) + 1,) * 2 for s in sigma])
    blurred = ndi.gaussian_filter(f, sigma, mode="constant", truncate=4.0)
    return float((f * blurred).sum() / f.sum())


def _regions(image, labels, fwhm_mm, margin_mm, subsample):
    sigma = psf_sigma_voxels(fwhm_mm, image.spacing)
    sigma_fine = [s * subsample for s in sigma]
    fwhm = np.broadcast_to(np.asarray(fwhm_mm, float), (3,))
    margin = [2 * f + m for f, m in zip(fwhm, margin_mm, strict=True)]
    ids = sorted(int(v) for v in np.unique(labels.array) if v > 0)
    crop, fine = _fine_labels(image, labels, ids, margin, subsample)
    return ids, crop, fine, sigma_fine


def rc_correct(
    image: Volume,
    labels: Volume,
    *,
    fwhm_mm: float | Sequence[float],
    background: float = 0.0,
    subsample: int = 3,
) -> dict[int, dict[str, float]]:
    """Recovery-coefficient correction of the mean of each label, measured on ``image``.

    Each label's occupancy ``w`` on the PET grid and its spread ``PSF ⊗ w`` are computed on a
    grid ``subsample`` times finer than the PET voxels and averaged back, which models both
    the PSF and the voxel integration of the scanner. Label 0 in the result is the union.

    Parameters
    ----------
    image : Volume
        PET image (SUV or Bq/mL).
    labels : Volume
        Label map (any grid, e.g. the MR deposits).
    fwhm_mm : float or 3 floats
        PSF FWHM (mm).
    background : float
        Activity around the regions (same units), 0 for a cold background.
    subsample : int
        Sub-voxels per PET voxel and axis.

    Returns
    -------
    dict
        label -> ``{"measured": m, "rc": RC, "corrected": A}``, label 0 = all labels together.
    """
    ids, crop, fine, sigma_fine = _regions(image, labels, fwhm_mm, (0, 0, 0), subsample)
    img = np.asarray(image.array[crop], np.float64)
    out = {}
    for label in [0, *ids]:
        indicator = fine > 0 if label == 0 else fine == label
        weights = _coarse(indicator.astype(np.float32), subsample)
        if weights.sum() == 0:
            continue
        rc = float((weights * _spread(indicator, sigma_fine, subsample)).sum() / weights.sum())
        measured = float((img * weights).sum() / weights.sum())
        corrected = (measured - (1.0 - rc) * background) / rc
        out[label] = {"measured": measured, "rc": rc, "corrected": corrected}
    return out


def gtm_correct(
    image: Volume,
    labels: Volume,
    *,
    fwhm_mm: float | Sequence[float],
    background_rings_mm: tuple[float, float] = (8.0, 25.0),
    subsample: int = 3,
) -> dict[int | str, dict[str, float]]:
    """Geometric-transfer-matrix correction of region means (deposits + one background).

    Parameters
    ----------
    image : Volume
        PET image.
    labels : Volume
        Deposit label map (any grid).
    fwhm_mm : float or 3 floats
        PSF FWHM (mm).
    background_rings_mm : (float, float)
        The background is two regions: a near ring up to ``background_rings_mm[0]`` mm from
        the deposits (usually the host muscle) and everything farther (fat, bone, air...),
        whose row is measured out to ``background_rings_mm[1]`` mm.
    subsample : int
        Sub-voxels per PET voxel and axis for occupancies and spread functions.

    Returns
    -------
    dict
        label -> ``{"measured", "corrected"}``, ``"background"`` -> same keys, and
        ``"condition"`` -> ``{"value": condition number of G}``.
    """
    margin = (background_rings_mm[1],) * 3
    ids, crop, fine, sigma_fine = _regions(image, labels, fwhm_mm, margin, subsample)
    img = np.asarray(image.array[crop], np.float64)
    weights, spreads = [], []
    for label in ids:
        indicator = fine == label
        weights.append(_coarse(indicator.astype(np.float32), subsample).astype(np.float64))
        spreads.append(_spread(indicator, sigma_fine, subsample).astype(np.float64))
    occupied = np.clip(sum(weights), 0.0, 1.0)
    distance = ndi.distance_transform_edt(occupied == 0, sampling=image.spacing)
    near_mm, outer_mm = background_rings_mm
    rings = [distance <= near_mm, distance > near_mm]
    free = 1.0 - np.clip(sum((fine == lab) for lab in ids), 0, 1).astype(np.float32)
    rows = (rings[0] & (distance > 0), rings[1] & (distance <= outer_mm))
    for ring, row in zip(rings, rows, strict=True):
        if not row.any():
            raise IsletImagingError(
                "no background voxel around the deposits",
                tag="background_rings_mm",
                value=background_rings_mm,
                hint="enlarge the rings or the PET field of view",
            )
        up = ring
        for axis in range(3):
            up = np.repeat(up, subsample, axis=axis)
        spreads.append(_spread(free * up, sigma_fine, subsample).astype(np.float64))
        weights.append(row.astype(np.float64))
    n = len(weights)
    g = np.empty((n, n))
    measured = np.empty(n)
    for i, w in enumerate(weights):
        total = w.sum()
        measured[i] = (img * w).sum() / total
        for j, rsf in enumerate(spreads):
            g[i, j] = (rsf * w).sum() / total
    corrected = np.linalg.solve(g, measured)
    out: dict[int | str, dict[str, float]] = {
        int(lab): {"measured": float(measured[i]), "corrected": float(corrected[i])}
        for i, lab in enumerate(ids)
    }
    n_dep = len(ids)
    out["background"] = {"measured": float(measured[n_dep]), "corrected": float(corrected[n_dep])}
    out["background_far"] = {
        "measured": float(measured[n_dep + 1]),
        "corrected": float(corrected[n_dep + 1]),
    }
    out["condition"] = {"value": float(np.linalg.cond(g))}
    return out
