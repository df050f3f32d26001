"""Write a :class:`~islet_imaging.volume.Volume` as a classic single-frame DICOM series.

One file per slice, MR Image Storage or PET Image Storage, with the geometry of the Volume
(``ImagePositionPatient`` of every slice, ``ImageOrientationPatient`` from ``direction``,
``PixelSpacing``, ``SliceThickness`` / ``SpacingBetweenSlices``), deterministic UIDs, patient /
study / series tags, ``FrameOfReferenceUID`` and a complete file meta header. It is used by the
phantom (:mod:`islet_imaging.phantom`) and by tests that need arbitrary series on disk, which can
add, replace or delete any tag through ``tags`` and ``per_slice_tags``.

Geometry convention (see :class:`~islet_imaging.volume.Volume`): column 2 of ``direction`` is
the DICOM row direction cosine (increasing column index), column 1 the column direction cosine
(increasing row index) and slice ``k`` is at ``origin + k * spacing[0] * direction[:, 0]``.
``PixelSpacing`` is (row spacing, column spacing) = ``(spacing[1], spacing[2])``.

Stored values
    * MR: int16 (``rescale="none"``): values are rounded and must fit in int16.
    * PT: int16 or uint16 (``pixel_dtype``) with a per-slice ``RescaleSlope`` computed from the
      slice maximum (``rescale="per_slice"``), intercept 0, as PET Image Storage requires.

Everything written is a pure function of the arguments: no clock, no random UID, so writing the
same Volume twice gives identical bytes.
"""

from __future__ import annotations

import copy
import enum
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    MRImageStorage,
    PositronEmissionTomographyImageStorage,
    RLELossless,
    generate_uid,
)

from islet_imaging.errors import IsletImagingError
from islet_imaging.io._dicom_files import write_object
from islet_imaging.volume import Volume

__all__ = [
    "Modality",
    "Rescale",
    "deterministic_uid",
    "quantise",
    "series_datasets",
    "write_series",
]

#: Implementation identity written in every file meta header (fixed, so bytes are reproducible).
IMPLEMENTATION_CLASS_UID = UID("1.2.826.0.1.3680043.8.498.34171513926395473102883520549")
IMPLEMENTATION_VERSION_NAME = "ISLET_IMAGING_01"

_SOP_CLASS = {"MR": MRImageStorage, "PT": PositronEmissionTomographyImageStorage}
_PER_SLICE_KEYWORDS = frozenset(
    {
        "SOPInstanceUID",
        "InstanceNumber",
        "ImagePositionPatient",
        "SliceLocation",
        "ImageIndex",
        "RescaleSlope",
    }
)
_TRANSFER_SYNTAX_ALIASES = {
    "explicit": ExplicitVRLittleEndian,
    "uncompressed": ExplicitVRLittleEndian,
    "rle": RLELossless,
}


class Modality(enum.Enum):
    """Modalities :func:`write_series` can write (also accepts ``"PET"`` for ``PT``)."""

    MR = "MR"
    PT = "PT"

    @classmethod
    def _missing_(cls, value: object) -> Modality | None:
        if isinstance(value, str):
            text = value.strip().upper()
            if text == "PET":
                return cls.PT
            for member in cls:
                if member.value == text:
                    return member
        return None


class Rescale(enum.Enum):
    """How stored integers relate to the Volume values."""

    NONE = "none"  #: stored = round(value); no rescale tags
    PER_SLICE = "per_slice"  #: one RescaleSlope per slice from the slice maximum
    GLOBAL = "global"  #: one RescaleSlope for the whole series from the volume maximum


def deterministic_uid(*parts: object) -> UID:
    """A valid UID derived from ``parts`` only (pydicom root + SHA-512 of the parts).

    Examples
    --------
    >>> deterministic_uid("seed", 1) == deterministic_uid("seed", 1)
    True
    >>> deterministic_uid("seed", 1) == deterministic_uid("seed", 2)
    False
    """
    return generate_uid(entropy_srcs=[str(p) for p in parts])


