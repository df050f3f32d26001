"""Registration: PET to MR within a visit, a visit's MR to the baseline MR, and resampling.

Transforms follow the ITK convention: a :class:`Registration`'s ``transform`` maps a point of the
*fixed* image (LPS mm) to the corresponding point of the *moving* image. Resampling the moving
image onto the fixed grid with that transform therefore aligns it with the fixed image.

* :func:`register_pet_to_mr` starts from the identity (PET and MR share the frame of reference
  of a hybrid or co-registered acquisition) and refines a rigid transform by Mattes mutual
  information, sampled around the PET's uptake foci; a final pass searches the translation on
  the PET's uptake core only, against the MR smoothed to the PET's resolution (the forearm is
  a near-cylinder: along its axis only the graft fixes the position). A correction larger
  than a few mm / degrees is reported as implausible.
* :func:`register_to_baseline` must survive the arm being repositioned between visits (±15°,
  ±30 mm): it aligns the intensity centres of mass, scores a coarse grid of rotations at 1/4
  resolution (mutual information), then refines the best candidates over three resolution
  levels with normalised correlation (same sequence at both visits), optionally affine.

Failures (no overlap, the metric getting worse, an implausible result) raise
:class:`~islet_imaging.errors.RegistrationError`; nothing is returned silently.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from islet_imaging._atomic import atomic_path
from islet_imaging.errors import IsletImagingError, RegistrationError
from islet_imaging.volume import Volume

__all__ = [
    "Interpolation",
    "Registration",
    "RegistrationMode",
    "register_pet_to_mr",
    "register_to_baseline",
    "resample_like",
]

#: Smallest optimiser step (mm, or the equivalent rotation) of the first PET-to-MR pass, which
#: fixes the rotation (the final pass refines the translation to CORE_TOLERANCE_MM).
PET_MIN_STEP = 0.1

#: The final PET-to-MR pass samples the MR within this many PET voxels of the PET's uptake core.
CORE_MARGIN_VOXELS = 0.5
#: Convergence tolerance (mm) of the final PET-to-MR pass (simplex search of the translation).
CORE_TOLERANCE_MM = 0.01

#: Smallest optimiser step of the coarse (1/4, 1/2 resolution) refinement of the
#: visit-to-baseline candidates: the winner is refined at full resolution afterwards.
CANDIDATE_MIN_STEP = 0.01
#: Smallest optimiser step of the final full-resolution refinement of the winner (below the
#: jitter of the randomly sampled metric, far below the 1 mm accuracy required).
FINAL_MIN_STEP = 0.003

# meta keys that describe the original slices and are wrong once resampled
_PER_SLICE_KEYS = ("headers", "source_files", "rescale", "frame_numbers")


class Interpolation(enum.StrEnum):
    """Interpolator used when resampling."""

    LINEAR = "linear"
    NEAREST = "nearest"
    BSPLINE = "bspline"

    @property
    def sitk(self) -> int:
        return {
            Interpolation.LINEAR: sitk.sitkLinear,
            Interpolation.NEAREST: sitk.sitkNearestNeighbor,
            Interpolation.BSPLINE: sitk.sitkBSpline,
        }[self]


class RegistrationMode(enum.StrEnum):
    """Transform model of :func:`register_to_baseline`."""

    RIGID = "rigid"
    AFFINE = "affine"


# --------------------------------------------------------------------------- result type
@dataclasses.dataclass(frozen=True)
class Registration:
    """A registration result: the transform, how good it is and the grid it maps from.

    Attributes
    ----------
    transform : SimpleITK.Transform
        Maps fixed-image points (LPS mm) to moving-image points (ITK convention).
    metric : float
        Final value of the metric (lower is better): Mattes mutual information; for PET to MR,
        sampled on the PET's uptake core (see :func:`register_pet_to_mr`).
    fixed_grid : dict
        ``shape``, ``spacing``, ``origin``, ``direction`` of the fixed image (default output
        grid of :meth:`apply`).
    info : dict
        JSON-serialisable record: kind, initial metric, initialisation, parameters, rotation
        (degrees) and translation (mm) found, series UIDs, software version.
    """

    transform: sitk.Transform
    metric: float
    fixed_grid: dict
    info: dict

    @property
    def matrix(self) -> np.ndarray:
        """4×4 homogeneous matrix of the transform (fixed LPS mm → moving LPS mm)."""
        return _matrix(self.transform)

    def apply(
        self,
        volume: Volume,
        reference: Volume | None = None,
        *,
        interpolation: Interpolation | str | None = None,
    ) -> Volume:
        """Resample the moving ``volume`` onto ``reference`` (default: the fixed grid)."""
        if reference is None:
            grid = self.fixed_grid
            reference = Volume(
                np.broadcast_to(np.uint8(0), tuple(grid["shape"])),
                spacing=grid["spacing"],
                origin=grid["origin"],
                direction=np.asarray(grid["direction"]),
            )
        return resample_like(
            volume, reference, transform=self.transform, interpolation=interpolation
        )

    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write the transform (``.tfm``) and a JSON side-car (same stem) atomically.

        Returns the path of the ``.tfm`` file.
        """
        path = Path(path)
        if path.suffix.lower() != ".tfm":
            raise IsletImagingError(
                "a registration is saved as a .tfm file", path=path, hint="use a .tfm suffix"
            )
        sidecar = path.with_suffix(".json")
        record = {
            "metric": self.metric,
            "fixed_grid": self.fixed_grid,
            "info": self.info,
            "transform_file": path.name,
        }
        with atomic_path(sidecar, overwrite=overwrite) as tmp_json:
            tmp_json.write_text(json.dumps(record, indent=2))
            with atomic_path(path, overwrite=overwrite) as tmp:
                sitk.WriteTransform(self.transform, str(tmp))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> Registration:
        """Read a registration written by :meth:`save`."""
        path = Path(path)
        sidecar = path.with_suffix(".json")
        if not path.is_file() or not sidecar.is_file():
            raise IsletImagingError(
                "registration files not found",
                path=path,
                hint="a saved registration is a .tfm file and a .json file of the same stem",
            )
        record = json.loads(sidecar.read_text())
        transform = sitk.ReadTransform(str(path))
        if transform.GetName() == "CompositeTransform":
            transform = sitk.CompositeTransform(transform).GetNthTransform(0)
        transform = _downcast(transform)
        return cls(transform, float(record["metric"]), record["fixed_grid"], record["info"])


