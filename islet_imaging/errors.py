"""Exceptions raised by islet-imaging.

Every error names what is at fault (a file, a DICOM tag, a parameter), the value found and, when
known, what would fix it, so that a batch can log a one-line reason and move on.
"""

from __future__ import annotations

from os import PathLike

__all__ = [
    "DicomSeriesError",
    "GeometryError",
    "IsletImagingError",
    "MissingDependencyError",
    "MissingTagError",
    "PacsError",
    "RegistrationError",
    "SegmentationError",
    "WorkspaceError",
]


class IsletImagingError(Exception):
    """Base class of every error raised on purpose by islet-imaging.

    Parameters
    ----------
    message
        What went wrong, in one sentence.
    path
        The file or folder at fault, if any.
    tag
        The DICOM tag (keyword or ``(gggg,eeee)``) or the parameter name at fault, if any.
    value
        The offending value, if any.
    hint
        What the user can do about it.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | PathLike | None = None,
        tag: str | None = None,
        value: object = None,
        hint: str | None = None,
    ) -> None:
        self.message = message
        self.path = None if path is None else str(path)
        self.tag = tag
        self.value = value
        self.hint = hint
        super().__init__(self._format())

    def _format(self) -> str:
        parts = []
        if self.path is not None:
            parts.append(f"{self.path}:")
        if self.tag is not None:
            parts.append(f"[{self.tag}]")
        parts.append(self.message)
        if self.value is not None:
            parts.append(f"(found {self.value!r})")
        text = " ".join(parts)
        if self.hint:
            text += f" - {self.hint}"
        return text


class DicomSeriesError(IsletImagingError):
    """A file or series cannot be read as DICOM image data."""


class GeometryError(DicomSeriesError):
    """Slices do not form a regular 3D grid (gaps, duplicates, mixed orientations, tilt)."""


class MissingTagError(DicomSeriesError):
    """A tag needed for a measurement (e.g. SUV) is absent or contradictory."""


class RegistrationError(IsletImagingError):
    """A registration failed or did not converge to a plausible result."""


class SegmentationError(IsletImagingError):
    """A segmentation could not be produced from the given image and parameters."""


class WorkspaceError(IsletImagingError):
    """A study workspace is missing, inconsistent or would be overwritten."""


class PacsError(IsletImagingError):
    """A PACS (DICOMweb) request failed."""


class MissingDependencyError(IsletImagingError, ImportError):
    """An optional dependency needed by a feature is not installed."""
