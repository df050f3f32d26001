"""Timeline: a patient's visits registered to baseline, side by side, with the volume trend.

Every visit's reference MR and latest graft mask are resampled onto the baseline MR grid with
the visit → baseline registration of the pipeline run when there is one (its ``to_baseline``
transform), else with :func:`islet_imaging.register.register_to_baseline`. napari's grid mode
shows one visit per cell (MR + graft); the trend plot shows the graft volume (mL, measured on
each visit's own grid with :func:`islet_imaging.measure.shape.volume_ml`) against days since
implantation.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from islet_imaging.errors import IsletImagingError
from islet_imaging.volume import Volume

from .._layers import labels_like, volume_to_layer_data
from ._common import layer_info, open_workspace, report
from .study_browser import load_series, visit_origin, with_origin

__all__ = ["Timeline", "TimelineData", "plot_trend", "timeline_data"]


@dataclasses.dataclass(frozen=True)
class TimelineData:
    """What the timeline shows.

    Attributes
    ----------
    layers : list of layer data tuples
        Per visit, in date order: the MR then the graft labels, all on the baseline grid.
    trend : pandas.DataFrame
        One row per visit: ``visit, label, visit_date, days_since_implantation, volume_ml,
        mask_version, registration`` (``"pipeline"``, ``"computed"`` or ``"baseline"``).
    """

    layers: list[tuple]
    trend: pd.DataFrame


def _reference_mr(workspace: Any, visit_id: int) -> tuple[Volume, str] | None:
    from islet_imaging.study.pipeline import MR_ROLES, pick_series

    row = pick_series(workspace.series(visit_id), MR_ROLES)
    if row is None:
        return None
    return load_series(row["files"])[0], str(row["series_uid"])


def _to_baseline(workspace: Any, visit_id: int, mr: Volume, baseline_mr: Volume):
    from islet_imaging.register import Registration, register_to_baseline

    run = workspace.current_run(visit_id)
    saved = (run or {}).get("artifacts", {}).get("to_baseline", {}).get("transform")
    if saved and Path(saved).is_file():
        return Registration.load(saved), "pipeline"
    return register_to_baseline(mr, baseline_mr), "computed"


def timeline_data(workspace: Any, patient: str | int) -> TimelineData:
    """Load every visit of ``patient`` registered to its baseline, and the volume trend.

    Raises
    ------
    IsletImagingError
        If the baseline visit has no MR, or a registration fails.
    """
    from islet_imaging.measure.shape import volume_ml

    visits = workspace.visits(patient)
    layers: list[tuple] = []
    rows: list[dict[str, Any]] = []
    baseline_mr: Volume | None = None
    for visit in visits.itertuples():
        visit_id = int(visit.visit_id)
        loaded = _reference_mr(workspace, visit_id)
        if loaded is None:
            if baseline_mr is None:
                raise IsletImagingError(
                    "the baseline visit has no MR series", tag="visit", value=visit.label
                )
            continue
        mr, _series_uid = loaded
        latest = workspace.latest_mask(visit_id)
        mask = latest.read() if latest is not None else None
        if baseline_mr is None:
            baseline_mr, how = mr, "baseline"
            mr_on_base = mr
            mask_on_base = mask
        else:
            registration, how = _to_baseline(workspace, visit_id, mr, baseline_mr)
            mr_on_base = registration.apply(mr, baseline_mr)
            mask_on_base = None if mask is None else registration.apply(mask, baseline_mr)
        origin = visit_origin(workspace, visit_id)
        image = volume_to_layer_data(mr_on_base, name=f"{visit.label} MR")
        labels_array = None if mask_on_base is None else mask_on_base.array.astype(np.int32)
        labels = labels_like(mr_on_base, labels_array, name=f"{visit.label} graft")
        layers.extend([with_origin(image, origin), with_origin(labels, origin)])
        rows.append(
            {
                "visit": visit_id,
                "label": visit.label,
                "visit_date": visit.visit_date,
                "days_since_implantation": visit.days_since_implantation,
                "volume_ml": np.nan if mask is None else volume_ml(mask),
                "mask_version": None if latest is None else latest.version,
                "registration": how,
            }
        )
    return TimelineData(layers=layers, trend=pd.DataFrame(rows))


def plot_trend(axes: Any, trend: pd.DataFrame, *, title: str = "") -> None:
    """Draw graft volume (mL) against days since implantation (visit order when unknown)."""
    axes.clear()
    days = pd.to_numeric(trend["days_since_implantation"], errors="coerce")
    x = days if days.notna().all() and len(days) else pd.Series(range(len(trend)))
    axes.plot(x, trend["volume_ml"], marker="o", color="#d95f02")
    for xi, yi, label in zip(x, trend["volume_ml"], trend["label"], strict=True):
        axes.annotate(label, (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=8)
    axes.set_xlabel("days since implantation" if x is days else "visit")
    axes.set_ylabel("graft volume (mL)")
    axes.set_title(title, fontsize=9)
    axes.grid(alpha=0.3)


class Timeline(QWidget):
    """Dock widget: a patient's visits registered to baseline in grid mode + volume trend."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        self.viewer = napari_viewer
        self.workspace: Any = None
        self.data: TimelineData | None = None
        self.path_edit = QLineEdit()
        self.path_edit.setPlaceholderText("study workspace folder")
        self.browse_button = QPushButton("…")
        self.open_button = QPushButton("Open")
        self.patient_combo = QComboBox()
        self.show_button = QPushButton("Show timeline")
        self.figure = Figure(figsize=(4, 2.6), tight_layout=True)
        self.axes = self.figure.add_subplot(111)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.status = QLabel("")
        self.status.setWordWrap(True)

        row = QHBoxLayout()
        row.addWidget(self.path_edit, 1)
        row.addWidget(self.browse_button)
        row.addWidget(self.open_button)
        patient_row = QHBoxLayout()
        patient_row.addWidget(QLabel("patient"))
        patient_row.addWidget(self.patient_combo, 1)
        patient_row.addWidget(self.show_button)
        layout = QVBoxLayout(self)
        layout.addLayout(row)
        layout.addLayout(patient_row)
        layout.addWidget(self.canvas, 1)
        layout.addWidget(self.status)

        self.browse_button.clicked.connect(self._browse)
        self.open_button.clicked.connect(lambda: self.open(self.path_edit.text()))
        self.show_button.clicked.connect(
            lambda: self.show_patient(self.patient_combo.currentText())
        )
        for layer in napari_viewer.layers:  # prefill from layers loaded by the study browser
            if layer_info(layer).get("workspace"):
                self.path_edit.setText(str(layer_info(layer)["workspace"]))
                break

    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Study workspace")
        if folder:
            self.open(folder)

    def open(self, path: str | Path) -> bool:
        """Open a workspace and list its patients (pseudonyms)."""
        workspace = open_workspace(path, self.status, replacing=self.workspace)
        if workspace is None:
            return False
        self.workspace = workspace
        self.path_edit.setText(str(path))
        self.patient_combo.clear()
        self.patient_combo.addItems([str(p) for p in workspace.patients()["pseudo_id"]])
        return True

    def show_patient(self, patient: str) -> TimelineData | None:
        """Load the patient's visits on the baseline grid, enable grid mode, plot the trend."""
        from napari.layers import Layer

        if self.workspace is None or not patient:
            report(self.status, "open a workspace and choose a patient", error=True)
            return None
        try:
            data = timeline_data(self.workspace, patient)
        except IsletImagingError as exc:
            report(self.status, f"timeline failed: {exc}", error=True)
            return None
        names = {layer_data[1]["name"] for layer_data in data.layers}
        for name in names & {layer.name for layer in self.viewer.layers}:
            self.viewer.layers.remove(name)
        for layer_data in data.layers:
            self.viewer.add_layer(Layer.create(*layer_data))
        self.viewer.canvas.grid.stride = 2  # one cell per visit: MR + graft
        self.viewer.canvas.grid.enabled = True
        plot_trend(self.axes, data.trend, title=f"{patient}: graft volume")
        self.canvas.draw_idle()
        self.data = data
        report(self.status, f"{len(data.trend)} visit(s) of {patient} on the baseline grid")
        return data
