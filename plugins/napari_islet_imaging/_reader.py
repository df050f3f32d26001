"""napari reader: DICOM folders, DICOMDIR, single DICOM files, NIfTI and NRRD.

Every series becomes one layer with its physical geometry (see :mod:`._layers` for the world
convention): MR in gray, PET converted to SUV (body weight) with a PET colormap, masks as Labels.
The reader never raises: files it cannot read are reported as napari notifications and in the
log, and whatever could be read is still returned.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from islet_imaging.errors import IsletImagingError
from islet_imaging.io.files import SUPPORTED_SUFFIXES, read_mask, read_volume
from islet_imaging.volume import Volume

from ._layers import layer_name, volume_to_layer_data

__all__ = ["napari_get_reader", "pet_to_suv", "read_dicom", "read_image_file", "read_paths"]

logger = logging.getLogger(__name__)

LayerData = tuple[Any, dict[str, Any], str]
PathLike = str | os.PathLike

_MASK_WORDS = ("mask", "label", "seg", "truth", "roi")
_MAX_MASK_LABELS = 64
_DIR_PROBE_FILES = 256


def _notify(level: str, message: str) -> None:
    """Log ``message`` and show it as a napari notification (``level``: warning or error)."""
    logger.log(logging.ERROR if level == "error" else logging.WARNING, message)
    try:
        from napari.utils import notifications

        show = notifications.show_error if level == "error" else notifications.show_warning
        show(message)
    except Exception:  # a notification must never break reading
        logger.debug("could not show a napari notification", exc_info=True)


def _is_dicom_file(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def _is_image_file(path: Path) -> bool:
    return path.name.lower().endswith(SUPPORTED_SUFFIXES)


def _is_candidate(path: Path) -> bool:
    if path.is_dir():
        probed = 0
        for root, _dirs, files in os.walk(path):
            for name in files:
                child = Path(root, name)
                if name.upper() == "DICOMDIR" or _is_image_file(child) or _is_dicom_file(child):
                    return True
                probed += 1
                if probed >= _DIR_PROBE_FILES:
                    return False
        return False
    if not path.is_file():
        return False
    return path.name.upper() == "DICOMDIR" or _is_image_file(path) or _is_dicom_file(path)


def napari_get_reader(path: PathLike | Sequence[PathLike]) -> Callable | None:
    """Return :func:`read_paths` if every path looks readable, else None (napari tries others)."""
    paths = [path] if isinstance(path, str | os.PathLike) else list(path)
    if not paths:
        return None
    try:
        if all(_is_candidate(Path(p)) for p in paths):
            return read_paths
    except OSError:
        logger.debug("cannot probe %s", paths, exc_info=True)
    return None


def pet_to_suv(volume: Volume) -> Volume:
    """PET in SUVbw when its headers allow it, else unchanged (Bq/mL) with a notification."""
    from islet_imaging.io.pet import to_suv

    try:
        return to_suv(volume)
    except IsletImagingError as exc:
        _notify(
            "warning",
            f"PET series {volume.meta.get('series_description') or ''!s} shown in "
            f"{volume.meta.get('units') or 'stored units'} (no SUV): {exc}",
        )
        return volume


def _looks_like_mask(path: Path, volume: Volume) -> bool:
    array = volume.array
    if not (array.dtype == bool or np.issubdtype(array.dtype, np.integer)):
        return False
    if any(word in path.name.lower() for word in _MASK_WORDS):
        return True
    return array.min() >= 0 and np.unique(array).size <= _MAX_MASK_LABELS


def read_image_file(path: PathLike) -> list[LayerData]:
    """A NIfTI or NRRD file as an Image layer, or as Labels when it holds a mask."""
    path = Path(path)
    volume = read_volume(path)
    name = path.name.split(".")[0]
    if _looks_like_mask(path, volume):
        return [volume_to_layer_data(read_mask(path), name=name)]
    return [volume_to_layer_data(volume, name=None if volume.meta.get("modality") else name)]


def _load_dicom_volumes(source: PathLike) -> list[Volume]:
    from islet_imaging.io.dicom import load_volumes
    from islet_imaging.io.discover import scan

    source = Path(source)
    if source.is_file() and source.name.upper() != "DICOMDIR":
        return [maybe_suv(v) for v in load_volumes(source)]
    index = scan(source)
    for problem in index.problems:
        _notify("warning", f"skipped {problem.path}: {problem.reason}")
    volumes: list[Volume] = []
    for entry in index.series:
        label = f"series {entry.series_number} {entry.description or ''} ({entry.modality})"
        try:
            loaded = load_volumes(entry)
        except IsletImagingError as exc:
            _notify("warning", f"{label} not loaded: {exc}")
            continue
        volumes.extend(maybe_suv(volume) for volume in loaded)
    return volumes


def is_pt(volume: Volume) -> bool:
    """Whether ``volume`` is a PET series (DICOM Modality PT)."""
    return str(volume.meta.get("modality", "")).upper() == "PT"


def maybe_suv(volume: Volume) -> Volume:
    """PET through :func:`pet_to_suv`, any other volume unchanged."""
    return pet_to_suv(volume) if is_pt(volume) else volume


def _display_order(volume: Volume) -> tuple[int, int]:
    """MR (and other images) first, PET last so it blends over them."""
    return (int(is_pt(volume)), int(volume.meta.get("series_number") or 0))


def _plane(volume: Volume) -> str:
    normal = np.abs(np.asarray(volume.direction)[:, 0])
    if normal.max() < 0.95:
        return "oblique"
    return ("sagittal", "coronal", "axial")[int(np.argmax(normal))]


_DISTINGUISHERS = (
    lambda v: f"#{v.meta.get('series_number')}",
    lambda v: f"echo {v.meta.get('echo_number')}",
    lambda v: "/".join(str(t) for t in (v.meta.get("image_type") or ())[2:4]),
    _plane,
    lambda v: f"t{(v.meta.get('split_keys') or {}).get('temporal')}",
)


def distinct_names(volumes: Sequence[Volume]) -> list[str]:
    """Layer names, made unique by series number, echo, image type, plane or time point."""
    names = [layer_name(v) for v in volumes]
    for distinguish in _DISTINGUISHERS:
        groups: dict[str, list[int]] = {}
        for i, name in enumerate(names):
            groups.setdefault(name, []).append(i)
        for members in groups.values():
            if len(members) > 1 and len({distinguish(volumes[i]) for i in members}) > 1:
                for i in members:
                    names[i] = f"{names[i]} {distinguish(volumes[i])}"
    return names


def read_dicom(source: PathLike) -> list[LayerData]:
    """Every series in a DICOM folder, DICOMDIR or file as layer data (MR first, PET last)."""
    volumes = sorted(_load_dicom_volumes(source), key=_display_order)
    names = distinct_names(volumes)
    return [volume_to_layer_data(v, name=n) for v, n in zip(volumes, names, strict=True)]


def _read_one(path: Path) -> list[LayerData]:
    if path.is_file() and _is_image_file(path):
        return read_image_file(path)
    layers = read_dicom(path)
    if path.is_dir():  # NIfTI / NRRD files at the top of the folder (e.g. masks)
        for child in sorted(p for p in path.iterdir() if p.is_file() and _is_image_file(p)):
            layers.extend(read_image_file(child))
    return layers


def read_paths(path: PathLike | Iterable[PathLike], **_: Any) -> list[LayerData]:
    """Read every path into layer data; problems are notified, never raised.

    Returns ``[(None,)]`` (napari's "nothing to show") when nothing could be read, after
    notifying why.
    """
    paths = [path] if isinstance(path, str | os.PathLike) else list(path)
    layers: list[LayerData] = []
    for item in paths:
        item = Path(item)
        try:
            read = _read_one(item)
        except IsletImagingError as exc:
            _notify("error", f"cannot open {item}: {exc}")
            continue
        except Exception as exc:  # the reader must never raise into napari
            logger.exception("unexpected error reading %s", item)
            _notify("error", f"cannot open {item}: {type(exc).__name__}: {exc}")
            continue
        if not read:
            _notify("warning", f"no image series found in {item}")
        layers.extend(read)
    return layers or [(None,)]
