"""DICOM SEG for graft masks and deposit label maps, written and read with highdicom.

A mask :class:`~islet_imaging.volume.Volume` becomes a BINARY DICOM SEG that references the image
series it was drawn on: a boolean mask gives one segment ("Graft"), an integer label map gives one
segment per label (one per deposit). Each segment carries SNOMED CT codes for its property
category and type, the algorithm that produced it (AUTOMATIC / SEMIAUTOMATIC / MANUAL with name and
version) and a tracking identifier (a label plus a UID that is stable for the same patient and
object, so that the same graft or deposit is recognised across visits).

Reading a SEG gives back a label Volume; with ``reference=`` (the source image Volume) it is placed
exactly on the source grid, checked frame by frame against the SEG's own plane positions.

Segment codes (DICOM CID 7150 / 7151, SNOMED CT):

* graft or deposit: category ``85756007`` "Tissue", type ``246345001`` "Graft material",
  anatomic region ``14975008`` "Forearm";
* reference muscle: category ``85756007`` "Tissue", type ``127954009`` "Skeletal muscle".
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import enum
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
import pydicom
from pydicom.sr.coding import Code
from pydicom.uid import generate_uid

from islet_imaging import __version__
from islet_imaging.errors import DicomSeriesError, GeometryError, IsletImagingError
from islet_imaging.io._dicom_files import read_object, write_object
from islet_imaging.volume import Volume

__all__ = [
    "AlgorithmType",
    "SegmentInfo",
    "SegmentKind",
    "build_seg",
    "read_seg",
    "seg_segments",
    "source_headers",
    "tracking_uid",
    "write_seg",
    "write_seg_labels",
]

SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
_POS_TOL_MM = 0.05
_DIR_TOL = 1e-3
_FOREARM = Code("14975008", "SCT", "Forearm")
_TISSUE = Code("85756007", "SCT", "Tissue")


class AlgorithmType(enum.StrEnum):
    """How a segment was produced (DICOM SegmentAlgorithmType)."""

    AUTOMATIC = "AUTOMATIC"
    SEMIAUTOMATIC = "SEMIAUTOMATIC"
    MANUAL = "MANUAL"


class SegmentKind(enum.StrEnum):
    """What a segment represents; selects its SNOMED CT property codes."""

    GRAFT = "graft"
    DEPOSIT = "deposit"
    REFERENCE_MUSCLE = "reference_muscle"

    @property
    def codes(self) -> tuple[Code, Code]:
        """(category, type) codes of this kind."""
        if self is SegmentKind.REFERENCE_MUSCLE:
            return _TISSUE, Code("127954009", "SCT", "Skeletal muscle")
        return _TISSUE, Code("246345001", "SCT", "Graft material")


@dataclasses.dataclass(frozen=True)
class SegmentInfo:
    """Description of one segment of a SEG (as written or as read back)."""

    number: int
    label: str
    tracking_id: str
    tracking_uid: str
    category: str
    property_type: str
    algorithm_type: str
    algorithm_name: str | None
    algorithm_version: str | None


def tracking_uid(patient_id: str, tracking_id: str) -> str:
    """A UID stable for the same patient and object identifier (e.g. ``"graft"``, ``"deposit 2"``).

    The same graft or deposit therefore gets the same Tracking Unique Identifier at every visit.

    Examples
    --------
    >>> tracking_uid("P1", "graft") == tracking_uid("P1", "graft")
    True
    >>> tracking_uid("P1", "graft") == tracking_uid("P2", "graft")
    False
    """
    return generate_uid(entropy_srcs=["islet-imaging tracking", str(patient_id), str(tracking_id)])


# --------------------------------------------------------------------------- source headers
def source_headers(image: Volume) -> tuple[pydicom.Dataset, ...]:
    """The source DICOM headers of ``image`` (``meta['headers']``, else re-read ``source_files``).

    Raises
    ------
    DicomSeriesError
        If the Volume carries neither (it was not loaded from DICOM).
    """
    headers = image.meta.get("headers")
    if headers:
        return tuple(headers)
    files = image.meta.get("source_files")
    if files:
        return tuple(pydicom.dcmread(f, stop_before_pixels=True) for f in files)
    raise DicomSeriesError(
        "the source image carries no DICOM headers",
        tag="meta['headers']",
        hint="load the image with islet_imaging.load_series so that it keeps its source headers",
    )


def _frame_geometry(ds: pydicom.Dataset, frame: int | None) -> tuple[np.ndarray, np.ndarray]:
    """(ImagePositionPatient, ImageOrientationPatient) of a single-frame or enhanced frame."""
    if frame is None:
        return np.asarray(ds.ImagePositionPatient, float), np.asarray(
            ds.ImageOrientationPatient, float
        )
    per_frame = ds.PerFrameFunctionalGroupsSequence[frame - 1]
    pos = per_frame.PlanePositionSequence[0].ImagePositionPatient
    orient_group = per_frame if "PlaneOrientationSequence" in per_frame else None
    if orient_group is None:
        orient_group = ds.SharedFunctionalGroupsSequence[0]
    orient = orient_group.PlaneOrientationSequence[0].ImageOrientationPatient
    return np.asarray(pos, float), np.asarray(orient, float)


def _slice_frames(image: Volume, headers: Sequence[pydicom.Dataset]) -> list[int | None]:
    """Frame number of the source object for each slice k (None for single-frame files)."""
    if len(headers) == 1 and int(getattr(headers[0], "NumberOfFrames", 1) or 1) > 1:
        frames = image.meta.get("frame_numbers")
        if not frames or len(frames) != image.shape[0]:
            raise DicomSeriesError(
                "multi-frame source without one frame number per slice",
                tag="meta['frame_numbers']",
                value=frames,
                hint="load the image with islet_imaging.load_series",
            )
        return [int(f) for f in frames]
    if len(headers) != image.shape[0]:
        raise DicomSeriesError(
            "the source headers do not match the slices of the image",
            tag="meta['headers']",
            value=f"{len(headers)} headers for {image.shape[0]} slices",
        )
    return [None] * len(headers)


def _check_source_grid(image: Volume, headers: Sequence[pydicom.Dataset]) -> list[int | None]:
    """Check that slice k of ``image`` is where header / frame k says; return the frame numbers."""
    frames = _slice_frames(image, headers)
    row_dir, col_dir = image.direction[:, 2], image.direction[:, 1]
    for k, frame in enumerate(frames):
        ds = headers[0] if frame is not None else headers[k]
        pos, orient = _frame_geometry(ds, frame)
        expected = image.index_to_world([k, 0, 0])
        if (
            np.max(np.abs(pos - expected)) > _POS_TOL_MM
            or np.max(np.abs(orient - np.r_[row_dir, col_dir])) > _DIR_TOL
        ):
            raise GeometryError(
                "the image grid does not match its source DICOM headers",
                path=getattr(ds, "filename", None) or None,
                tag="ImagePositionPatient/ImageOrientationPatient",
                value=f"slice {k}: header {np.round(pos, 3).tolist()}, "
                f"grid {np.round(expected, 3).tolist()}",
                hint="pass the image exactly as returned by load_series",
            )
    return frames


def _on_source_grid(mask: Volume, image: Volume) -> Volume:
    if mask.same_grid(image):
        return mask
    from islet_imaging.register import resample_like

    return resample_like(mask, image, interpolation="nearest")


# --------------------------------------------------------------------------- writing
def _label_array(mask: Volume) -> tuple[np.ndarray, list[int]]:
    """Label array (uint16, 0 = background) and the original label values present (sorted)."""
    array = np.asarray(mask.array)
    if array.dtype == bool:
        return array.astype(np.uint16), [1] if array.any() else []
    if not np.issubdtype(array.dtype, np.integer):
        raise IsletImagingError(
            "a SEG is written from a boolean mask or an integer label map",
            tag="mask.dtype",
            value=str(array.dtype),
            hint="threshold the image first, or pass the output of split_deposits",
        )
    if array.min() < 0:
        raise IsletImagingError("labels must be >= 0", tag="mask", value=int(array.min()))
    labels = [int(v) for v in np.unique(array) if v != 0]
    return array, labels


def build_seg(
    mask: Volume,
    image: Volume,
    *,
    kind: SegmentKind | str | None = None,
    labels: Mapping[int, str] | None = None,
    tracking_ids: Mapping[int, str] | None = None,
    algorithm_type: AlgorithmType | str = AlgorithmType.AUTOMATIC,
    algorithm_name: str = "islet-imaging",
    algorithm_version: str = __version__,
    series_number: int = 900,
    series_description: str = "Islet graft segmentation",
    content_creator: str | None = None,
    include_graft: bool = False,
    reference_mask: Volume | None = None,
) -> hd.seg.Segmentation:
    """Build a DICOM SEG (BINARY) of ``mask`` referencing the series of ``image``.

    Parameters
    ----------
    mask : Volume, shape (nz, ny, nx)
        Boolean graft mask (one segment) or integer label map (one segment per non-zero label,
        e.g. per deposit). If it is not on the grid of ``image`` it is resampled onto it
        (nearest neighbour, :func:`islet_imaging.register.resample_like`).
    image : Volume
        The source image as loaded from DICOM; its ``meta['headers']`` (or ``source_files``) are
        the referenced instances.
    kind
        :class:`SegmentKind` selecting the SNOMED CT codes; default GRAFT for a boolean mask and
        DEPOSIT for a label map.
    labels
        Segment label per label value (default "Graft" / "Deposit <n>").
    tracking_ids
        Tracking identifier per label value (default "graft" / "deposit <n>"); the Tracking UID is
        :func:`tracking_uid` of the patient ID and this identifier.
    algorithm_type, algorithm_name, algorithm_version
        How the segments were produced (AUTOMATIC, SEMIAUTOMATIC or MANUAL).
    series_number, series_description, content_creator
        Header values of the new SEG series.
    include_graft
        For a label map: also write the union of all labels as a segment "Graft" (tracking
        identifier "graft") after the deposits; segments then overlap, so read them back with
        ``read_seg(..., segments=...)``. Segment numbers are 1..n for the n label values in
        increasing order (so labels 1..n keep their numbers), then "Graft", then the reference.
    reference_mask : Volume, optional
        Reference-muscle ROI, written as a last segment "Reference muscle" (tracking identifier
        "reference", SNOMED CT skeletal muscle), so reference measurements can be exported to SR.

    Returns
    -------
    highdicom.seg.Segmentation
        The SEG dataset (not yet written; see :func:`write_seg`).
    """
    headers = source_headers(image)
    frames = _check_source_grid(image, headers)
    mask = _on_source_grid(mask, image)
    array, values = _label_array(mask)
    if not values:
        raise IsletImagingError(
            "the mask is empty: a DICOM SEG needs at least one segmented voxel",
            tag="mask",
            hint="check the segmentation before exporting it",
        )
    boolean = mask.array.dtype == bool
    kind = (
        SegmentKind(kind)
        if kind is not None
        else (SegmentKind.GRAFT if boolean else SegmentKind.DEPOSIT)
    )
    algorithm_type = AlgorithmType(algorithm_type)
    identification = None
    if algorithm_type is not AlgorithmType.MANUAL:
        identification = hd.AlgorithmIdentificationSequence(
            name=algorithm_name,
            family=Code("110001", "DCM", "Image Processing"),
            version=algorithm_version,
        )
    patient_id = str(getattr(headers[0], "PatientID", "") or "")
    default_name = {
        SegmentKind.GRAFT: "Graft",
        SegmentKind.DEPOSIT: "Deposit",
        SegmentKind.REFERENCE_MUSCLE: "Reference muscle",
    }[kind]
    # (label text, tracking id, kind, voxels) of every segment, in segment-number order
    entries = []
    for value in values:
        label = (labels or {}).get(value) or (
            default_name if boolean else f"{default_name} {value}"
        )
        default_track = "reference" if kind is SegmentKind.REFERENCE_MUSCLE else label.lower()
        track = (tracking_ids or {}).get(value) or default_track
        entries.append((label, track, kind, array == value))
    if include_graft and not boolean:
        entries.append(("Graft", "graft", SegmentKind.GRAFT, array > 0))
    if reference_mask is not None:
        ref = _on_source_grid(reference_mask, image)
        entries.append(
            ("Reference muscle", "reference", SegmentKind.REFERENCE_MUSCLE, ref.array > 0)
        )
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=label[:64],
            segmented_property_category=segment_kind.codes[0],
            segmented_property_type=segment_kind.codes[1],
            algorithm_type=algorithm_type.value,
            algorithm_identification=identification,
            tracking_uid=tracking_uid(patient_id, track),
            tracking_id=track[:64],
            anatomic_regions=[_FOREARM],
        )
        for number, (label, track, segment_kind, _) in enumerate(entries, start=1)
    ]
    if len(entries) == len(values):  # disjoint segments: a label map (1..n) is enough
        stacked = np.zeros(array.shape, np.uint16)
        for number, entry in enumerate(entries, start=1):
            stacked[entry[-1]] = number
    else:  # overlapping segments: frames x rows x columns x segments, one plane each
        stacked = np.stack([entry[-1] for entry in entries], axis=-1)
    if frames[0] is None:
        pixel_array = stacked
    else:
        pixel_array = np.zeros((int(headers[0].NumberOfFrames), *stacked.shape[1:]), stacked.dtype)
        pixel_array[np.asarray(frames) - 1] = stacked
    with _source_name_warnings_ignored():
        return _segmentation(
            headers, pixel_array, descriptions, series_number, series_description, content_creator
        )


@contextlib.contextmanager
def _source_name_warnings_ignored() -> Iterator[None]:
    """highdicom warns about single-component person names copied from the source images
    (e.g. PatientName "CS Test"): a property of the input, not something to fix here."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore",
            message=r".*unlikely to represent the intended person name",
            category=UserWarning,
        )
        yield