def _downcast(transform: sitk.Transform) -> sitk.Transform:
    name = transform.GetName()
    if name == "Euler3DTransform":
        return sitk.Euler3DTransform(transform)
    if name == "AffineTransform":
        return sitk.AffineTransform(transform)
    return transform


def _matrix(transform: sitk.Transform) -> np.ndarray:
    """4×4 matrix of a linear (Euler / affine / translation) SimpleITK transform."""
    origin = np.array(transform.TransformPoint((0.0, 0.0, 0.0)))
    matrix = np.eye(4)
    for axis in range(3):
        unit = [0.0, 0.0, 0.0]
        unit[axis] = 1.0
        matrix[:3, axis] = np.array(transform.TransformPoint(unit)) - origin
    matrix[:3, 3] = origin
    return matrix


def _grid(volume: Volume) -> dict:
    return {
        "shape": list(volume.shape),
        "spacing": list(volume.spacing),
        "origin": list(volume.origin),
        "direction": np.asarray(volume.direction).tolist(),
    }


def _software() -> str:
    from islet_imaging import __version__

    return f"islet-imaging {__version__}"


# --------------------------------------------------------------------------- resampling
def resample_like(
    volume: Volume,
    reference: Volume,
    *,
    transform: sitk.Transform | None = None,
    interpolation: Interpolation | str | None = None,
) -> Volume:
    """Resample ``volume`` onto the grid of ``reference``.

    Parameters
    ----------
    volume : Volume
        Image or mask to resample (the *moving* image when ``transform`` is given).
    reference : Volume
        Its shape, spacing, origin and direction define the output grid (its values are unused).
    transform : SimpleITK.Transform, optional
        Maps reference points to ``volume`` points (e.g. ``Registration.transform``); identity
        by default, i.e. both are already in the same patient frame.
    interpolation : {"linear", "nearest", "bspline"}, optional
        Default: nearest neighbour for masks (:attr:`Volume.is_mask`), linear otherwise.

    Returns
    -------
    Volume
        On the reference grid; masks keep their dtype, images become float32. Points outside
        ``volume`` get 0. ``meta`` is that of ``volume`` without the per-slice keys, plus
        ``resampled_to`` (the reference series UID, if any).

    Examples
    --------
    >>> import numpy as np
    >>> mask = Volume(np.ones((4, 4, 4), bool), spacing=(2, 2, 2)).as_mask()
    >>> fine = Volume(np.zeros((8, 8, 8), np.float32), origin=(-0.5, -0.5, -0.5))
    >>> out = resample_like(mask, fine)
    >>> out.array.dtype, int(out.array.sum())
    (dtype('bool'), 512)
    """
    interp = (
        Interpolation(interpolation)
        if interpolation is not None
        else (Interpolation.NEAREST if volume.is_mask else Interpolation.LINEAR)
    )
    if volume.is_mask and interp is not Interpolation.NEAREST:
        raise IsletImagingError(
            "masks are resampled with nearest-neighbour interpolation only",
            tag="interpolation",
            value=str(interp),
        )
    image = volume.to_sitk()
    if not volume.is_mask:
        image = sitk.Cast(image, sitk.sitkFloat32)
    grid = reference.with_array(np.broadcast_to(np.uint8(0), reference.shape)).to_sitk()
    out = sitk.Resample(
        image,
        grid,
        transform if transform is not None else sitk.Transform(3, sitk.sitkIdentity),
        interp.sitk,
        0.0,
        image.GetPixelID(),
    )
    meta = {k: v for k, v in volume.meta.items() if k not in _PER_SLICE_KEYS}
    meta["resampled_to"] = reference.meta.get("series_uid")
    result = Volume.from_sitk(out, meta)
    if volume.array.dtype == bool:
        result = dataclasses.replace(result, array=result.array.astype(bool))
    return result