def _ds(value: float) -> str:
    """Decimal String for ``value`` with at most 16 characters, stable to rounding noise."""
    value = round(float(value), 6) + 0.0
    text = f"{value:.10g}"
    if len(text) > 16:  # pragma: no cover - only for absurd magnitudes
        text = f"{value:.9e}"[:16]
    return text


def _round_up_sig(value: float, digits: int = 8) -> float:
    """Round ``value`` (> 0) up to ``digits`` significant digits (stable DS text for slopes)."""
    exponent = math.floor(math.log10(value)) - digits + 1
    scale = 10.0**exponent
    rounded = math.ceil(value / scale - 1e-9) * scale
    return float(f"{rounded:.{digits}g}")


def _to_dicom_value(value: Any) -> Any:
    """Turn dicts / lists of dicts into pydicom Datasets / Sequences, recursively."""
    if isinstance(value, Dataset):
        return value
    if isinstance(value, Mapping):
        item = Dataset()
        for key, sub in value.items():
            _set_tag(item, key, sub)
        return item
    if isinstance(value, list | tuple) and value and isinstance(value[0], Mapping | Dataset):
        return DicomSequence([_to_dicom_value(v) for v in value])
    return value


def _set_tag(ds: Dataset, keyword: str, value: Any) -> None:
    """Set ``keyword`` on ``ds``; ``None`` deletes it. Raises on unknown keywords."""
    if pydicom.datadict.tag_for_keyword(keyword) is None:
        raise IsletImagingError(
            "unknown DICOM keyword",
            tag=keyword,
            hint="use a pydicom keyword such as 'PatientWeight' (see pydicom.datadict)",
        )
    if value is None:
        if keyword in ds:
            delattr(ds, keyword)
        return
    setattr(ds, keyword, _to_dicom_value(value))


def _resolve_transfer_syntax(transfer_syntax: str | None) -> UID:
    if transfer_syntax is None:
        return ExplicitVRLittleEndian
    text = str(transfer_syntax)
    uid = _TRANSFER_SYNTAX_ALIASES.get(text.lower()) or UID(text)
    if uid not in (ExplicitVRLittleEndian, RLELossless):
        raise IsletImagingError(
            "unsupported transfer syntax for writing",
            tag="transfer_syntax",
            value=str(transfer_syntax),
            hint="use None (Explicit VR Little Endian) or 'rle' (RLE Lossless)",
        )
    return uid


def quantise(
    array: np.ndarray, rescale: Rescale, pixel_dtype: np.dtype
) -> tuple[np.ndarray, list[float]]:
    """Stored integers and per-slice RescaleSlopes that :func:`write_series` would write.

    Parameters
    ----------
    array : ndarray, shape (nz, ny, nx)
        Values in physical units.
    rescale : Rescale
        ``NONE`` rounds the values; ``PER_SLICE`` / ``GLOBAL`` choose the slope(s) so that the
        largest absolute value uses the whole integer range (slopes rounded up to 8
        significant digits, so their Decimal String is exact).
    pixel_dtype : numpy dtype
        int16 or uint16.

    Returns
    -------
    stored : ndarray of ``pixel_dtype``, shape (nz, ny, nx)
    slopes : list of float, one per slice (``stored * slope`` ≈ value, error ≤ slope / 2)
    """
    info = np.iinfo(pixel_dtype)
    data = np.asarray(array, dtype=np.float64)
    if not np.all(np.isfinite(data)):
        raise IsletImagingError(
            "the volume holds NaN or infinite values", tag="array", hint="replace them first"
        )
    if pixel_dtype.kind == "u" and data.min() < 0:
        raise IsletImagingError(
            "negative values cannot be stored as uint16",
            tag="pixel_dtype",
            value=float(data.min()),
            hint="use pixel_dtype='int16' or clip the volume at 0",
        )
    nz = data.shape[0]
    if rescale is Rescale.NONE:
        stored = np.rint(data)
        if stored.min() < info.min or stored.max() > info.max:
            raise IsletImagingError(
                f"values do not fit in {pixel_dtype.name} without rescaling",
                tag="rescale",
                value=(float(data.min()), float(data.max())),
                hint="pass rescale='per_slice' or scale the volume",
            )
        return stored.astype(pixel_dtype), [1.0] * nz
    limit = float(info.max)
    if rescale is Rescale.GLOBAL:
        peak = float(np.abs(data).max())
        slopes = [_round_up_sig(peak / limit) if peak > 0 else 1.0] * nz
    else:
        peaks = np.abs(data).reshape(nz, -1).max(axis=1)
        slopes = [_round_up_sig(float(p) / limit) if p > 0 else 1.0 for p in peaks]
    stored = np.rint(data / np.asarray(slopes)[:, None, None])
    stored = np.clip(stored, info.min, info.max)
    return stored.astype(pixel_dtype), slopes