def _shared_plane_geometry(source: pydicom.Dataset) -> pydicom.Dataset:
    """Copy of an enhanced header whose shared functional groups hold the pixel measures and
    plane orientation, which some vendors (Philips) store per frame only; highdicom reads them
    from the shared groups. The loader has checked that they are the same for every frame."""
    shared = source.SharedFunctionalGroupsSequence[0]
    if "PixelMeasuresSequence" in shared and "PlaneOrientationSequence" in shared:
        return source
    header = copy.deepcopy(source)
    shared = header.SharedFunctionalGroupsSequence[0]
    first = header.PerFrameFunctionalGroupsSequence[0]
    for keyword in ("PixelMeasuresSequence", "PlaneOrientationSequence"):
        if keyword not in shared:
            setattr(shared, keyword, copy.deepcopy(first[keyword].value))
    return header


def _segmentation(
    headers: Sequence[pydicom.Dataset],
    pixel_array: np.ndarray,
    descriptions: list[hd.seg.SegmentDescription],
    series_number: int,
    series_description: str,
    content_creator: str | None,
) -> hd.seg.Segmentation:
    source = headers[0]
    if "PerFrameFunctionalGroupsSequence" in source:
        headers = [_shared_plane_geometry(source)]
    return hd.seg.Segmentation(
        source_images=list(headers),
        pixel_array=pixel_array,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=series_number,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="islet-imaging",
        manufacturer_model_name="islet-imaging",
        software_versions=__version__,
        device_serial_number="none",
        content_description=series_description[:64],
        content_label="GRAFT",
        content_creator_name=content_creator,
        omit_empty_frames=True,
    )