# --------------------------------------------------------------------------- registration core
def _as_float(volume: Volume, name: str) -> sitk.Image:
    if volume.is_mask:
        raise IsletImagingError(f"{name} must be an image, not a mask", tag=name)
    if min(volume.shape) < 4:
        raise RegistrationError(
            f"{name} is too small to register", tag=name, value=volume.shape, hint="≥ 4 voxels"
        )
    return sitk.Cast(volume.to_sitk(), sitk.sitkFloat32)


def _bounds(volume: Volume) -> tuple[np.ndarray, np.ndarray]:
    corners = np.array(
        [
            [k, j, i]
            for k in (0, volume.shape[0] - 1)
            for j in (0, volume.shape[1] - 1)
            for i in (0, volume.shape[2] - 1)
        ],
        dtype=float,
    )
    world = volume.index_to_world(corners)
    return world.min(axis=0), world.max(axis=0)


def _check_overlap(fixed: Volume, moving: Volume, transform: sitk.Transform) -> None:
    """Raise if the fixed image, mapped by ``transform``, misses the moving image's box."""
    lo_f, hi_f = _bounds(fixed)
    corners = np.array(
        [
            [x, y, z]
            for x in (lo_f[0], hi_f[0])
            for y in (lo_f[1], hi_f[1])
            for z in (lo_f[2], hi_f[2])
        ]
    )
    mapped = np.array([transform.TransformPoint(tuple(c)) for c in corners])
    lo_m, hi_m = _bounds(moving)
    overlap = np.minimum(mapped.max(axis=0), hi_m) - np.maximum(mapped.min(axis=0), lo_m)
    if np.any(overlap <= 0):
        raise RegistrationError(
            "the images do not overlap in patient space",
            tag="origin",
            value={
                "fixed_box_mm": [lo_f.round(1).tolist(), hi_f.round(1).tolist()],
                "moving_box_mm": [lo_m.round(1).tolist(), hi_m.round(1).tolist()],
            },
            hint="check that both series are of the same arm and frame of reference",
        )


def _method(
    *,
    bins: int,
    sampling: float,
    seed: int,
    shrink: list[int],
    smooth: list[float],
    moving_mask: sitk.Image | None = None,
    fixed_mask: sitk.Image | None = None,
    metric: str = "mattes",
) -> sitk.ImageRegistrationMethod:
    reg = sitk.ImageRegistrationMethod()
    if moving_mask is not None:
        reg.SetMetricMovingMask(moving_mask)
    if fixed_mask is not None:
        reg.SetMetricFixedMask(fixed_mask)
    if metric == "correlation":
        reg.SetMetricAsCorrelation()
    else:
        reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=bins)
    if sampling < 1.0:
        reg.SetMetricSamplingStrategy(reg.RANDOM)
        reg.SetMetricSamplingPercentage(sampling, seed)
    else:
        reg.SetMetricSamplingStrategy(reg.NONE)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetShrinkFactorsPerLevel(shrink)
    reg.SetSmoothingSigmasPerLevel(smooth)
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    return reg


def _evaluate(fixed: sitk.Image, moving: sitk.Image, transform: sitk.Transform, **kw) -> float:
    reg = _method(**kw)
    reg.SetInitialTransform(transform, inPlace=False)
    try:
        return float(reg.MetricEvaluate(fixed, moving))
    except RuntimeError as exc:
        raise RegistrationError(
            "the metric cannot be evaluated: the images do not overlap", hint=str(exc)[:200]
        ) from exc


def _optimise(
    fixed: sitk.Image,
    moving: sitk.Image,
    transform: sitk.Transform,
    *,
    iterations: int,
    learning_rate: float,
    min_step: float = 1e-3,
    **kw,
) -> tuple[float, str]:
    """Refine ``transform`` in place; return (final metric, stop condition)."""
    reg = _method(**kw)
    reg.SetOptimizerAsRegularStepGradientDescent(
        learningRate=learning_rate,
        minStep=min_step,
        numberOfIterations=iterations,
        relaxationFactor=0.6,
        gradientMagnitudeTolerance=1e-8,
    )
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetInitialTransform(transform, inPlace=True)
    _execute(reg, fixed, moving)
    return float(reg.GetMetricValue()), reg.GetOptimizerStopConditionDescription()


def _execute(reg: sitk.ImageRegistrationMethod, fixed: sitk.Image, moving: sitk.Image) -> None:
    """Run ``reg``; ITK failures (no sample in the moving image...) raise RegistrationError."""
    try:
        reg.Execute(fixed, moving)
    except RuntimeError as exc:
        raise RegistrationError(
            "registration failed: the images do not overlap enough", hint=str(exc)[:200]
        ) from exc


def _rotation_deg(matrix: np.ndarray) -> float:
    rot = matrix[:3, :3]
    u, _, vt = np.linalg.svd(rot)  # nearest rotation of an affine matrix
    rot = u @ vt
    return math.degrees(math.acos(float(np.clip((np.trace(rot) - 1) / 2, -1, 1))))


