"""Volume <-> napari layer data, with the physical geometry kept exactly.

World convention (used everywhere in this plugin)
-------------------------------------------------
napari world coordinates are DICOM patient coordinates in millimetres, ordered like the array
axes of an axial series: world axis 0 = LPS *z* (toward the head, S), axis 1 = LPS *y* (toward
the back, P), axis 2 = LPS *x* (toward the patient's left, L). In short, world ``(s, p, l)`` is
LPS ``(x, y, z)`` reversed (:func:`lps_to_world`, :func:`world_to_lps`). Axial slices are
displayed with anterior at the top and the patient's left on the right (radiological view), and
every layer of a visit (MR, PET, masks) lands on the same world coordinates whatever its grid.

Why the arrays are reoriented
-----------------------------
napari slices a layer along its *data* axes, so a sagittal or coronal series whose array axes
are permuted with respect to the world axes would be sliced in the wrong plane. Each volume is
therefore shown through a view of its array whose axes are permuted and flipped to the world
axes they are closest to (no copy, like dcm2niix's reorientation). What remains of the direction
matrix is a small rotation for oblique series (the identity otherwise); it goes, with the origin,
into the layer ``affine``, and the voxel spacing into ``scale``.

The original grid is kept in ``layer.metadata["islet_imaging"]["grid"]`` (a Volume with a
zero-memory array) so :func:`layer_to_volume` returns data on the grid it came from, e.g. a
corrected mask exactly on its MR series grid.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from islet_imaging.errors import IsletImagingError
from islet_imaging.volume import Volume

__all__ = [
    "WORLD_AXES",
    "display_axes",
    "from_display",
    "labels_like",
    "layer_grid",
    "layer_to_volume",
    "lps_to_world",
    "to_display",
    "volume_to_layer_data",
    "world_to_lps",
]

WORLD_AXES = ("S", "P", "L")
"""Names of napari world axes 0, 1, 2: LPS z, y, x in mm."""

METADATA_KEY = "islet_imaging"

# rows of this permutation take LPS (x, y, z) to world (z, y, x)
_LPS_TO_WORLD = np.eye(3)[::-1]


def lps_to_world(points: Any) -> np.ndarray:
    """Map LPS points ``(..., 3)`` in mm (x, y, z order) to napari world ``(s, p, l)``."""
    return np.asarray(points, dtype=float)[..., ::-1].copy()


def world_to_lps(points: Any) -> np.ndarray:
    """Map napari world points ``(..., 3)`` (s, p, l order) to LPS ``(x, y, z)`` in mm."""
    return np.asarray(points, dtype=float)[..., ::-1].copy()


def display_axes(direction: Any) -> tuple[tuple[int, int, int], tuple[bool, bool, bool]]:
    """Which array axis is shown along each world axis, and whether it is flipped.

    Parameters
    ----------
    direction : (3, 3) array_like
        Columns = LPS directions of array axes (z, y, x), as in :class:`Volume`.

    Returns
    -------
    order : 3 ints
        ``order[w]`` is the array axis displayed along world axis ``w``.
    flips : 3 bools
        ``flips[w]`` is True when that array axis runs against world axis ``w``.
    """
    world_dirs = _LPS_TO_WORLD @ np.asarray(direction, dtype=float)  # columns: array axes
    best = max(
        itertools.permutations(range(3)),
        key=lambda order: sum(abs(world_dirs[w, a]) for w, a in enumerate(order)),
    )
    flips = tuple(bool(world_dirs[w, a] < 0) for w, a in enumerate(best))
    return tuple(best), flips  # type: ignore[return-value]


def _orient_array(array: np.ndarray, order, flips) -> np.ndarray:
    view = np.transpose(array, order)
    for axis, flip in enumerate(flips):
        if flip:
            view = np.flip(view, axis)
    return view


def _unorient_array(array: np.ndarray, order, flips) -> np.ndarray:
    view = array
    for axis, flip in enumerate(flips):
        if flip:
            view = np.flip(view, axis)
    return np.transpose(view, np.argsort(order))


def to_display(volume: Volume) -> Volume:
    """The same image, its array viewed with axes closest to the world axes (no copy).

    The result is geometrically identical: every voxel keeps its LPS position.

    Examples
    --------
    >>> import numpy as np
    >>> sag = Volume(np.zeros((4, 5, 6)), direction=[[1, 0, 0], [0, 0, 1], [0, -1, 0]])
    >>> shown = to_display(sag)
    >>> shown.shape, np.allclose(shown.direction, [[0, 0, 1], [0, 1, 0], [1, 0, 0]])
    ((5, 6, 4), True)
    """
    order, flips = display_axes(volume.direction)
    array = _orient_array(volume.array, order, flips)
    shape = np.asarray(volume.shape)
    # index of the original voxel shown at display index (0, 0, 0)
    first = np.zeros(3)
    for w, a in enumerate(order):
        if flips[w]:
            first[a] = shape[a] - 1
    signs = np.where(flips, -1.0, 1.0)
    direction = volume.direction[:, list(order)] * signs
    return Volume(
        array,
        spacing=tuple(volume.spacing[a] for a in order),
        origin=tuple(volume.index_to_world(first)),
        direction=direction,
        meta=volume.meta,
    )


def from_display(array: np.ndarray, grid: Volume) -> np.ndarray:
    """Bring an array shown through :func:`to_display` of ``grid`` back to ``grid``'s axes."""
    order, flips = display_axes(grid.direction)
    return _unorient_array(np.asarray(array), order, flips)