def write_seg(
    mask: Volume,
    image: Volume,
    path: str | os.PathLike,
    *,
    overwrite: bool = False,
    **options: Any,
) -> Path:
    """Write ``mask`` as a DICOM SEG file at ``path`` (atomically, never overwriting by default).

    ``options`` are those of :func:`build_seg`. Returns the written path.
    """
    seg = build_seg(mask, image, **options)
    return write_object(seg, path, overwrite=overwrite)


# --------------------------------------------------------------------------- reading
def _as_seg(seg: str | os.PathLike | pydicom.Dataset) -> hd.seg.Segmentation:
    if isinstance(seg, hd.seg.Segmentation):
        return seg
    ds = read_object(
        seg,
        sop_class=SEG_SOP_CLASS,
        label="DICOM SEG",
        description="a DICOM Segmentation object",
        hint=f"expected {SEG_SOP_CLASS} (Segmentation Storage)",
    )
    return hd.seg.Segmentation.from_dataset(ds, copy=False)


def seg_segments(seg: str | os.PathLike | pydicom.Dataset) -> list[SegmentInfo]:
    """The segments of a SEG: number, label, tracking identifier + UID, codes, algorithm."""
    seg = _as_seg(seg)
    infos = []
    for item in seg.SegmentSequence:
        algo = item.get("SegmentationAlgorithmIdentificationSequence")
        name = version = None
        if algo:
            name = str(algo[0].get("AlgorithmName", "")) or None
            version = str(algo[0].get("AlgorithmVersion", "")) or None
        infos.append(
            SegmentInfo(
                number=int(item.SegmentNumber),
                label=str(item.SegmentLabel),
                tracking_id=str(item.get("TrackingID", "")),
                tracking_uid=str(item.get("TrackingUID", "")),
                category=str(item.SegmentedPropertyCategoryCodeSequence[0].CodeMeaning),
                property_type=str(item.SegmentedPropertyTypeCodeSequence[0].CodeMeaning),
                algorithm_type=str(item.SegmentAlgorithmType),
                algorithm_name=name,
                algorithm_version=version,
            )
        )
    return infos