def _summary(transform: sitk.Transform, fixed_centre: np.ndarray) -> dict:
    """Rotation angle (degrees), displacement of the fixed image centre (mm, vector in
    ``translation_mm`` and its length in ``centre_shift_mm``) and the 4×4 matrix."""
    matrix = _matrix(transform)
    moved = matrix[:3, :3] @ fixed_centre + matrix[:3, 3]
    return {
        "rotation_deg": _rotation_deg(matrix),
        "translation_mm": (moved - fixed_centre).tolist(),
        "centre_shift_mm": float(np.linalg.norm(moved - fixed_centre)),
        "matrix": matrix.tolist(),
    }


def _centre(volume: Volume) -> np.ndarray:
    return volume.index_to_world((np.asarray(volume.shape) - 1) / 2.0)


def _check_result(
    initial: float,
    final: float,
    summary: dict,
    *,
    max_rotation: float,
    max_shift: float,
    what: str,
    tolerance: float = 1e-6,
) -> None:
    if not (math.isfinite(final) and final <= initial + tolerance * abs(initial)):
        raise RegistrationError(
            f"{what}: the similarity metric did not improve",
            tag="metric",
            value={"initial": initial, "final": final},
            hint="check that the images show the same anatomy",
        )
    if summary["rotation_deg"] > max_rotation or summary["centre_shift_mm"] > max_shift:
        raise RegistrationError(
            f"{what}: implausible result (rotation {summary['rotation_deg']:.1f}° > "
            f"{max_rotation}° or shift {summary['centre_shift_mm']:.1f} mm > {max_shift} mm)",
            tag="transform",
            hint="check the inputs or loosen the plausibility limits",
        )


def _positive(image: sitk.Image) -> sitk.Image:
    """The image shifted to a minimum of 0 (a mass distribution for the moments)."""
    stats = sitk.MinimumMaximumImageFilter()
    stats.Execute(image)
    return image - stats.GetMinimum()


def _focus_mask(pet: Volume, image: sitk.Image, fraction: float, margin_mm: float) -> sitk.Image:
    """Neighbourhood of the PET's high-uptake regions, where the PET carries information."""
    top = float(np.percentile(pet.array, 99.9))
    hot = sitk.BinaryThreshold(image, fraction * top, float(np.inf), 1, 0)
    radius = [max(1, round(margin_mm / s)) for s in image.GetSpacing()]
    return sitk.BinaryDilate(hot, radius)


def _mask_corners(mask: sitk.Image) -> np.ndarray | None:
    """Corners (LPS mm, 8 × 3) of the box of the non-zero voxels of ``mask``; None if empty."""
    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.Execute(sitk.Cast(mask > 0, sitk.sitkUInt8))
    if not stats.HasLabel(1):
        return None
    x0, y0, z0, nx, ny, nz = stats.GetBoundingBox(1)
    # corners of the box (voxel edges) in the mask's (x, y, z) index space, then LPS mm
    return np.array(
        [
            mask.TransformContinuousIndexToPhysicalPoint((x, y, z))
            for x in (x0 - 0.5, x0 + nx - 0.5)
            for y in (y0 - 0.5, y0 + ny - 0.5)
            for z in (z0 - 0.5, z0 + nz - 0.5)
        ]
    )


def _crop_to(volume: Volume, points: np.ndarray, margin_mm: float) -> Volume:
    """``volume`` cropped to the box (on its grid) covering ``points`` (LPS mm) + ``margin_mm``.

    The volume is returned whole when the box covers it or misses it.
    """
    index = volume.world_to_index(np.asarray(points, dtype=float))
    pad = margin_mm / np.asarray(volume.spacing)
    lo = np.maximum(np.floor(index.min(axis=0) - pad).astype(int), 0)
    hi = np.minimum(np.ceil(index.max(axis=0) + pad).astype(int) + 1, volume.shape)
    if np.any(hi - lo < 4) or (np.all(lo == 0) and np.all(hi == volume.shape)):
        return volume
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    origin = volume.index_to_world(lo.astype(float))
    return Volume(volume.array[box], volume.spacing, origin, volume.direction, volume.meta)


def _crop_around(volume: Volume, mask: sitk.Image, margin_mm: float) -> Volume:
    """``volume`` cropped to the box covering the non-zero voxels of ``mask`` + ``margin_mm``.

    ``mask`` may be on any grid; the box is computed in patient space (LPS mm). The volume is
    returned whole when the box covers it or misses it.
    """
    corners = _mask_corners(mask)
    return volume if corners is None else _crop_to(volume, corners, margin_mm)


def _uptake_core(pet: Volume, image: sitk.Image) -> sitk.Image:
    """PET voxels above half-way from the tissue background to the peak: the graft's core.

    The peak is the 99.9th percentile, the background the median of the voxels above 10 % of
    it (the arm's tissue, mostly muscle), so the core stays the graft's for a low graft to
    muscle ratio too.
    """
    values = pet.array
    top = float(np.percentile(values, 99.9))
    tissue = values[values > 0.1 * top]
    if not top > 0 or tissue.size == 0:
        raise RegistrationError(
            "the PET shows no uptake to register",
            tag="pet",
            value={"percentile_99_9": top},
            hint="check the PET series (all voxels zero or negative)",
        )
    level = 0.5 * (float(np.median(tissue)) + top)
    return sitk.BinaryThreshold(image, level, math.inf, 1, 0)


