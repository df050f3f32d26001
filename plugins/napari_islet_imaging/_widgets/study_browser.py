"""Study browser: open a workspace, pick patient → visit → series, load them into the viewer.

Layers loaded from a workspace remember where they came from (workspace folder, visit id and
label, series UID, mask version) in ``layer.metadata["islet_imaging"]``, so the segmentation
and save widgets know which visit a correction belongs to. Patients are shown by pseudonym only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from islet_imaging.errors import IsletImagingError
from islet_imaging.volume import Volume

from .._layers import METADATA_KEY, labels_like, volume_to_layer_data
from .._reader import is_pt, maybe_suv
from ._common import open_workspace, report

__all__ = ["StudyBrowser", "load_series", "load_visit_layers", "visit_origin", "with_origin"]

_ROLE = Qt.ItemDataRole.UserRole


def visit_origin(workspace: Any, visit_id: int) -> dict[str, Any]:
    """Layer metadata naming the workspace and visit a layer belongs to."""
    info = workspace.visit(int(visit_id))
    return {
        "workspace": str(workspace.root),
        "visit": int(visit_id),
        "visit_label": f"{info['patient']}/{info['label']}",
        "patient": info["patient"],
    }


def load_series(files: tuple[str, ...] | list[str]) -> list[Volume]:
    """Load one catalogued series (PET converted to SUV when its tags allow)."""
    from islet_imaging.io.dicom import load_volumes

    return [maybe_suv(v) for v in load_volumes(list(files))]


def with_origin(layer_data: tuple, origin: dict[str, Any]) -> tuple:
    """A napari layer-data tuple with ``origin`` (:func:`visit_origin`) added to its metadata."""
    data, kwargs, layer_type = layer_data
    kwargs["metadata"][METADATA_KEY].update(origin)
    return data, kwargs, layer_type


def load_visit_layers(
    workspace: Any, visit_id: int, *, series_uids: list[str] | None = None, mask: bool = True
) -> list[tuple]:
    """Layer data for the series of a visit (all, or ``series_uids``) and its latest graft mask.

    The mask (latest version, human or automatic) becomes a Labels layer named
    ``graft v<version>`` with its ``mask_id`` in the metadata, so a correction saved from it
    records it as parent.
    """
    origin = visit_origin(workspace, visit_id)
    series = workspace.series(int(visit_id))
    if series_uids is not None:
        series = series[series["series_uid"].isin(series_uids)]
    layers: list[tuple] = []
    pets: list[tuple] = []
    for row in series.itertuples():
        for volume in load_series(row.files):
            data = with_origin(volume_to_layer_data(volume), origin)
            (pets if is_pt(volume) else layers).append(data)
    layers.extend(pets)
    latest = workspace.latest_mask(int(visit_id)) if mask else None
    if latest is not None:
        volume = latest.read().with_meta(series_uid=latest.reference_series_uid)
        name = f"{latest.name} v{latest.version}"
        data = with_origin(
            labels_like(volume, volume.array, name=name),
            {**origin, "mask_id": latest.id, "method": latest.method},
        )
        layers.append(data)
    return layers


class StudyBrowser(QWidget):
    """Dock widget: browse a study workspace and load series into the viewer."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.workspace: Any = None
        self.path_edit = QLineEdit()
        self.path_edit.setPlaceholderText("study workspace folder")
        self.browse_button = QPushButton("…")
        self.open_button = QPushButton("Open")
        self.tree = QTreeWidget()
        self.tree.setHeaderLabels(["item", "details"])
        self.tree.setSelectionMode(QTreeWidget.SelectionMode.ExtendedSelection)
        self.load_button = QPushButton("Load selected")
        self.status = QLabel("")
        self.status.setWordWrap(True)

        row = QHBoxLayout()
        row.addWidget(self.path_edit, 1)
        row.addWidget(self.browse_button)
        row.addWidget(self.open_button)
        layout = QVBoxLayout(self)
        layout.addLayout(row)
        layout.addWidget(self.tree, 1)
        layout.addWidget(self.load_button)
        layout.addWidget(self.status)

        self.browse_button.clicked.connect(self._browse)
        self.open_button.clicked.connect(lambda: self.open(self.path_edit.text()))
        self.path_edit.returnPressed.connect(lambda: self.open(self.path_edit.text()))
        self.load_button.clicked.connect(self.load_selected)
        self.tree.itemDoubleClicked.connect(lambda item, _col: self.load_items([item]))

    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Study workspace")
        if folder:
            self.path_edit.setText(folder)
            self.open(folder)

    def open(self, path: str | Path) -> bool:
        """Open the workspace at ``path`` and list its patients, visits and series."""
        workspace = open_workspace(path, self.status, replacing=self.workspace)
        if workspace is None:
            return False
        self.workspace = workspace
        self.path_edit.setText(str(path))
        self._fill_tree()
        report(self.status, f"{len(workspace.patients())} patient(s)")
        return True

    def _fill_tree(self) -> None:
        self.tree.clear()
        ws = self.workspace
        for patient in ws.patients().itertuples():
            p_item = QTreeWidgetItem([patient.pseudo_id, f"{patient.n_visits} visit(s)"])
            p_item.setData(0, _ROLE, ("patient", int(patient.id)))
            self.tree.addTopLevelItem(p_item)
            for visit in ws.visits(int(patient.id)).itertuples():
                days = visit.days_since_implantation
                detail = str(visit.visit_date or "")
                if days == days and days is not None:  # not NaN
                    detail += f"  day {int(days)}"
                v_item = QTreeWidgetItem([visit.label, detail])
                v_item.setData(0, _ROLE, ("visit", int(visit.visit_id)))
                p_item.addChild(v_item)
                for series in ws.series(int(visit.visit_id)).itertuples():
                    text = f"{series.modality} {series.description or ''}".strip()
                    s_item = QTreeWidgetItem([text, f"{series.role}, {series.n_instances} files"])
                    s_item.setData(0, _ROLE, ("series", int(visit.visit_id), series.series_uid))
                    v_item.addChild(s_item)
            p_item.setExpanded(True)

    def items(self) -> list[QTreeWidgetItem]:
        """Every item of the tree (patients, visits, series), depth first."""
        found: list[QTreeWidgetItem] = []

        def walk(item: QTreeWidgetItem) -> None:
            found.append(item)
            for i in range(item.childCount()):
                walk(item.child(i))

        for i in range(self.tree.topLevelItemCount()):
            walk(self.tree.topLevelItem(i))
        return found

    def load_selected(self) -> list[Any]:
        """Load the selected visits / series (a visit loads all its series and latest mask)."""
        return self.load_items(self.tree.selectedItems())

    def load_items(self, items: list[QTreeWidgetItem]) -> list[Any]:
        """Load the given tree items into the viewer; returns the new layers."""
        if self.workspace is None:
            report(self.status, "open a workspace first", error=True)
            return []
        wanted: dict[int, list[str] | None] = {}
        for item in items:
            kind, *ids = item.data(0, _ROLE)
            if kind == "visit":
                wanted[ids[0]] = None
            elif kind == "series" and wanted.get(ids[0], []) is not None:
                wanted.setdefault(ids[0], []).append(ids[1])
        from napari.layers import Layer

        layers = []
        for visit_id, uids in wanted.items():
            try:
                data = load_visit_layers(
                    self.workspace, visit_id, series_uids=uids, mask=uids is None
                )
            except IsletImagingError as exc:
                report(self.status, f"visit {visit_id} not loaded: {exc}", error=True)
                continue
            for layer_data in data:
                layers.append(self.viewer.add_layer(Layer.create(*layer_data)))
        if layers:
            report(self.status, f"loaded {len(layers)} layer(s)")
        return layers