def _frame_segment_numbers(seg: hd.seg.Segmentation) -> list[int]:
    shared = seg.SharedFunctionalGroupsSequence[0]
    return [
        int(
            (fg if "SegmentIdentificationSequence" in fg else shared)
            .SegmentIdentificationSequence[0]
            .ReferencedSegmentNumber
        )
        for fg in seg.PerFrameFunctionalGroupsSequence
    ]


def read_seg(
    seg: str | os.PathLike | pydicom.Dataset,
    *,
    reference: Volume | None = None,
    segments: Sequence[int] | None = None,
) -> Volume:
    """Read a DICOM SEG as a label Volume (segment number per voxel, 0 = background).

    Parameters
    ----------
    seg
        Path of the SEG file, or its dataset.
    reference : Volume, optional
        The source image (as loaded). The mask is then returned on exactly its grid: every SEG
        frame is placed by its own plane position and orientation, which must fall on a slice of
        the reference (within 0.05 mm), else :class:`GeometryError`. Without it, the grid is the
        one highdicom derives from the SEG frames (segmented slices only).
    segments : sequence of int, optional
        Segment numbers to read (default all); needed when segments overlap (a "Graft" union
        written with ``include_graft=True`` next to its deposits).

    Returns
    -------
    Volume
        uint16 labels, ``meta['kind'] = 'mask'``, ``meta['segments']`` (list of
        :class:`SegmentInfo`), ``meta['series_uid']`` / ``sop_instance_uid`` of the SEG and
        ``meta['referenced_series_uid']``.

    Raises
    ------
    GeometryError
        If a frame does not fall on the reference grid, or segments overlap.
    """
    path = None if isinstance(seg, pydicom.Dataset) else seg
    seg = _as_seg(seg)
    infos = seg_segments(seg)
    wanted = {s.number for s in infos} if segments is None else {int(n) for n in segments}
    unknown = wanted - {s.number for s in infos}
    if unknown:
        raise IsletImagingError(
            "no such segment in the SEG",
            path=path,
            tag="segments",
            value=sorted(unknown),
            hint=f"available: {[s.number for s in infos]}",
        )
    referenced = seg.get("ReferencedSeriesSequence")
    meta = {
        "kind": "mask",
        "modality": "SEG",
        "segments": [s for s in infos if s.number in wanted],
        "series_uid": str(seg.SeriesInstanceUID),
        "sop_instance_uid": str(seg.SOPInstanceUID),
        "study_uid": str(seg.StudyInstanceUID),
        "patient_id": str(seg.get("PatientID", "")),
        "frame_of_reference_uid": str(seg.get("FrameOfReferenceUID", "")),
        "referenced_series_uid": str(referenced[0].SeriesInstanceUID) if referenced else None,
    }
    if reference is None:
        hd_vol = seg.get_volume(
            combine_segments=True, relabel=False, dtype=np.uint16, segment_numbers=sorted(wanted)
        )
        affine = np.asarray(hd_vol.affine, dtype=float)
        array = np.asarray(hd_vol.array)
        spacing = np.linalg.norm(affine[:3, :3], axis=0)
        normal = np.cross(affine[:3, 2], affine[:3, 1])
        if float(np.dot(normal, affine[:3, 0])) < 0:  # slices along the DICOM normal, as the loader
            affine[:3, 3] += affine[:3, 0] * (array.shape[0] - 1)
            affine[:3, 0] *= -1
            array = array[::-1]
        return Volume(
            np.ascontiguousarray(array),
            spacing=tuple(spacing),
            origin=tuple(affine[:3, 3]),
            direction=affine[:3, :3] / spacing,
            meta=meta,
        )
    ref_for = reference.meta.get("frame_of_reference_uid")
    if ref_for and meta["frame_of_reference_uid"] and ref_for != meta["frame_of_reference_uid"]:
        raise GeometryError(
            "the SEG and the reference image are in different frames of reference",
            path=path,
            tag="FrameOfReferenceUID",
            value=f"SEG {meta['frame_of_reference_uid']}, image {ref_for}",
            hint="pass the series the SEG was drawn on (or one registered to it) as reference",
        )
    out = np.zeros(reference.shape, np.uint16)
    numbers = _frame_segment_numbers(seg)
    shared = seg.SharedFunctionalGroupsSequence[0]
    frames = seg.pixel_array if int(seg.NumberOfFrames) > 1 else seg.pixel_array[None]
    row_dir, col_dir = reference.direction[:, 2], reference.direction[:, 1]
    for f, fg in enumerate(seg.PerFrameFunctionalGroupsSequence):
        if numbers[f] not in wanted:
            continue
        pos = np.asarray(fg.PlanePositionSequence[0].ImagePositionPatient, float)
        src = fg if "PlaneOrientationSequence" in fg else shared
        orient = np.asarray(src.PlaneOrientationSequence[0].ImageOrientationPatient, float)
        kji = reference.world_to_index(pos)
        k = round(float(kji[0]))
        off = np.abs(kji - [k, 0, 0]) * np.asarray(reference.spacing)
        if (
            np.max(np.abs(orient - np.r_[row_dir, col_dir])) > _DIR_TOL
            or off.max() > _POS_TOL_MM
            or not 0 <= k < reference.shape[0]
            or frames.shape[1:] != reference.shape[1:]
        ):
            raise GeometryError(
                "a SEG frame does not lie on a slice of the reference image",
                path=path,
                tag="PlanePositionSequence/PlaneOrientationSequence",
                value=f"frame {f + 1} at {np.round(pos, 3).tolist()} "
                f"(index {np.round(kji, 3).tolist()})",
                hint="pass the series the SEG was drawn on as reference, or read without it",
            )
        plane = frames[f].astype(bool)
        if np.any(out[k][plane]):
            raise GeometryError(
                "segments overlap: cannot be combined in one label map",
                path=path,
                tag="SegmentSequence",
                value=f"segment {numbers[f]} on slice {k}",
                hint="select non-overlapping segments with segments=[...]",
            )
        out[k][plane] = numbers[f]
    return Volume(
        out,
        spacing=reference.spacing,
        origin=reference.origin,
        direction=reference.direction,
        meta=meta,
    )


