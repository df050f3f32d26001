"""napari writers: Labels and Image layers to NIfTI / NRRD, and Labels to DICOM SEG.

Files are written atomically by :func:`islet_imaging.io.files.write_volume`, which refuses to
replace an existing file: annotations are never silently overwritten.
"""

from __future__ import annotations

import os
from typing import Any

from islet_imaging.io.files import write_volume

from ._layers import layer_to_volume

__all__ = ["layer_from_data", "write_image", "write_labels", "write_labels_seg"]


def layer_from_data(data: Any, attributes: dict[str, Any], layer_type: str) -> Any:
    """Rebuild a napari layer from the ``(data, attributes)`` napari hands to a writer."""
    from napari.layers import Layer

    attributes = {key: value for key, value in attributes.items() if key != "data"}
    return Layer.create(data, attributes, layer_type)


def _write(path: str, data: Any, attributes: dict[str, Any], layer_type: str) -> list[str]:
    volume = layer_to_volume(layer_from_data(data, attributes, layer_type))
    if layer_type == "labels":
        volume = volume.with_array(volume.array.astype("int32", copy=False), kind="mask")
    return [os.fspath(write_volume(volume, path))]


def write_labels(path: str, data: Any, attributes: dict[str, Any]) -> list[str]:
    """Write a Labels layer as an integer mask on its original grid (``.nii.gz``/``.nrrd``)."""
    return _write(path, data, attributes, "labels")


def write_image(path: str, data: Any, attributes: dict[str, Any]) -> list[str]:
    """Write an Image layer on its original grid (``.nii.gz``/``.nrrd``)."""
    return _write(path, data, attributes, "image")


def write_labels_seg(path: str, data: Any, attributes: dict[str, Any]) -> list[str]:
    """Write a Labels layer drawn on a DICOM series as a DICOM SEG (one segment per label).

    The layer must come from a DICOM image opened by this plugin (its metadata names the source
    files); the SEG references that series and is marked as a manual segmentation.
    """
    from islet_imaging.io.seg import write_seg_labels

    labels = layer_to_volume(layer_from_data(data, attributes, "labels"))
    labels = labels.with_array(labels.array.astype("int32", copy=False), kind="mask")
    return [os.fspath(write_seg_labels(labels, path))]
