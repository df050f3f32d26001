"""Measurements widget: graft volume, deposits, MR and PET statistics, updated while painting.

The numbers come from :func:`islet_imaging.measure.records.measure_graft` on the Labels layer
(as a mask Volume on its own grid), the chosen MR and PET layers (any grid) and a reference
muscle ROI (a Labels layer, or placed automatically once per MR image by
:func:`islet_imaging.segment.muscle.reference_muscle_roi`). Painting or erasing in the Labels
layer (its ``paint`` and ``data`` events) schedules a recomputation after a short pause, so a
brush stroke triggers one update, not one per mouse move.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from qtpy.QtWidgets import (
    QCheckBox,
    QFormLayout,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from islet_imaging.errors import IsletImagingError
from islet_imaging.volume import Volume

from .._layers import layer_to_volume
from ._common import Debouncer, LayerCombo, is_pet_layer, report

__all__ = ["AUTO_REFERENCE", "Measurements", "measure_layers", "summary"]

AUTO_REFERENCE = "(automatic)"
_SUMMARY_METRICS = {
    "volume": "volume",
    "deposit_count": "deposits",
    "suv_max": "SUVmax",
    "suv_mean": "SUVmean",
    "suv_peak": "SUVpeak",
    "suv_mean_ratio_to_reference": "SUVmean/muscle",
    "suv_max_ratio_to_reference": "SUVmax/muscle",
    "mr_ratio_to_reference": "MR/muscle",
}


def measure_layers(
    labels: Volume,
    *,
    mr: Volume | None = None,
    suv: Volume | None = None,
    reference: Volume | None = None,
    shape: bool = False,
    pvc: bool = False,
) -> pd.DataFrame:
    """Measure ``labels`` with the core library (tidy table, see ``measure_graft``).

    Mesh shape metrics and partial-volume correction are off by default to keep the update
    interactive; the pipeline reports them.
    """
    from islet_imaging.measure.records import measure_graft

    return measure_graft(
        labels,
        mr=mr,
        suv=suv,
        reference=reference,
        shape=shape,
        pvc=("rc", "gtm") if pvc else (),
    )


def summary(table: pd.DataFrame) -> str:
    """One line for the whole graft: volume, deposits, SUVmax/mean/peak and ratios."""
    graft = table[table["object"] == "graft"]
    parts = []
    for metric, label in _SUMMARY_METRICS.items():
        hit = graft[graft["metric"] == metric]
        if len(hit):
            row = hit.iloc[0]
            unit = "" if row["unit"] in ("1", None) else f" {row['unit']}"
            value = f"{int(row['value'])}" if metric == "deposit_count" else f"{row['value']:.3g}"
            parts.append(f"{label} {value}{unit}")
    return ", ".join(parts)


class Measurements(QWidget):
    """Dock widget: live measurements of a Labels layer."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.table_data: pd.DataFrame | None = None
        self._watched: Any = None
        self._auto_reference: dict[int, Volume] = {}
        self.labels_combo = LayerCombo(napari_viewer, "Labels")
        self.mr_combo = LayerCombo(
            napari_viewer, "Image", optional=True, accept=lambda layer: not is_pet_layer(layer)
        )
        self.pet_combo = LayerCombo(napari_viewer, "Image", optional=True, accept=is_pet_layer)
        self.reference_combo = LayerCombo(
            napari_viewer, "Labels", optional=True, extra=(AUTO_REFERENCE,), default=AUTO_REFERENCE
        )
        self.live_check = QCheckBox("update while painting")
        self.live_check.setChecked(True)
        self.shape_check = QCheckBox("shape (surface, diameter)")
        self.pvc_check = QCheckBox("partial-volume correction")
        self.measure_button = QPushButton("Measure")
        self.summary_label = QLabel("")
        self.summary_label.setWordWrap(True)
        self.table = QTableWidget(0, 4)
        self.table.setHorizontalHeaderLabels(["object", "metric", "value", "unit"])
        self.status = QLabel("")
        self.status.setWordWrap(True)

        form = QFormLayout()
        form.addRow("labels", self.labels_combo)
        form.addRow("MR", self.mr_combo)
        form.addRow("PET", self.pet_combo)
        form.addRow("reference muscle", self.reference_combo)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.live_check)
        layout.addWidget(self.shape_check)
        layout.addWidget(self.pvc_check)
        layout.addWidget(self.measure_button)
        layout.addWidget(self.summary_label)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.status)

        self._debounce = Debouncer(self.measure)
        self.labels_combo.currentIndexChanged.connect(self._watch)
        for combo in (self.mr_combo, self.pet_combo, self.reference_combo):
            combo.currentIndexChanged.connect(self._debounce.trigger)
        self.measure_button.clicked.connect(self.measure)
        self._watch()

    def _watch(self, *_: Any) -> None:
        """Follow the paint/data events of the chosen Labels layer."""
        if self._watched is not None:
            self._watched.events.paint.disconnect(self._edited)
            self._watched.events.data.disconnect(self._edited)
        self._watched = self.labels_combo.layer()
        if self._watched is not None:
            self._watched.events.paint.connect(self._edited)
            self._watched.events.data.connect(self._edited)
        self._debounce.trigger()

    def _edited(self, *_: Any) -> None:
        if self.live_check.isChecked():
            self._debounce.trigger()

    def _reference(self, mr: Volume | None, labels: Volume) -> Volume | None:
        choice = self.reference_combo.currentText()
        if choice == AUTO_REFERENCE:
            if mr is None:
                return None
            key = id(self.mr_combo.layer())
            if key not in self._auto_reference:
                from islet_imaging.segment.muscle import reference_muscle_roi

                graft = labels.with_array(labels.array > 0).as_mask()
                self._auto_reference[key] = reference_muscle_roi(mr, graft=graft)
            return self._auto_reference[key]
        layer = self.reference_combo.layer()
        return None if layer is None else layer_to_volume(layer)

    def measure(self) -> pd.DataFrame | None:
        """Recompute the measurements now; returns the tidy table (None if nothing to do)."""
        layer = self.labels_combo.layer()
        if layer is None:
            return None
        mr_layer, pet_layer = self.mr_combo.layer(), self.pet_combo.layer()
        try:
            labels = layer_to_volume(layer)
            mr = None if mr_layer is None else layer_to_volume(mr_layer)
            suv = None if pet_layer is None else layer_to_volume(pet_layer)
            table = measure_layers(
                labels,
                mr=mr,
                suv=suv,
                reference=self._reference(mr, labels),
                shape=self.shape_check.isChecked(),
                pvc=self.pvc_check.isChecked(),
            )
        except IsletImagingError as exc:
            report(self.status, f"measurement failed: {exc}", error=True)
            return None
        self.table_data = table
        self._fill(table)
        self.summary_label.setText(summary(table))
        report(self.status, "")
        return table

    def _fill(self, table: pd.DataFrame) -> None:
        self.table.setRowCount(len(table))
        for row, record in enumerate(table.itertuples()):
            value = record.value
            text = f"{value:.4g}" if np.isfinite(value) else "–"
            for col, item in enumerate((record.object, record.metric, text, record.unit or "")):
                self.table.setItem(row, col, QTableWidgetItem(str(item)))
        self.table.resizeColumnsToContents()

    def value(self, metric: str, obj: str = "graft") -> float:
        """A measured value from the last table (NaN when absent)."""
        if self.table_data is None:
            return float("nan")
        hit = self.table_data[
            (self.table_data["object"] == obj) & (self.table_data["metric"] == metric)
        ]
        return float(hit["value"].iloc[0]) if len(hit) else float("nan")