# --------------------------------------------------------------------------- napari writer
def write_seg_labels(
    labels: Volume,
    path: str | os.PathLike,
    *,
    image: Volume | None = None,
    algorithm_type: AlgorithmType | str = AlgorithmType.MANUAL,
    **options: Any,
) -> Path:
    """Save a labels Volume (e.g. a napari Labels layer) as a DICOM SEG of its source series.

    This is the function behind the napari plugin's DICOM SEG writer: the plugin turns the layer
    into a Volume on its original grid and calls it.

    Parameters
    ----------
    labels : Volume
        Boolean or integer labels (one segment per label value).
    path
        Output ``.dcm`` file (written atomically, never overwriting).
    image : Volume, optional
        The DICOM image the labels were drawn on. Default: loaded from
        ``labels.meta['source_files']`` (the files of the source series).
    algorithm_type
        MANUAL by default (a person drew or corrected the labels).
    **options
        Other options of :func:`build_seg`.
    """
    if image is None:
        files = labels.meta.get("source_files")
        if not files:
            raise IsletImagingError(
                "the labels do not say which DICOM series they were drawn on",
                tag="meta['source_files']",
                hint="draw the labels on an image opened from DICOM, or pass image=",
            )
        from islet_imaging.io.dicom import load_volumes

        volumes = load_volumes(list(files))
        image = next((v for v in volumes if v.same_grid(labels)), volumes[0])
    array = np.asarray(labels.array)
    if array.dtype != bool:
        array = array.astype(np.uint16)
    mask = labels.with_array(array).as_mask()
    return write_seg(mask, image, path, algorithm_type=algorithm_type, **options)