def _geometry_kwargs(shown: Volume) -> dict[str, Any]:
    affine = np.eye(4)
    affine[:3, :3] = _LPS_TO_WORLD @ shown.direction
    affine[:3, 3] = _LPS_TO_WORLD @ np.asarray(shown.origin)
    return {"scale": tuple(shown.spacing), "affine": affine, "units": ("mm", "mm", "mm")}


def _grid_only(volume: Volume) -> Volume:
    """``volume`` with a zero-memory stand-in array: geometry and meta only."""
    stand_in = np.broadcast_to(np.zeros((), dtype=volume.array.dtype), volume.shape)
    return Volume(
        stand_in, volume.spacing, volume.origin, volume.direction, {**volume.meta, "headers": ()}
    )


def _metadata(volume: Volume) -> dict[str, Any]:
    return {METADATA_KEY: {"grid": _grid_only(volume), "meta": dict(volume.meta)}}


def _contrast_limits(array: np.ndarray, *, pet: bool) -> tuple[float, float]:
    sample = np.asarray(array[:: max(1, array.shape[0] // 16)], dtype=np.float32)
    finite = sample[np.isfinite(sample)]
    if finite.size == 0:
        return (0.0, 1.0)
    if pet:
        low, high = 0.0, float(np.percentile(finite, 99.9))
    else:
        low, high = (float(v) for v in np.percentile(finite, [0.5, 99.5]))
    if not high > low:
        high = low + 1.0
    return (low, high)


def _is_pet(volume: Volume) -> bool:
    return str(volume.meta.get("modality", "")).upper() in {"PT", "PET", "NM"}


def layer_name(volume: Volume, *, fallback: str = "volume") -> str:
    """A short layer name: series description + modality (+ units for PET); no patient data."""
    parts = []
    description = str(volume.meta.get("series_description") or "").strip()
    if description:
        parts.append(description)
    modality = str(volume.meta.get("modality") or "").strip()
    if modality:
        parts.append(modality)
    if _is_pet(volume) and volume.meta.get("units"):
        parts.append(f"[{volume.meta['units']}]")
    if not parts:
        source = volume.meta.get("source_file")
        parts.append(str(source).rsplit("/", 1)[-1] if source else fallback)
    return " ".join(parts)


def volume_to_layer_data(
    volume: Volume, *, name: str | None = None, as_labels: bool | None = None, **kwargs: Any
) -> tuple[np.ndarray, dict[str, Any], str]:
    """A napari layer data tuple ``(data, kwargs, layer_type)`` for a Volume.

    Images are shown through a read-only view (no copy): MR in gray, PET with the ``inferno``
    colormap, additive blending and limits from 0 to the 99.9th percentile. Masks
    (:attr:`Volume.is_mask`) become ``labels`` with a writable int32 copy so they can be painted.

    Parameters
    ----------
    volume
        The image or mask.
    name
        Layer name; by default series description + modality.
    as_labels
        Force a Labels (True) or Image (False) layer; default: ``volume.is_mask``.
    **kwargs
        Extra layer keyword arguments (override the defaults).
    """
    shown = to_display(volume)
    labels = volume.is_mask if as_labels is None else as_labels
    layer_kwargs: dict[str, Any] = {
        "name": name or layer_name(volume, fallback="mask" if labels else "volume"),
        **_geometry_kwargs(shown),
        "metadata": _metadata(volume),
    }
    if labels:
        data = np.array(shown.array, dtype=np.int32)  # writable copy for painting
        layer_kwargs["opacity"] = 0.6
        layer_type = "labels"
    else:
        data = shown.array
        pet = _is_pet(volume)
        layer_kwargs["contrast_limits"] = _contrast_limits(data, pet=pet)
        layer_kwargs["colormap"] = "inferno" if pet else "gray"
        layer_kwargs["blending"] = "additive" if pet else "translucent"
        if pet:
            layer_kwargs["opacity"] = 0.7
        layer_type = "image"
    layer_kwargs.update(kwargs)
    return data, layer_kwargs, layer_type


def labels_like(
    grid: Volume, array: np.ndarray | None = None, **kwargs: Any
) -> tuple[np.ndarray, dict[str, Any], str]:
    """A Labels layer data tuple on the grid of ``grid`` (zeros if ``array`` is None).

    ``array`` is given on ``grid``'s own axes (e.g. a mask returned by the core library).
    """
    data = np.zeros(grid.shape, np.int32) if array is None else np.asarray(array)
    if data.shape != grid.shape:
        raise IsletImagingError(
            f"labels must have the shape of their grid {grid.shape}",
            tag="array",
            value=data.shape,
        )
    meta = {
        key: grid.meta[key]
        for key in (
            "series_uid",
            "study_uid",
            "patient_id",
            "frame_of_reference_uid",
            "source_files",
        )
        if key in grid.meta
    }
    mask = Volume(data.astype(np.int32), grid.spacing, grid.origin, grid.direction, meta)
    return volume_to_layer_data(mask.as_mask(), as_labels=True, **kwargs)


def layer_grid(layer: Any) -> Volume:
    """The geometry of a layer as a Volume on the layer's *display* axes (array = layer data).

    Works for any 3D Image or Labels layer, including ones not made by this plugin, from
    its full data-to-world transform (scale, translate, rotate, affine).

    Raises
    ------
    IsletImagingError
        If the layer is not 3D or its transform has shear or a zero scale.
    """
    data = np.asarray(layer.data)
    if data.ndim != 3:
        raise IsletImagingError(
            "a 3D layer is needed", tag=f"layer {layer.name!r}", value=data.shape
        )
    world_origin = np.asarray(layer.data_to_world((0.0, 0.0, 0.0)), dtype=float)
    steps = np.stack(
        [np.asarray(layer.data_to_world(tuple(e)), dtype=float) - world_origin for e in np.eye(3)],
        axis=1,
    )
    linear = _LPS_TO_WORLD @ steps
    spacing = np.linalg.norm(linear, axis=0)
    if np.any(spacing <= 0):
        raise IsletImagingError("layer has a zero scale", tag=f"layer {layer.name!r}")
    direction = linear / spacing
    if not np.allclose(direction.T @ direction, np.eye(3), atol=1e-3):
        raise IsletImagingError(
            "layer transform has a shear; it cannot be a physical grid",
            tag=f"layer {layer.name!r}",
            hint="remove the shear from the layer",
        )
    origin = _LPS_TO_WORLD @ world_origin
    info = layer.metadata.get(METADATA_KEY, {})
    return Volume(data, tuple(spacing), tuple(origin), direction, info.get("meta", {}))


def layer_to_volume(layer: Any) -> Volume:
    """The Volume behind an Image or Labels layer, on its original grid when known.

    Labels layers give integer masks (``meta['kind'] = 'mask'``). For layers made by this
    plugin the array is put back on the axes of the series it came from; for other layers the
    geometry is read from the layer transform (see :func:`layer_grid`).
    """
    info = layer.metadata.get(METADATA_KEY, {})
    grid = info.get("grid")
    is_labels = type(layer).__name__ == "Labels"
    data = np.asarray(layer.data)
    if grid is not None and data.shape == to_display(grid).shape:
        volume = Volume(
            from_display(data, grid),
            grid.spacing,
            grid.origin,
            grid.direction,
            info.get("meta", grid.meta),
        )
    else:
        volume = layer_grid(layer)
    if is_labels:
        return volume.as_mask()
    return volume
