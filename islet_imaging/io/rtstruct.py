"""RTSTRUCT contours (e.g. drawn in a treatment-planning system or 3D Slicer) to mask Volumes.

Each closed planar contour is mapped from patient space (LPS mm) into the voxel grid of a
reference image, must lie in one of its slices (within a quarter of the slice spacing), and is
rasterised in that slice: a voxel belongs to the ROI when its centre lies inside the polygon.
Several contours of one ROI on the same slice combine with the even-odd rule (an inner contour is
a hole), as in DICOM RT practice.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import pydicom
from skimage.draw import polygon as draw_polygon

from islet_imaging.errors import DicomSeriesError, GeometryError
from islet_imaging.io._dicom_files import read_object
from islet_imaging.volume import Volume

__all__ = ["read_rtstruct", "rtstruct_roi_names"]

RTSTRUCT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.481.3"
_PLANE_TOL = 0.25  # fraction of the slice spacing


def _read(rtstruct: str | os.PathLike | pydicom.Dataset) -> pydicom.Dataset:
    return read_object(
        rtstruct, sop_class=RTSTRUCT_SOP_CLASS, label="RTSTRUCT", description="an RT Structure Set"
    )


def rtstruct_roi_names(rtstruct: str | os.PathLike | pydicom.Dataset) -> dict[int, str]:
    """ROI number -> ROI name of an RT Structure Set."""
    ds = _read(rtstruct)
    return {int(r.ROINumber): str(r.ROIName) for r in ds.get("StructureSetROISequence", [])}


def read_rtstruct(
    rtstruct: str | os.PathLike | pydicom.Dataset,
    reference: Volume,
    *,
    rois: Sequence[str] | None = None,
) -> dict[str, Volume]:
    """Rasterise the closed planar contours of an RTSTRUCT onto the grid of ``reference``.

    Parameters
    ----------
    rtstruct
        Path of the RT Structure Set, or its dataset.
    reference : Volume, shape (nz, ny, nx)
        The image the contours were drawn on (or any image whose slices contain them).
    rois
        ROI names to read (default: every ROI that has contours).

    Returns
    -------
    dict of str to Volume
        ROI name -> boolean mask Volume on the reference grid (``meta['kind'] = 'mask'``,
        ``meta['roi_name']``, ``meta['roi_number']``).

    Raises
    ------
    GeometryError
        If a contour is not planar within a slice of ``reference`` or leaves its extent.
    DicomSeriesError
        If a requested ROI does not exist.
    """
    ds = _read(rtstruct)
    path = getattr(ds, "filename", None) or None
    names = rtstruct_roi_names(ds)
    if rois is not None:
        missing = sorted(set(rois) - set(names.values()))
        if missing:
            raise DicomSeriesError(
                "ROI not found in the structure set",
                path=path,
                tag="ROIName",
                value=missing,
                hint=f"available: {sorted(names.values())}",
            )
    spacing_k = reference.spacing[0]
    masks: dict[str, Volume] = {}
    for roi in ds.get("ROIContourSequence", []):
        number = int(roi.ReferencedROINumber)
        name = names.get(number, f"ROI {number}")
        if (rois is not None and name not in rois) or "ContourSequence" not in roi:
            continue
        out = np.zeros(reference.shape, bool)
        for c, contour in enumerate(roi.ContourSequence):
            if str(contour.get("ContourGeometricType", "CLOSED_PLANAR")) != "CLOSED_PLANAR":
                continue
            points = np.asarray(contour.ContourData, float).reshape(-1, 3)
            kji = reference.world_to_index(points)
            k = round(float(np.mean(kji[:, 0])))
            off_plane = np.max(np.abs(kji[:, 0] - k))
            if off_plane > _PLANE_TOL or not 0 <= k < reference.shape[0]:
                raise GeometryError(
                    "contour does not lie in a slice of the reference image",
                    path=path,
                    tag=f"ROIContourSequence[{name}].ContourSequence[{c}].ContourData",
                    value=f"{off_plane * spacing_k:.2f} mm off slice {k}",
                    hint="pass the image series the structure set was drawn on",
                )
            in_plane = kji[:, 1:]
            if np.any(in_plane < -0.5) or np.any(in_plane > np.asarray(reference.shape[1:]) - 0.5):
                raise GeometryError(
                    "contour leaves the field of view of the reference image",
                    path=path,
                    tag=f"ROIContourSequence[{name}].ContourSequence[{c}].ContourData",
                    value=f"slice {k}, index range {np.round(in_plane.min(0), 1).tolist()}"
                    f"..{np.round(in_plane.max(0), 1).tolist()}",
                    hint="pass the image series the structure set was drawn on",
                )
            rr, cc = draw_polygon(kji[:, 1], kji[:, 2], shape=reference.shape[1:])
            plane = np.zeros(reference.shape[1:], bool)
            plane[rr, cc] = True
            out[k] ^= plane
        masks[name] = Volume(
            out,
            spacing=reference.spacing,
            origin=reference.origin,
            direction=reference.direction,
            meta={
                "kind": "mask",
                "roi_name": name,
                "roi_number": number,
                "frame_of_reference_uid": reference.meta.get("frame_of_reference_uid"),
                "source_rtstruct": None if path is None else str(path),
            },
        )
    return masks
