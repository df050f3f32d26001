"""Lazy import of optional dependencies, with an error that names the feature needing them."""

from __future__ import annotations

import importlib
from types import ModuleType

from islet_imaging.errors import MissingDependencyError


def optional_import(module: str, *, feature: str, extra: str = "all") -> ModuleType:
    """Import ``module`` or raise :class:`MissingDependencyError` naming ``feature``.

    Parameters
    ----------
    module
        Dotted module name, e.g. ``"napari"``.
    feature
        What the caller wanted to do, e.g. ``"the napari viewer"``.
    extra
        The ``pip install islet-imaging[extra]`` that provides it.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"{feature} needs the optional package {module!r}",
            tag=module,
            hint=f"install it with: pip install 'islet-imaging[{extra}]'",
        ) from exc
