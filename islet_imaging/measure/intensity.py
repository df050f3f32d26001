"""Intensity measurements: first-order statistics, SUVmax/mean/peak, uptake, ratios, CNR.

First-order statistics follow PyRadiomics' definitions (without resampling, normalisation or
discretisation, which do not affect them): ``mean``, ``sd`` (population, ``ddof=0``, i.e. the
square root of PyRadiomics' ``Variance``), ``minimum``, ``maximum``, ``median``,
``percentile_10`` and ``percentile_90`` (NumPy's linear interpolation, as PyRadiomics), all in
float64.

SUVpeak (PERCIST)
    The mean SUV in a 1 cm³ sphere (radius 6.2035 mm) whose centre may be any voxel centre of
    the graft mask; the sphere itself samples the whole image (it may extend beyond the mask).
    The sphere is discretised on the PET grid with partial-voxel weights (each voxel's fraction
    inside the sphere, from ``subsample``³ points per voxel) and the weights are normalised to
    sum to 1. The maximum over centres is found with one correlation of the image with this
    kernel over the mask's bounding box (plus the sphere radius) only.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from scipy.signal import fftconvolve

from islet_imaging.errors import IsletImagingError
from islet_imaging.volume import Volume

__all__ = [
    "PEAK_SPHERE_ML",
    "contrast_to_noise",
    "first_order",
    "sphere_kernel",
    "suv_peak",
]

#: Volume of the PERCIST SUVpeak sphere, mL.
PEAK_SPHERE_ML = 1.0


def _values(image: Volume, mask: np.ndarray) -> np.ndarray:
    values = np.asarray(image.array)[mask].astype(np.float64)
    if values.size == 0:
        raise IsletImagingError("the mask selects no voxel of the image", tag="mask", value=0)
    return values


def first_order(image: Volume, mask: np.ndarray) -> dict[str, float]:
    """First-order statistics of ``image`` inside the boolean array ``mask`` (same grid).

    Returns
    -------
    dict
        ``mean, sd, variance, minimum, maximum, median, percentile_10, percentile_90`` in the
        image's units (variance in units²).

    Examples
    --------
    >>> import numpy as np
    >>> from islet_imaging.volume import Volume
    >>> img = Volume(np.arange(8, dtype=np.float32).reshape(2, 2, 2))
    >>> first_order(img, img.array >= 4)["mean"]
    5.5
    """
    return _statistics(_values(image, np.asarray(mask, bool)))


def _statistics(values: np.ndarray) -> dict[str, float]:
    """First-order statistics of a non-empty float64 array of voxel values."""
    p10, median, p90 = np.percentile(values, [10, 50, 90])
    return {
        "mean": float(values.mean()),
        "sd": float(values.std()),
        "variance": float(values.var()),
        "minimum": float(values.min()),
        "maximum": float(values.max()),
        "median": float(median),
        "percentile_10": float(p10),
        "percentile_90": float(p90),
    }


@lru_cache(maxsize=16)
def sphere_kernel(
    spacing: tuple[float, float, float], volume_ml: float = PEAK_SPHERE_ML, subsample: int = 7
) -> np.ndarray:
    """Partial-voxel weights of a sphere of ``volume_ml`` centred on a voxel, summing to 1.

    Parameters
    ----------
    spacing : 3 floats
        Voxel size (z, y, x) in mm.
    volume_ml : float
        Sphere volume in mL (1 mL for PERCIST SUVpeak).
    subsample : int
        Points per voxel and axis used to estimate each voxel's fraction inside the sphere.

    Returns
    -------
    ndarray, shape (2 hz + 1, 2 hy + 1, 2 hx + 1)
        Weights (float64), sum 1.

    Examples
    --------
    >>> k = sphere_kernel((1.0, 1.0, 1.0))
    >>> k.shape, round(float(k.sum()), 6)
    ((13, 13, 13), 1.0)
    """
    radius = (3.0 * volume_ml * 1000.0 / (4.0 * math.pi)) ** (1.0 / 3.0)
    half = [math.ceil(radius / s - 0.5) for s in spacing]
    offsets = (np.arange(subsample) + 0.5) / subsample - 0.5
    axes = [
        ((np.arange(-h, h + 1)[:, None] + offsets[None, :]) * s)
        for h, s in zip(half, spacing, strict=True)
    ]
    sq = [a**2 for a in axes]  # (n, sub) per axis
    inside = (
        sq[0][:, None, None, :, None, None]
        + sq[1][None, :, None, None, :, None]
        + sq[2][None, None, :, None, None, :]
    ) <= radius**2
    weights = inside.mean(axis=(3, 4, 5))
    return weights / weights.sum()


def suv_peak(
    suv: Volume, mask: np.ndarray, *, volume_ml: float = PEAK_SPHERE_ML
) -> tuple[float, np.ndarray]:
    """SUVpeak: the highest mean SUV in a ``volume_ml`` sphere centred in the mask.

    Parameters
    ----------
    suv : Volume
        PET image (SUV or Bq/mL; the result has the same units).
    mask : ndarray of bool, shape ``suv.shape``
        Voxels allowed as sphere centres (the graft on the PET grid).
    volume_ml : float
        Sphere volume (1 mL, PERCIST).

    Returns
    -------
    (float, ndarray)
        SUVpeak and the LPS position (mm) of the sphere centre.
    """
    return _suv_peak(suv, np.asarray(mask, bool), np.zeros(3, int), volume_ml=volume_ml)


def _suv_peak(
    suv: Volume, mask: np.ndarray, offset: np.ndarray, *, volume_ml: float = PEAK_SPHERE_ML
) -> tuple[float, np.ndarray]:
    """:func:`suv_peak` with ``mask`` given on the box of ``suv`` starting at index ``offset``."""
    if not mask.any():
        raise IsletImagingError("the mask selects no voxel of the image", tag="mask", value=0)
    kernel = sphere_kernel(tuple(float(s) for s in suv.spacing), float(volume_ml))
    half = np.array(kernel.shape) // 2
    idx = np.argwhere(mask)
    lo, hi = idx.min(0), idx.max(0) + 1
    mask = mask[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))]
    lo, hi = lo + offset, hi + offset
    # image crop covering every sphere around the allowed centres, zero-padded at the edges
    pad_lo = lo - half
    pad_hi = hi + half
    src = tuple(
        slice(max(0, a), min(n, b)) for a, b, n in zip(pad_lo, pad_hi, suv.shape, strict=True)
    )
    crop = np.zeros(tuple(pad_hi - pad_lo), np.float64)
    dst = tuple(slice(s.start - a, s.stop - a) for s, a in zip(src, pad_lo, strict=True))
    crop[dst] = suv.array[src]
    means = fftconvolve(crop, kernel[::-1, ::-1, ::-1], mode="valid")
    means = np.where(mask, means, -np.inf)
    best = np.unravel_index(int(np.argmax(means)), means.shape)
    centre = suv.index_to_world(np.asarray(best) + lo)
    return float(means[best]), centre


def contrast_to_noise(graft_mean: float, reference_mean: float, reference_sd: float) -> float:
    """CNR = (graft mean − reference mean) / reference SD (dimensionless).

    Examples
    --------
    >>> contrast_to_noise(220.0, 100.0, 8.0)
    15.0
    """
    if reference_sd <= 0:
        raise IsletImagingError("reference SD must be > 0", tag="reference_sd", value=reference_sd)
    return (graft_mean - reference_mean) / reference_sd