def _pet_fwhm(pet: Volume, fwhm_mm: float | None) -> tuple[float, str]:
    """PET resolution (FWHM, mm) and where it came from: parameter, image, or voxel size.

    The voxel size is a lower bound of the resolution: smoothing the MR less than the PET is
    harmless, smoothing it more biases the alignment.
    """
    from islet_imaging.measure.pvc import fwhm_from_volume  # measure imports this module

    if fwhm_mm is not None:
        if not fwhm_mm > 0:
            raise IsletImagingError(
                "the PET FWHM must be positive", tag="pet_fwhm_mm", value=fwhm_mm
            )
        return float(fwhm_mm), "parameter"
    recorded = fwhm_from_volume(pet)
    if recorded is not None and recorded > 0:
        return float(recorded), "image"
    return float(max(pet.spacing)), "PET voxel size"


def _core_fixed(
    mr: Volume, core: sitk.Image, transforms: list[sitk.Transform], fwhm_mm: float
) -> sitk.Image:
    """The MR around the PET's uptake core, at the PET's resolution, on an isotropic grid.

    The box covers the core (PET points) mapped back to the MR by each of ``transforms``
    (MR → PET) plus 2 FWHM. The MR is smoothed by the PET's point-spread function (Gaussian of
    ``fwhm_mm``) and resampled at FWHM / 4, so that its slice thickness and orientation no
    longer matter.
    """
    corners = _mask_corners(core)
    if corners is None:
        raise RegistrationError("the PET's uptake core is empty", tag="pet")
    mapped = [
        np.array([t.GetInverse().TransformPoint(tuple(c)) for c in corners]) for t in transforms
    ]
    region = _crop_to(mr, np.concatenate(mapped), 2.0 * fwhm_mm)
    smooth = sitk.SmoothingRecursiveGaussian(
        _as_float(region, "mr"), fwhm_mm / (2 * math.sqrt(2 * math.log(2)))
    )
    step = fwhm_mm / 4.0
    extent = np.asarray(smooth.GetSize()) * np.asarray(smooth.GetSpacing())
    size = [max(4, math.ceil(e / step)) for e in extent]
    corner = np.asarray(smooth.TransformContinuousIndexToPhysicalPoint((-0.5, -0.5, -0.5)))
    direction = np.asarray(smooth.GetDirection()).reshape(3, 3)
    origin = corner + direction @ np.full(3, step / 2)
    return sitk.Resample(
        smooth,
        size,
        sitk.Transform(),
        sitk.sitkLinear,
        tuple(origin),
        (step, step, step),
        smooth.GetDirection(),
        0.0,
        sitk.sitkFloat32,
    )


def _count(mask: sitk.Image) -> int:
    """Number of non-zero voxels of a mask."""
    return int(np.count_nonzero(sitk.GetArrayViewFromImage(mask)))


def _refine_shift(
    fixed: sitk.Image, moving: sitk.Image, transform: sitk.Euler3DTransform, **kw
) -> str:
    """Refine the translation of ``transform`` in place by a simplex search of the metric.

    The rotation is kept: the uptake core is too small to fix it. The search uses metric
    values only (Nelder-Mead): on a few thousand samples, the analytic gradient of Mattes
    mutual information is too unreliable for a gradient descent. Returns the stop condition.
    """
    shift = sitk.TranslationTransform(3)
    reg = _method(**kw)
    reg.SetOptimizerAsAmoeba(
        simplexDelta=1.0,
        numberOfIterations=200,
        parametersConvergenceTolerance=CORE_TOLERANCE_MM,
        functionConvergenceTolerance=1e-5,
    )
    reg.SetMovingInitialTransform(transform)  # fixed point x -> transform(x + shift)
    reg.SetInitialTransform(shift, inPlace=True)
    _execute(reg, fixed, moving)
    rotation = np.asarray(transform.GetMatrix()).reshape(3, 3)
    offset = rotation @ np.asarray(shift.GetOffset())
    transform.SetTranslation(tuple(np.asarray(transform.GetTranslation()) + offset))
    return reg.GetOptimizerStopConditionDescription()