def _modality_defaults(
    ds: Dataset, modality: Modality, volume: Volume, date: str, time: str
) -> None:
    """Type 1/2 attributes of the MR Image or PET Series/Image/Isotope modules."""
    if modality is Modality.MR:
        ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
        ds.ScanningSequence = "SE"
        ds.SequenceVariant = "NONE"
        ds.ScanOptions = ""
        ds.MRAcquisitionType = "2D"
        ds.RepetitionTime = "500"
        ds.EchoTime = "15"
        ds.EchoTrainLength = "1"
        ds.ImagedNucleus = "1H"
        ds.MagneticFieldStrength = "3"
        ds.PatientPosition = "HFS"
    else:
        ds.ImageType = ["ORIGINAL", "PRIMARY"]
        ds.Units = "BQML"
        ds.CountsSource = "EMISSION"
        ds.SeriesType = ["STATIC", "IMAGE"]
        ds.CorrectedImage = ["ATTN", "DECY"]
        ds.DecayCorrection = "START"
        ds.RandomsCorrectionMethod = "DLYD"
        ds.ReconstructionMethod = "OSEM"
        ds.CollimatorType = "NONE"
        ds.NumberOfSlices = volume.shape[0]
        ds.FrameReferenceTime = "0"
        ds.ActualFrameDuration = 300000
        ds.DecayFactor = "1"
        ds.AcquisitionDate = date
        ds.AcquisitionTime = time
        ds.RadiopharmaceuticalInformationSequence = DicomSequence([])
        ds.PatientOrientationCodeSequence = DicomSequence([])
        ds.PatientGantryRelationshipCodeSequence = DicomSequence([])
        ds.AcquisitionContextSequence = DicomSequence([])


