"""Save annotation widget: a Labels layer becomes a new mask version in the study workspace.

A version is never overwritten: :meth:`islet_imaging.study.workspace.Workspace.save_mask`
adds version n+1 with the annotator's name, time, method and parent version, and the
longitudinal pipeline prefers the latest human version. The labels can also be exported to
NIfTI/NRRD through the plugin's writer contribution.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qtpy.QtWidgets import (
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from islet_imaging.errors import IsletImagingError

from .._layers import layer_to_volume
from ._common import LayerCombo, layer_info, report

__all__ = ["SaveAnnotation", "export_labels", "save_to_workspace"]

PLUGIN_NAME = "islet-imaging"


def save_to_workspace(
    labels_layer: Any,
    *,
    workspace: str | Path,
    visit: int | str,
    author: str,
    name: str = "graft",
    note: str | None = None,
) -> Any:
    """Store a Labels layer as a new version of mask ``name`` of ``visit``; never overwrites.

    The mask is written on the grid of the series it was drawn on. The method recorded is the
    layer's segmentation provenance followed by ``+ manual edit``, and the parent is the version
    the layer was loaded from, if any.

    Returns
    -------
    MaskVersion
        The stored version.
    """
    from islet_imaging.study.workspace import Workspace

    info = layer_info(labels_layer)
    mask = layer_to_volume(labels_layer)
    method = info.get("method") or "manual"
    if "manual" not in method:
        method = f"{method} + manual edit"
    ws = Workspace.open(workspace)
    try:
        return ws.save_mask(
            visit,
            mask,
            author=author,
            method=method,
            name=name,
            parent=info.get("mask_id"),
            note=note,
        )
    finally:
        ws.close()


def export_labels(labels_layer: Any, path: str | Path) -> list[str]:
    """Write a Labels layer to NIfTI/NRRD through the plugin's writer contribution."""
    return labels_layer.save(str(path), plugin=PLUGIN_NAME)


class SaveAnnotation(QWidget):
    """Dock widget: save the corrected labels as a new mask version, or export them."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.labels_combo = LayerCombo(napari_viewer, "Labels")
        self.author_edit = QLineEdit()
        self.author_edit.setPlaceholderText("your name (required)")
        self.workspace_edit = QLineEdit()
        self.workspace_edit.setPlaceholderText("study workspace folder")
        self.browse_button = QPushButton("…")
        self.visit_edit = QLineEdit()
        self.visit_edit.setPlaceholderText("e.g. P001/V1 (filled from the layer)")
        self.name_edit = QLineEdit("graft")
        self.note_edit = QLineEdit()
        self.save_button = QPushButton("Save new version")
        self.export_button = QPushButton("Export NIfTI…")
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.last_version: Any = None

        workspace_row = QHBoxLayout()
        workspace_row.addWidget(self.workspace_edit, 1)
        workspace_row.addWidget(self.browse_button)
        form = QFormLayout()
        form.addRow("labels", self.labels_combo)
        form.addRow("annotator", self.author_edit)
        form.addRow("workspace", workspace_row)
        form.addRow("visit", self.visit_edit)
        form.addRow("mask name", self.name_edit)
        form.addRow("note", self.note_edit)
        buttons = QHBoxLayout()
        buttons.addWidget(self.save_button)
        buttons.addWidget(self.export_button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.status)
        layout.addStretch(1)

        self.labels_combo.currentIndexChanged.connect(self._labels_changed)
        self.browse_button.clicked.connect(self._browse)
        self.save_button.clicked.connect(self.save)
        self.export_button.clicked.connect(self._export_dialog)
        self._labels_changed()

    def _labels_changed(self, *_: Any) -> None:
        info = layer_info(self.labels_combo.layer())
        if info.get("workspace"):
            self.workspace_edit.setText(str(info["workspace"]))
        if info.get("visit") is not None:
            self.visit_edit.setText(str(info.get("visit_label") or info["visit"]))

    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Study workspace")
        if folder:
            self.workspace_edit.setText(folder)

    def save(self) -> Any | None:
        """Save the chosen labels as a new version; returns the MaskVersion (None on error)."""
        layer = self.labels_combo.layer()
        author = self.author_edit.text().strip()
        workspace = self.workspace_edit.text().strip()
        visit_text = self.visit_edit.text().strip()
        if layer is None or not author or not workspace or not visit_text:
            report(
                self.status,
                "choose a labels layer and fill annotator, workspace and visit",
                error=True,
            )
            return None
        visit: int | str = int(visit_text) if visit_text.isdigit() else visit_text
        try:
            version = save_to_workspace(
                layer,
                workspace=workspace,
                visit=visit,
                author=author,
                name=self.name_edit.text().strip() or "graft",
                note=self.note_edit.text().strip() or None,
            )
        except IsletImagingError as exc:
            report(self.status, f"not saved: {exc}", error=True)
            return None
        layer.metadata.setdefault("islet_imaging", {})["mask_id"] = version.id
        self.last_version = version
        report(
            self.status,
            f"saved {version.name} version {version.version} of visit {visit_text} "
            f"by {version.author}",
        )
        return version

    def _export_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(
            self, "Export labels", "graft.nii.gz", "NIfTI (*.nii.gz *.nii);;NRRD (*.nrrd)"
        )
        if path:
            self.export(path)

    def export(self, path: str | Path) -> list[str]:
        """Export the chosen labels to ``path`` (NIfTI/NRRD); refuses to overwrite."""
        layer = self.labels_combo.layer()
        if layer is None:
            report(self.status, "choose a labels layer", error=True)
            return []
        try:
            written = export_labels(layer, path)
        except (IsletImagingError, ValueError, OSError) as exc:
            report(self.status, f"not exported: {exc}", error=True)
            return []
        report(self.status, f"exported {', '.join(written)}")
        return written