def _robust_rigid(
    fixed: sitk.Image,
    moving: sitk.Image,
    *,
    search_deg: float,
    search_steps: int,
    candidates: int,
    seed: int,
    sampling: float,
    bins: int = 50,
    moving_mask: sitk.Image | None = None,
    metric: str = "mattes",
) -> tuple[sitk.Euler3DTransform, float, str, dict]:
    """Moments + coarse rotation search + multi-resolution rigid refinement."""
    try:
        init = sitk.CenteredTransformInitializer(
            _positive(fixed),
            _positive(moving),
            sitk.Euler3DTransform(),
            sitk.CenteredTransformInitializerFilter.MOMENTS,
        )
    except RuntimeError as exc:
        raise RegistrationError(
            "cannot initialise the registration: an image is empty (constant)",
            hint=str(exc)[:200],
        ) from exc
    init = sitk.Euler3DTransform(init)
    # coarse exhaustive search over the three rotation angles at 1/4 resolution (pyramid
    # level built once, so each of the (2 n + 1)³ trials costs one metric evaluation)
    fixed_small, moving_small = (
        sitk.Shrink(sitk.SmoothingRecursiveGaussian(image, 2.0), [4, 4, 4])
        for image in (fixed, moving)
    )
    mask_small = (
        None
        if moving_mask is None
        else sitk.Resample(moving_mask, moving_small, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    )
    reg = _method(
        bins=min(bins, 32),
        sampling=1.0,
        seed=seed,
        shrink=[1],
        smooth=[0.0],
        moving_mask=mask_small,
    )
    step = math.radians(search_deg) / max(search_steps, 1)
    rotations = np.arange(-search_steps, search_steps + 1) * step
    scored = []
    for ax in rotations:
        for ay in rotations:
            for az in rotations:
                trial = sitk.Euler3DTransform(init)
                trial.SetRotation(float(ax), float(ay), float(az))
                reg.SetInitialTransform(trial, inPlace=False)
                try:
                    scored.append((float(reg.MetricEvaluate(fixed_small, moving_small)), trial))
                except RuntimeError:
                    continue
    if not scored:
        raise RegistrationError(
            "the images do not overlap for any trial rotation",
            hint="check that both series show the same arm",
        )
    scored.sort(key=lambda item: item[0])
    fine = {
        "bins": bins,
        "sampling": sampling,
        "seed": seed,
        "shrink": [4, 2, 1],
        "smooth": [2.0, 1.0, 0.0],
        "moving_mask": moving_mask,
        "metric": metric,
    }
    # refine the best candidates at 1/4 and 1/2 resolution, then only the winner at full
    best = None
    for _, trial in scored[:candidates]:
        metric, stop = _optimise(
            fixed,
            moving,
            trial,
            iterations=200,
            learning_rate=2.0,
            min_step=CANDIDATE_MIN_STEP,
            **{**fine, "shrink": fine["shrink"][:-1], "smooth": fine["smooth"][:-1]},
        )
        if best is None or metric < best[1]:
            best = (trial, metric, stop)
    metric, stop = _optimise(
        fixed,
        moving,
        best[0],
        iterations=200,
        learning_rate=0.2,  # the winner is already refined at 1/2 resolution
        min_step=FINAL_MIN_STEP,
        **{**fine, "shrink": fine["shrink"][-1:], "smooth": fine["smooth"][-1:]},
    )
    best = (best[0], metric, stop)
    search = {
        "init": "moments (CenteredTransformInitializer MOMENTS) + rotation grid search",
        "search_deg": search_deg,
        "search_steps": search_steps,
        "candidates_refined": candidates,
        "best_coarse_metric": scored[0][0],
    }
    return best[0], best[1], best[2], search


def register_pet_to_mr(
    pet: Volume,
    mr: Volume,
    *,
    seed: int = 0,
    sampling: float = 1.0,
    mr_smoothing_mm: float = 1.5,
    focus_fraction: float | None = 0.3,
    focus_margin_mm: float = 15.0,
    max_rotation_deg: float = 10.0,
    max_shift_mm: float = 20.0,
    pet_fwhm_mm: float | None = None,
) -> Registration:
    """Rigid registration of a PET volume to the MR of the same visit.

    Two passes, both Mattes mutual information (32 bins):

    1. from the identity (shared frame of reference, LPS mm), a rigid transform at 1/4 and 1/2
       of the MR resolution, on the MR cropped around the focus region. This fixes the
       rotation and the position across the arm, but mutual information over that region is
       nearly flat along the arm (a near-cylinder), and it may slide the PET by several mm;
    2. the rotation kept, the translation is searched again (simplex, from where the shared
       frame puts the graft) with the metric sampled only on the PET's uptake core (voxels
       above half-way from the tissue background to the peak, + 1/2 PET voxel), against the
       MR smoothed by the PET's point-spread function and resampled at FWHM / 4. The graft,
       bright on T2, is what this pass matches.

    The metric reported (and compared before / after) is that of the second pass. If the two
    series declare different ``frame_of_reference_uid`` values, the robust initialisation of
    :func:`register_to_baseline` replaces the first pass (and the plausibility limits do not
    apply). Use the MR on which the graft is visible (T2-weighted).

    Parameters
    ----------
    pet : Volume
        Moving image (any grid, Bq/mL or SUV).
    mr : Volume
        Fixed image.
    seed : int
        Seed of the metric's random sampling (results are reproducible).
    sampling : float
        Fraction of the MR voxels (within the focus region) sampled by the metric; 1 = all.
    mr_smoothing_mm : float
        Gaussian sigma applied to the MR first, towards the PET's resolution.
    focus_fraction, focus_margin_mm : float
        The metric samples only MR voxels within ``focus_margin_mm`` of PET voxels above
        ``focus_fraction`` × the PET's 99.9th percentile: a forearm is nearly uniform along its
        axis and the uptake foci (grafts) are what pins the PET along it. ``None`` samples the
        whole overlap.
    max_rotation_deg, max_shift_mm : float
        Largest correction accepted from the shared frame of reference.
    pet_fwhm_mm : float, optional
        PET resolution (FWHM, mm) for the second pass. Default: recorded with the image
        (:func:`islet_imaging.measure.pvc.fwhm_from_volume`), else the PET's largest voxel
        size, a lower bound: smoothing the MR less than the PET is harmless, more biases the
        result. ``info["core_pass"]`` records the value used and its source.

    Returns
    -------
    Registration
        ``transform`` maps MR points to PET points; ``reg.apply(pet)`` is the PET on the MR grid.

    Raises
    ------
    RegistrationError
        No overlap, a PET without uptake, the metric getting worse (by more than 2 %), or an
        implausible correction.
    """
    _as_float(mr, "mr")
    moving = _as_float(pet, "pet")
    for_pet = pet.meta.get("frame_of_reference_uid")
    for_mr = mr.meta.get("frame_of_reference_uid")
    shared = not (for_pet and for_mr and for_pet != for_mr)
    mask = (
        _focus_mask(pet, moving, focus_fraction, focus_margin_mm)
        if focus_fraction is not None
        else None
    )
    # the metric only samples the focus region: register the MR cropped around it (with room
    # for the smoothing and the correction searched), not the whole MR
    region = mr
    if mask is not None and shared:
        region = _crop_around(mr, mask, max_shift_mm + 4 * mr_smoothing_mm)
    fixed = _as_float(region, "mr")
    if mr_smoothing_mm > 0:
        fixed = sitk.SmoothingRecursiveGaussian(fixed, mr_smoothing_mm)
    params = {
        "bins": 32,
        "sampling": sampling,
        "seed": seed,
        "shrink": [4, 2],
        "smooth": [2.0, 1.0],
    }
    if mask is not None and shared:  # the focus region seen from the MR grid: every voxel used
        params["fixed_mask"] = sitk.Resample(
            mask, fixed, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8
        )
    elif mask is not None:
        params["moving_mask"] = mask
    if shared:
        transform = sitk.Euler3DTransform()
        transform.SetCenter(tuple(_centre(mr)))
        _check_overlap(mr, pet, transform)
        _, first_stop = _optimise(
            fixed,
            moving,
            transform,
            iterations=150,
            learning_rate=1.0,
            min_step=PET_MIN_STEP,
            **params,
        )
        init_info: dict[str, Any] = {"init": "identity (shared frame of reference)"}
        limits = {"max_rotation": max_rotation_deg, "max_shift": max_shift_mm}
    else:
        transform, _, first_stop, init_info = _robust_rigid(
            fixed,
            moving,
            search_deg=30.0,
            search_steps=2,
            candidates=2,
            seed=seed,
            sampling=sampling,
            bins=params["bins"],
            moving_mask=mask,
        )
        init_info["init"] += " (frames of reference differ)"
        limits = {"max_rotation": 180.0, "max_shift": math.inf}
    # final pass, the one that pins the PET along the arm: mutual information sampled on the
    # PET's uptake core only, against the MR at the PET's resolution
    fwhm, fwhm_source = _pet_fwhm(pet, pet_fwhm_mm)
    core = _uptake_core(pet, moving)
    start = sitk.Euler3DTransform()
    start.SetCenter(tuple(_centre(mr)))
    # the core as seen from the MR by the shared frame and by the transform found so far
    anchors = [start, transform] if shared else [transform]
    core_fixed = _core_fixed(mr, core, anchors, fwhm)
    seen = [
        sitk.Resample(core, core_fixed, t, sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
        for t in anchors
    ]
    radius = max(1, round(CORE_MARGIN_VOXELS * max(pet.spacing) / core_fixed.GetSpacing()[0]))
    core_metric = {
        "bins": 32,
        "sampling": 1.0,
        "seed": seed,
        "shrink": [1],
        "smooth": [0.0],
        "fixed_mask": sitk.BinaryDilate(functools.reduce(sitk.Or, seen), [radius] * 3),
    }
    if shared:
        initial = _evaluate(core_fixed, moving, start, **core_metric)
        # keep the first pass's rotation (fixed by the whole arm) but restart from the shared
        # frame's position of the core: along the arm, the first pass is unreliable
        centre = np.asarray(transform.GetCenter())
        core_centre = _mask_corners(core).mean(axis=0)
        rotation = np.asarray(transform.GetMatrix()).reshape(3, 3)
        transform.SetTranslation(tuple(core_centre - centre - rotation @ (core_centre - centre)))
    else:
        try:
            initial = _evaluate(core_fixed, moving, sitk.Euler3DTransform(), **core_metric)
        except RegistrationError:
            initial = math.inf
    stop = _refine_shift(core_fixed, moving, transform, **core_metric)
    final = _evaluate(core_fixed, moving, transform, **core_metric)
    summary = _summary(transform, _centre(mr))
    _check_result(initial, final, summary, what="PET to MR", tolerance=0.02, **limits)
    info = {
        "kind": "pet_to_mr",
        "model": "rigid",
        "metric_name": "Mattes mutual information",
        "metric_initial": initial if math.isfinite(initial) else None,
        "metric_region": "the PET's uptake core (+ 1/2 PET voxel), MR smoothed by the PET's PSF",
        "optimizer_stop": stop,
        "params": {k: v for k, v in params.items() if not k.endswith("_mask")},
        "mr_smoothing_mm": mr_smoothing_mm,
        "focus": None
        if mask is None
        else {"fraction": focus_fraction, "margin_mm": focus_margin_mm},
        "core_pass": {
            "pet_fwhm_mm": fwhm,
            "pet_fwhm_source": fwhm_source,
            "core_voxels": _count(core),
            "start": "rotation of the first pass, core where the shared frame puts it"
            if shared
            else "result of the first pass",
            "grid_mm": core_fixed.GetSpacing()[0],
            "first_pass_stop": first_stop,
            "optimizer": "Nelder-Mead simplex on the translation",
        },
        **init_info,
        **summary,
        "fixed_series_uid": mr.meta.get("series_uid"),
        "moving_series_uid": pet.meta.get("series_uid"),
        "software": _software(),
    }
    return Registration(transform, final, _grid(mr), info)


def register_to_baseline(
    moving: Volume,
    fixed: Volume,
    *,
    mode: RegistrationMode | str = RegistrationMode.RIGID,
    metric: str = "correlation",
    seed: int = 0,
    sampling: float = 0.3,
    search_deg: float = 20.0,
    search_steps: int = 2,
    candidates: int = 2,
    max_rotation_deg: float = 45.0,
    max_shift_mm: float = 100.0,
) -> Registration:
    """Register a visit's MR (``moving``) to the baseline MR (``fixed``).

    Robust to repositioning of the arm by ±15° and ±30 mm: the intensity centres of mass are
    aligned, a ``(2 search_steps + 1)³`` grid of rotations within ``±search_deg`` is scored by
    Mattes mutual information at 1/4 resolution, and the ``candidates`` best are refined
    rigidly over three levels (1/4, 1/2, 1); the best wins. ``mode="affine"`` then refines an
    affine transform from the rigid one at the two finest levels.

    Parameters
    ----------
    moving : Volume
        MR of the follow-up visit.
    fixed : Volume
        MR of the baseline visit, same sequence (its grid is the output grid of ``apply``).
    mode : {"rigid", "affine"}
    metric : {"correlation", "mattes"}
        Refinement metric: normalised correlation suits the same sequence at both visits (and
        pins the position along the arm far better than mutual information); use ``"mattes"``
        when the contrasts differ.
    seed, sampling
        Reproducible random sampling of the metric (fraction of voxels).
    search_deg, search_steps, candidates
        Coarse rotation search range (degrees), steps each side and candidates refined.
    max_rotation_deg, max_shift_mm
        Plausibility limits of the result.

    Returns
    -------
    Registration
        ``transform`` maps baseline points to follow-up points.

    Raises
    ------
    RegistrationError
        No overlap, metric not improving, or an implausible result.
    """
    mode = RegistrationMode(mode)
    if metric not in ("correlation", "mattes"):
        raise IsletImagingError(
            "unknown registration metric", tag="metric", value=metric, hint="correlation|mattes"
        )
    fixed_img, moving_img = _as_float(fixed, "fixed"), _as_float(moving, "moving")
    full = {
        "bins": 50,
        "sampling": sampling,
        "seed": seed,
        "shrink": [1],
        "smooth": [0.0],
        "metric": metric,
    }
    try:
        initial = _evaluate(fixed_img, moving_img, sitk.Euler3DTransform(), **full)
    except RegistrationError:
        initial = math.inf  # no overlap before initialisation is fine for repositioned arms
    transform, _, stop, init_info = _robust_rigid(
        fixed_img,
        moving_img,
        search_deg=search_deg,
        search_steps=search_steps,
        candidates=candidates,
        seed=seed,
        sampling=sampling,
        metric=metric,
    )
    if mode is RegistrationMode.AFFINE:
        affine = sitk.AffineTransform(3)
        affine.SetCenter(transform.GetCenter())
        affine.SetMatrix(transform.GetMatrix())
        affine.SetTranslation(transform.GetTranslation())
        fine = {**full, "shrink": [2, 1], "smooth": [1.0, 0.0]}
        _, stop = _optimise(
            fixed_img, moving_img, affine, iterations=100, learning_rate=0.5, **fine
        )
        matrix = np.asarray(affine.GetMatrix()).reshape(3, 3)
        det = float(np.linalg.det(matrix))
        if not 0.5 < det < 2.0:
            raise RegistrationError(
                "affine registration gave an implausible scaling", tag="transform", value=det
            )
        transform = affine
    final = _evaluate(fixed_img, moving_img, transform, **full)
    summary = _summary(transform, _centre(fixed))
    _check_result(
        initial,
        final,
        summary,
        what="visit to baseline",
        max_rotation=max_rotation_deg,
        max_shift=max_shift_mm,
    )
    info = {
        "kind": "visit_to_baseline",
        "model": mode.value,
        "metric_name": "normalised correlation" if metric == "correlation" else "Mattes MI",
        "metric_initial": initial if math.isfinite(initial) else None,
        "optimizer_stop": stop,
        "params": {
            "sampling": sampling,
            "seed": seed,
            "shrink": [4, 2, 1],
            "smooth_mm": [2.0, 1.0, 0.0],
            "search": "Mattes MI, 32 bins, 1/4 resolution",
        },
        **init_info,
        **summary,
        "fixed_series_uid": fixed.meta.get("series_uid"),
        "moving_series_uid": moving.meta.get("series_uid"),
        "software": _software(),
    }
    return Registration(transform, final, _grid(fixed), info)