def series_datasets(
    volume: Volume,
    *,
    modality: Modality | str,
    patient_id: str = "ISLET-000",
    patient_name: str = "PHANTOM^ANONYMOUS",
    uid_seed: int | str = 0,
    study_uid: str | None = None,
    series_uid: str | None = None,
    frame_of_reference_uid: str | None = None,
    series_number: int = 1,
    series_description: str = "",
    study_date: str = "20240101",
    study_time: str = "090000",
    series_date: str | None = None,
    series_time: str | None = None,
    tags: Mapping[str, Any] | None = None,
    per_slice_tags: Mapping[str, Callable[[int], Any] | Sequence[Any]] | None = None,
    pixel_dtype: str = "int16",
    rescale: Rescale | str | None = None,
    transfer_syntax: str | None = None,
    pixel_data: bool = True,
) -> list[Dataset]:
    """Build the datasets of a series (one per slice, in slice order) without writing them.

    Takes the same arguments as :func:`write_series` (except ``out_dir`` and ``overwrite``);
    with ``pixel_data=False`` the datasets are headers only (what a loader keeps in
    ``meta['headers']``), and ``RescaleSlope`` is still computed from the data.

    Returns
    -------
    list of pydicom.Dataset
        ``len == volume.shape[0]``, each with ``file_meta`` set.
    """
    modality = Modality(modality)
    rescale = Rescale(rescale) if rescale is not None else None
    if rescale is None:
        rescale = Rescale.NONE if modality is Modality.MR else Rescale.PER_SLICE
    if modality is Modality.PT and rescale is Rescale.NONE:
        raise IsletImagingError(
            "PET Image Storage needs RescaleSlope",
            tag="rescale",
            value="none",
            hint="use rescale='per_slice' or 'global'",
        )
    dtype = np.dtype(pixel_dtype)
    if dtype not in (np.dtype(np.int16), np.dtype(np.uint16)):
        raise IsletImagingError(
            "pixel_dtype must be 'int16' or 'uint16'", tag="pixel_dtype", value=pixel_dtype
        )
    ts_uid = _resolve_transfer_syntax(transfer_syntax)
    stored, slopes = quantise(volume.array, rescale, dtype)

    series_date = series_date or study_date
    series_time = series_time or study_time
    study_uid = study_uid or deterministic_uid(uid_seed, patient_id, "study")
    series_uid = series_uid or deterministic_uid(
        uid_seed, study_uid, "series", series_number, series_description
    )
    frame_of_reference_uid = frame_of_reference_uid or deterministic_uid(
        uid_seed, study_uid, "frame-of-reference"
    )
    sop_class = _SOP_CLASS[modality.value]

    direction = np.asarray(volume.direction, dtype=float)
    row_cosine, col_cosine, normal = direction[:, 2], direction[:, 1], direction[:, 0]
    origin = np.asarray(volume.origin, dtype=float)
    nz, ny, nx = volume.shape
    iop = [_ds(v) for v in (*row_cosine, *col_cosine)]
    dicom_normal = np.cross(row_cosine, col_cosine)
    per_slice_tags = dict(per_slice_tags or {})
    for keyword, source in per_slice_tags.items():
        if not callable(source) and len(source) != nz:
            raise IsletImagingError(
                f"per-slice values must be a callable or a sequence of {nz} values",
                tag=keyword,
                value=len(source),
            )

    template = Dataset()
    template.SpecificCharacterSet = "ISO_IR 100"
    template.SOPClassUID = sop_class
    template.StudyDate = study_date
    template.SeriesDate = series_date
    template.ContentDate = series_date
    template.StudyTime = study_time
    template.SeriesTime = series_time
    template.ContentTime = series_time
    template.AccessionNumber = ""
    template.Modality = modality.value
    template.Manufacturer = "islet-imaging phantom"
    template.ReferringPhysicianName = ""
    template.SeriesDescription = series_description
    template.PatientName = patient_name
    template.PatientID = patient_id
    template.PatientBirthDate = ""
    template.PatientSex = ""
    template.BodyPartExamined = "ARM"
    template.Laterality = ""
    template.SliceThickness = _ds(volume.spacing[0])
    template.SpacingBetweenSlices = _ds(volume.spacing[0])
    template.StudyInstanceUID = study_uid
    template.SeriesInstanceUID = series_uid
    template.StudyID = "1"
    template.SeriesNumber = int(series_number)
    template.PatientOrientation = ""
    template.ImageOrientationPatient = iop
    template.FrameOfReferenceUID = frame_of_reference_uid
    template.PositionReferenceIndicator = ""
    template.SamplesPerPixel = 1
    template.PhotometricInterpretation = "MONOCHROME2"
    template.Rows = ny
    template.Columns = nx
    template.PixelSpacing = [_ds(volume.spacing[1]), _ds(volume.spacing[2])]
    template.BitsAllocated = 16
    template.BitsStored = 16
    template.HighBit = 15
    template.PixelRepresentation = 1 if dtype.kind == "i" else 0
    _modality_defaults(template, modality, volume, series_date, series_time)
    if rescale is not Rescale.NONE:
        template.RescaleIntercept = "0"
        if modality is Modality.MR:
            template.RescaleType = "US"
    tags = dict(tags or {})
    for keyword, value in tags.items():
        _set_tag(template, keyword, value)
    # user tags that replace per-slice values are re-applied after them
    slice_overrides = {k: v for k, v in tags.items() if k in _PER_SLICE_KEYWORDS}

    datasets = []
    for k in range(nz):
        position = origin + k * volume.spacing[0] * normal
        ds = Dataset()
        for element in template:  # independent elements: editing one slice never leaks
            ds.add(copy.deepcopy(element) if element.VR == "SQ" else copy.copy(element))
        ds.SOPInstanceUID = deterministic_uid(series_uid, "instance", k)
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [_ds(v) for v in position]
        ds.SliceLocation = _ds(float(position @ dicom_normal))
        if modality is Modality.PT:
            ds.ImageIndex = k + 1
        if rescale is not Rescale.NONE:
            ds.RescaleSlope = f"{slopes[k]:.8g}"
        for keyword, value in slice_overrides.items():
            _set_tag(ds, keyword, value)
        for keyword, source in per_slice_tags.items():
            _set_tag(ds, keyword, source(k) if callable(source) else source[k])

        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = ds.get("SOPClassUID", sop_class)
        meta.MediaStorageSOPInstanceUID = ds.get("SOPInstanceUID", "1.2.3")
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
        meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
        ds.file_meta = meta
        if pixel_data:
            ds.PixelData = np.ascontiguousarray(stored[k]).astype(dtype.newbyteorder("<")).tobytes()
            if ts_uid == RLELossless:
                ds.compress(RLELossless, encoding_plugin="pydicom", generate_instance_uid=False)
        else:
            meta.TransferSyntaxUID = ts_uid
        datasets.append(ds)
    return datasets


