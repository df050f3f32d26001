"""Atomic file writes: write to a temporary name in the same folder, then rename into place."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from islet_imaging.errors import IsletImagingError


def _suffixes(path: Path) -> str:
    return "".join(path.suffixes[-2:]) if path.name.endswith(".nii.gz") else path.suffix


def refuse_existing(
    path: str | os.PathLike, *, hint: str = "choose another name or pass overwrite=True"
) -> None:
    """Raise :class:`IsletImagingError` if ``path`` exists (results are never silently replaced).

    ``hint`` names the way to allow it (e.g. ``"... or pass --overwrite"`` in a command).
    """
    if Path(path).exists():
        raise IsletImagingError("refusing to overwrite an existing file", path=path, hint=hint)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` when the block succeeds.

    The temporary file keeps the suffix of ``path`` (``.nii.gz``, ``.csv``, ...) so that writers
    choosing a format by extension behave the same. If the block raises, the temporary file is
    removed and ``path`` is untouched.

    Parameters
    ----------
    path
        Final destination.
    overwrite
        If False (default) and ``path`` exists, raise instead of replacing it.

    Raises
    ------
    IsletImagingError
        If ``path`` exists and ``overwrite`` is False.
    """
    final = Path(path)
    if not overwrite:
        refuse_existing(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{final.name}.", suffix=f".tmp{_suffixes(final)}", dir=final.parent
    )
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if overwrite:
            os.replace(tmp, final)
        else:
            _rename_no_clobber(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


def _rename_no_clobber(tmp: Path, final: Path) -> None:
    """Move ``tmp`` to ``final`` unless ``final`` exists, checked atomically.

    A hard link fails if ``final`` exists, so a file another writer created since the check at
    the start of :func:`atomic_path` is never replaced. File systems without hard links fall
    back to check-then-rename.
    """
    try:
        os.link(tmp, final)
    except FileExistsError:
        raise IsletImagingError(
            "refusing to overwrite a file written meanwhile by another process",
            path=final,
            hint="choose another name or pass overwrite=True",
        ) from None
    except OSError:  # no hard links here (e.g. FAT, some network shares)
        refuse_existing(final)
        os.replace(tmp, final)


def write_bytes_atomic(path: str | os.PathLike, data: bytes, *, overwrite: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically; see :func:`atomic_path`."""
    with atomic_path(path, overwrite=overwrite) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text_atomic(path: str | os.PathLike, text: str, *, overwrite: bool = False) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically; see :func:`atomic_path`."""
    return write_bytes_atomic(path, text.encode("utf-8"), overwrite=overwrite)
