"""Small Qt helpers shared by the widgets: layer pickers, debounced calls, messages."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QComboBox, QLabel

from islet_imaging.errors import IsletImagingError

from .._layers import METADATA_KEY

logger = logging.getLogger("napari_islet_imaging")

NONE_CHOICE = "(none)"


class LayerCombo(QComboBox):
    """A combo box listing the viewer's layers of one type, kept up to date.

    Parameters
    ----------
    viewer
        The napari viewer.
    layer_type
        ``"Image"``, ``"Labels"`` or ``"Points"``.
    optional
        Offer ``(none)`` as the first choice.
    accept
        Extra filter on layers (e.g. only PET images).
    extra
        Fixed choices listed before the layers (after ``(none)``).
    default
        The choice shown until the user picks one (e.g. one of ``extra``).
    """

    def __init__(
        self,
        viewer: Any,
        layer_type: str,
        *,
        optional: bool = False,
        accept: Callable[[Any], bool] | None = None,
        extra: tuple[str, ...] = (),
        default: str | None = None,
    ) -> None:
        super().__init__()
        self._viewer = viewer
        self._type = layer_type
        self._optional = optional
        self._accept = accept or (lambda layer: True)
        self._extra = list(extra)
        self._default = default
        self._chosen = False  # until the user picks, follow the first matching layer
        self.activated.connect(self._user_choice)
        viewer.layers.events.inserted.connect(self.refresh)
        viewer.layers.events.removed.connect(self.refresh)
        viewer.layers.events.reordered.connect(self.refresh)
        self.refresh()

    def _candidates(self) -> list[Any]:
        return [
            layer
            for layer in self._viewer.layers
            if type(layer).__name__ == self._type and self._accept(layer)
        ]

    def _user_choice(self, *_: Any) -> None:
        self._chosen = True

    def refresh(self, *_: Any) -> None:
        """Rebuild the list, keeping the current choice when it still exists.

        Until the user picks an item, the combo shows ``default`` if given, else follows the
        viewer's active layer (new layers become active) or the first matching layer.
        """
        previous = self.currentText()
        candidates = self._candidates()
        layers = [layer.name for layer in candidates]
        names = ([NONE_CHOICE] if self._optional else []) + self._extra + layers
        target = previous
        if not self._chosen:
            active = self._viewer.layers.selection.active
            if self._default is not None:
                target = self._default
            elif active is not None and active in candidates:
                target = active.name
            elif previous not in layers and layers:
                target = layers[0]
        self.blockSignals(True)
        self.clear()
        self.addItems(names)
        if target in names:
            self.setCurrentText(target)
        self.blockSignals(False)
        if self.currentText() != previous:
            self.currentIndexChanged.emit(self.currentIndex())

    def layer(self) -> Any | None:
        """The chosen layer, or None."""
        name = self.currentText()
        for layer in self._candidates():
            if layer.name == name:
                return layer
        return None

    def set_layer(self, layer: Any) -> None:
        """Choose ``layer`` (refreshing first if needed)."""
        if self.findText(layer.name) < 0:
            self.refresh()
        self._chosen = True
        self.setCurrentText(layer.name)


class Debouncer:
    """Call ``func`` once, ``delay_ms`` after the last :meth:`trigger` (Qt event loop)."""

    def __init__(self, func: Callable[[], Any], delay_ms: int = 150) -> None:
        self._timer = QTimer()
        self._timer.setSingleShot(True)
        self._timer.setInterval(delay_ms)
        self._timer.timeout.connect(func)

    def trigger(self, *_: Any) -> None:
        """(Re)start the countdown."""
        self._timer.start()

    @property
    def pending(self) -> bool:
        """True while a call is scheduled."""
        return self._timer.isActive()


def layer_info(layer: Any) -> dict[str, Any]:
    """The islet-imaging metadata of a layer (grid, meta, workspace, visit...), or {}."""
    return dict(layer.metadata.get(METADATA_KEY, {})) if layer is not None else {}


def layer_modality(layer: Any) -> str:
    """DICOM modality of an image layer made by this plugin ('MR' when unknown)."""
    meta = layer_info(layer).get("meta", {})
    return str(meta.get("modality") or "MR").upper()


def is_pet_layer(layer: Any) -> bool:
    """True for PET image layers."""
    return layer_modality(layer) in {"PT", "PET"}


def report(status: QLabel, message: str, *, error: bool = False) -> None:
    """Show ``message`` in a status label, the log and (for errors) a napari notification."""
    status.setText(message)
    status.setStyleSheet("color: #e06c60;" if error else "")
    if error:
        logger.warning(message)
        from napari.utils.notifications import show_warning

        show_warning(message)
    else:
        logger.info(message)


def open_workspace(path: Any, status: QLabel, *, replacing: Any = None) -> Any:
    """Open the study workspace at ``path``, closing ``replacing`` (the one shown before).

    Returns the :class:`~islet_imaging.study.workspace.Workspace`, or None (``replacing`` left
    open) after reporting why it cannot be opened in ``status``.
    """
    from islet_imaging.study.workspace import Workspace

    try:
        workspace = Workspace.open(path)
    except IsletImagingError as exc:
        report(status, f"cannot open workspace: {exc}", error=True)
        return None
    if replacing is not None:
        replacing.close()
    return workspace