def write_series(
    volume: Volume,
    out_dir: str | os.PathLike,
    *,
    modality: Modality | str,
    overwrite: bool = False,
    filename: str = "IM{slice:04d}.dcm",
    **options: Any,
) -> list[Path]:
    """Write ``volume`` as a classic single-frame DICOM series, one file per slice.

    Parameters
    ----------
    volume : Volume, shape (nz, ny, nx)
        Image values (MR signal, or PET activity in the unit given by the ``Units`` tag, Bq/mL
        by default) with its geometry.
    out_dir
        Folder to write into (created if needed).
    modality : {"MR", "PT"}
        MR Image Storage or PET Image Storage (``"PET"`` is accepted for ``"PT"``).
    overwrite
        Replace existing files of the same name (default: refuse).
    filename
        Pattern of the file names: ``{slice}`` is the 1-based position of the slice along the
        normal, ``{instance}`` its InstanceNumber (which ``tags`` / ``per_slice_tags`` may
        change, even to duplicates).
    **options
        Keyword-only options of :func:`series_datasets`:

        ``patient_id``, ``patient_name``, ``study_uid``, ``series_uid``,
        ``frame_of_reference_uid`` (derived from ``uid_seed`` when not given),
        ``series_number``, ``series_description``, ``study_date``/``study_time``,
        ``series_date``/``series_time`` (YYYYMMDD / HHMMSS), ``tags`` (keyword → value, applied
        to every slice; ``None`` deletes a tag; dicts and lists of dicts become sequences),
        ``per_slice_tags`` (keyword → ``callable(k)`` or sequence of ``nz`` values),
        ``pixel_dtype`` ("int16" or "uint16"), ``rescale`` ("none", "per_slice", "global";
        default "none" for MR and "per_slice" for PT), ``transfer_syntax`` (None for Explicit
        VR Little Endian, or "rle" / the RLE Lossless UID).

    Returns
    -------
    list of Path
        The files written, in slice order (slice ``k`` at
        ``origin + k * spacing[0] * direction[:, 0]``).

    Raises
    ------
    IsletImagingError
        For values that cannot be stored, unknown keywords, or existing files when
        ``overwrite`` is False.

    Examples
    --------
    >>> import numpy as np, tempfile, pydicom
    >>> from islet_imaging.volume import Volume
    >>> vol = Volume(np.arange(24, dtype=np.float32).reshape(2, 3, 4), spacing=(3.0, 0.5, 0.6))
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     files = write_series(vol, tmp, modality="MR", uid_seed=1)
    ...     ds = pydicom.dcmread(files[1])
    >>> [float(v) for v in ds.PixelSpacing], [float(v) for v in ds.ImagePositionPatient]
    ([0.5, 0.6], [3.0, 0.0, 0.0])
    >>> int(ds.pixel_array[2, 3])
    23
    """
    out_dir = Path(out_dir)
    datasets = series_datasets(volume, modality=modality, **options)
    paths = []
    out_dir.mkdir(parents=True, exist_ok=True)
    for k, ds in enumerate(datasets):
        path = out_dir / filename.format(slice=k + 1, instance=ds.get("InstanceNumber", ""))
        write_object(ds, path, overwrite=overwrite)
        paths.append(path)
    return paths
