"""Graft segmentation widget: method and parameters, seeds from a Points layer, live preview.

The work is done by :mod:`islet_imaging.segment.graft`; this module only turns layers into
Volumes (and napari world points into LPS mm) and masks back into a Labels layer. The muscle
compartment and the reference-muscle ROI of an MR image are computed once per image and reused
for every preview. Live previews (a parameter changed, a seed added or moved) run in a worker
thread after a short pause, so the viewer stays responsive; the newest settings win.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from islet_imaging.errors import IsletImagingError
from islet_imaging.volume import Volume

from .._layers import METADATA_KEY, labels_like, layer_to_volume, to_display, world_to_lps
from ._common import Debouncer, LayerCombo, is_pet_layer, layer_info, report

__all__ = [
    "GRAFT_NAME",
    "PREVIEW_NAME",
    "GraftSegmentation",
    "SegmentationContext",
    "prepare",
    "seeds_lps",
    "segment",
    "show_mask",
]

PREVIEW_NAME = "graft preview"
GRAFT_NAME = "graft"

# keyword arguments of the core functions exposed in the widget: name -> (label, min, max, step)
_MR_PARAMS = {
    "k": ("k (reference SDs)", 0.5, 20.0, 0.5, 3.0),
    "boundary_fraction": ("boundary fraction", 0.05, 1.0, 0.05, 0.5),
    "min_volume_mm3": ("min deposit (mm³)", 0.0, 10000.0, 5.0, 10.0),
}
_PET_PARAMS = {
    "fraction": ("fraction of SUVmax", 0.05, 0.95, 0.01, 0.41),
    "threshold": ("threshold (SUV, absolute)", 0.0, 1000.0, 0.1, 0.0),
    "min_volume_mm3": ("min deposit (mm³)", 0.0, 10000.0, 5.0, 0.0),
}


@dataclasses.dataclass(frozen=True)
class SegmentationContext:
    """What a preview needs that does not change with the parameters.

    Attributes
    ----------
    image : Volume
        MR or PET (SUV) image on its own grid.
    pet : bool
        True for PET.
    region : Volume or None
        MR: muscle compartment in which the graft is searched.
    reference : Volume or None
        MR: reference-muscle ROI whose mean and SD set the threshold.
    """

    image: Volume
    pet: bool
    region: Volume | None = None
    reference: Volume | None = None


def prepare(image: Volume, *, pet: bool) -> SegmentationContext:
    """Compute once what every preview of ``image`` reuses (MR: muscle and reference ROI)."""
    if pet:
        return SegmentationContext(image=image, pet=True)
    from islet_imaging.segment.muscle import muscle_mask, reference_muscle_roi

    region = muscle_mask(image)
    reference = reference_muscle_roi(image)
    return SegmentationContext(image=image, pet=False, region=region, reference=reference)


def methods(*, pet: bool) -> list[str]:
    """Method names offered for an MR or PET image (the core library's enums)."""
    from islet_imaging.segment.graft import MRMethod, PETMethod

    return [m.value for m in (PETMethod if pet else MRMethod)]


def segment(
    context: SegmentationContext,
    *,
    method: str,
    seeds_mm: np.ndarray | None = None,
    split: bool = False,
    **params: Any,
) -> Volume:
    """Segment the graft with the core library; a mask (labels if ``split``) on the image grid.

    Parameters
    ----------
    context
        From :func:`prepare`.
    method
        One of :func:`methods`.
    seeds_mm : (n, 3) array, optional
        LPS seed points (mm).
    split
        Separate deposits (:func:`islet_imaging.segment.graft.split_deposits`): labels 1..n.
    **params
        Keyword arguments of ``segment_graft_mr`` / ``segment_graft_pet``.
    """
    from islet_imaging.segment.graft import segment_graft_mr, segment_graft_pet, split_deposits

    seeds = None if seeds_mm is None or len(seeds_mm) == 0 else np.asarray(seeds_mm, float)
    if context.pet:
        if params.get("threshold") in (None, 0.0) and method != "absolute":
            params.pop("threshold", None)
        mask = segment_graft_pet(context.image, method=method, seeds_mm=seeds, **params)
    else:
        mask = segment_graft_mr(
            context.image,
            method=method,
            seeds_mm=seeds,
            region=context.region,
            reference=context.reference,
            **params,
        )
    if split:
        min_volume = float(params.get("min_volume_mm3", 0.0))
        # on the MR signal too (the PET is blurred by its PSF: its deposits by shape only)
        image = None if context.pet else context.image
        polarity = params.get("polarity", "bright")
        mask = split_deposits(
            mask, image=image, polarity=polarity, min_volume_mm3=min_volume
        ).with_meta(method=mask.meta.get("method"), parameters=mask.meta.get("parameters"))
    return mask


def seeds_lps(points_layer: Any) -> np.ndarray:
    """Points of a napari Points layer as LPS mm ``(n, 3)`` (through the layer's transform)."""
    if points_layer is None or len(points_layer.data) == 0:
        return np.zeros((0, 3))
    world = np.array([points_layer.data_to_world(p) for p in np.asarray(points_layer.data)])
    return world_to_lps(world[:, -3:])


def _describe(mask: Volume) -> str:
    params = mask.meta.get("parameters") or {}
    shown = {
        k: v for k, v in params.items() if isinstance(v, int | float | str) and k != "seeds_mm"
    }
    text = ", ".join(
        f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in shown.items()
    )
    return f"{mask.meta.get('method', 'segmentation')} ({text})"


def show_mask(viewer: Any, mask: Volume, *, name: str, source: Any = None) -> Any:
    """Put ``mask`` into the Labels layer ``name`` (created on first use, else updated in place).

    The labels carry the source layer's workspace/visit information and the mask provenance
    (method, parameters) in their metadata, for :mod:`.save_annotation`.
    """
    if mask.meta.get("series_uid") is None and mask.meta.get("source_series_uid"):
        mask = mask.with_meta(series_uid=mask.meta["source_series_uid"])
    info = {k: v for k, v in layer_info(source).items() if k not in {"grid", "meta"}}
    provenance = {
        "method": _describe(mask),
        "source_layer": getattr(source, "name", None),
        **info,
    }
    if name in viewer.layers:
        layer = viewer.layers[name]
        shown = to_display(mask).array
        if layer.data.shape == shown.shape and layer_info(layer).get("grid") is not None:
            grid = layer_info(layer)["grid"]
            if grid.same_grid(mask):
                layer.metadata[METADATA_KEY].update(provenance)
                layer.data = np.asarray(shown, dtype=layer.data.dtype)
                return layer
        viewer.layers.remove(layer)
    data, kwargs, _ = labels_like(mask, mask.array.astype(np.int32), name=name)
    kwargs["metadata"][METADATA_KEY].update(provenance)
    kwargs["metadata"][METADATA_KEY]["meta"].update(
        {k: v for k, v in mask.meta.items() if k in {"method", "parameters", "source_series_uid"}}
    )
    return viewer.add_labels(data, **kwargs)


class GraftSegmentation(QWidget):
    """Dock widget: segment the graft on an MR or PET layer, preview live, accept."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self._context: SegmentationContext | None = None
        self._context_key: tuple[int, int] | None = None
        self._seed_layer: Any = None
        self._worker: Any = None
        self._pending = False
        self.last_mask: Volume | None = None

        self.image_combo = LayerCombo(napari_viewer, "Image")
        self.seeds_combo = LayerCombo(napari_viewer, "Points", optional=True)
        self.add_seeds_button = QPushButton("New seeds layer")
        self.method_combo = QComboBox()
        self.polarity_combo = QComboBox()
        self.polarity_combo.addItems(["bright", "dark"])
        self.split_check = QCheckBox("split into deposits")
        self.split_check.setChecked(True)
        self.live_check = QCheckBox("live preview")
        self.live_check.setChecked(True)
        self.preview_button = QPushButton("Preview")
        self.accept_button = QPushButton("Accept")
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.spins: dict[str, QDoubleSpinBox] = {}

        form = QFormLayout()
        form.addRow("image", self.image_combo)
        seeds_row = QHBoxLayout()
        seeds_row.addWidget(self.seeds_combo, 1)
        seeds_row.addWidget(self.add_seeds_button)
        form.addRow("seeds", seeds_row)
        form.addRow("method", self.method_combo)
        form.addRow("polarity", self.polarity_combo)
        for key, (label, low, high, step, default) in {**_MR_PARAMS, **_PET_PARAMS}.items():
            if key in self.spins:
                continue
            spin = QDoubleSpinBox()
            spin.setRange(low, high)
            spin.setSingleStep(step)
            spin.setDecimals(2)
            spin.setValue(default)
            spin.valueChanged.connect(self._changed)
            self.spins[key] = spin
            form.addRow(label, spin)
        self._form = form
        buttons = QHBoxLayout()
        buttons.addWidget(self.preview_button)
        buttons.addWidget(self.accept_button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.split_check)
        layout.addWidget(self.live_check)
        layout.addLayout(buttons)
        layout.addWidget(self.status)
        layout.addStretch(1)

        self._debounce = Debouncer(self.preview_in_background)
        self.image_combo.currentIndexChanged.connect(self._image_changed)
        self.seeds_combo.currentIndexChanged.connect(self._seeds_changed)
        self.method_combo.currentIndexChanged.connect(self._changed)
        self.polarity_combo.currentIndexChanged.connect(self._changed)
        self.split_check.toggled.connect(self._changed)
        self.add_seeds_button.clicked.connect(self.new_seeds_layer)
        self.preview_button.clicked.connect(self.preview_in_background)
        self.accept_button.clicked.connect(self.accept)
        self._image_changed()

    # ------------------------------------------------------------------ state
    @property
    def is_pet(self) -> bool:
        """True when the chosen image is PET."""
        return is_pet_layer(self.image_combo.layer())

    def _image_changed(self, *_: Any) -> None:
        pet = self.is_pet
        self.method_combo.blockSignals(True)
        self.method_combo.clear()
        self.method_combo.addItems(methods(pet=pet))
        self.method_combo.blockSignals(False)
        shown = _PET_PARAMS if pet else _MR_PARAMS
        for key, spin in self.spins.items():
            if key in shown:
                spin.setValue(shown[key][4])
            self._form.setRowVisible(spin, key in shown)
        self._form.setRowVisible(self.polarity_combo, not pet)

    def _seeds_changed(self, *_: Any) -> None:
        if self._seed_layer is not None:
            self._seed_layer.events.data.disconnect(self._changed)
        self._seed_layer = self.seeds_combo.layer()
        if self._seed_layer is not None:
            self._seed_layer.events.data.connect(self._changed)
        self._changed()

    def _changed(self, *_: Any) -> None:
        if self.live_check.isChecked() and PREVIEW_NAME in self.viewer.layers:
            self._debounce.trigger()

    def parameters(self) -> dict[str, Any]:
        """Keyword arguments for :func:`segment` from the widget's controls."""
        pet = self.is_pet
        shown = _PET_PARAMS if pet else _MR_PARAMS
        params: dict[str, Any] = {key: self.spins[key].value() for key in shown}
        if not pet:
            params["polarity"] = self.polarity_combo.currentText()
        return {"method": self.method_combo.currentText(), **params}

    def context(self) -> SegmentationContext:
        """The cached :class:`SegmentationContext` of the chosen image (computed on first use)."""
        layer = self.image_combo.layer()
        if layer is None:
            raise IsletImagingError("choose an image layer first", tag="image")
        key = (id(layer), id(layer.data))
        if self._context is None or self._context_key != key:
            self._context = prepare(layer_to_volume(layer), pet=is_pet_layer(layer))
            self._context_key = key
        return self._context

    def new_seeds_layer(self) -> Any:
        """Add an empty 3D Points layer for seeds (in world mm) and select it."""
        layer = self.viewer.add_points(
            np.zeros((0, 3)), ndim=3, name="seeds", size=4, face_color="cyan", units="mm"
        )
        layer.mode = "add"
        self.seeds_combo.set_layer(layer)
        return layer

    # ------------------------------------------------------------------ actions
    def _request(self) -> tuple[Any, dict[str, Any], np.ndarray, bool]:
        """Image layer, parameters, seeds (LPS mm) and split flag, read from the controls."""
        layer = self.image_combo.layer()
        if layer is None:
            raise IsletImagingError("choose an image layer first", tag="image")
        seeds = seeds_lps(self.seeds_combo.layer())
        return layer, self.parameters(), seeds, self.split_check.isChecked()

    def compute(self) -> Volume:
        """Run the segmentation with the current parameters and seeds (no layer change)."""
        _layer, params, seeds, split = self._request()
        return segment(self.context(), seeds_mm=seeds, split=split, **params)

    def _show(self, mask: Volume, source: Any) -> Any:
        self.last_mask = mask
        layer = show_mask(self.viewer, mask, name=PREVIEW_NAME, source=source)
        volume_ml = float(np.count_nonzero(mask.array)) * mask.voxel_volume_ml
        n_objects = int(mask.array.max()) if mask.array.dtype != bool else int(mask.array.any())
        report(self.status, f"preview: {volume_ml:.3f} mL, {n_objects} object(s)")
        return layer

    def preview(self) -> Any | None:
        """Compute now and show the mask in the ``graft preview`` Labels layer."""
        try:
            mask = self.compute()
        except IsletImagingError as exc:
            report(self.status, f"segmentation failed: {exc}", error=True)
            return None
        return self._show(mask, self.image_combo.layer())

    def preview_in_background(self) -> None:
        """Compute the preview in a worker thread, keeping the viewer responsive.

        The controls are read now; a request made while a computation runs is served when it
        ends, with the newest settings. The per-image context is computed once, in the worker.
        """
        from napari.qt.threading import create_worker

        if self._worker is not None:
            self._pending = True
            return
        try:
            layer, params, seeds, split = self._request()
        except IsletImagingError as exc:
            report(self.status, f"segmentation failed: {exc}", error=True)
            return
        key = (id(layer), id(layer.data))
        context = self._context if self._context_key == key else None
        volume = layer_to_volume(layer) if context is None else None
        pet = is_pet_layer(layer)

        def work() -> tuple[SegmentationContext | None, Volume | IsletImagingError]:
            try:  # expected failures (no seeds, nothing found) come back as values
                ctx = context if context is not None else prepare(volume, pet=pet)
                return ctx, segment(ctx, seeds_mm=seeds, split=split, **params)
            except IsletImagingError as exc:
                return None, exc

        def done(result: tuple[SegmentationContext | None, Volume | IsletImagingError]) -> None:
            ctx, mask = result
            if ctx is not None:
                self._context, self._context_key = ctx, key
            if isinstance(mask, IsletImagingError):
                report(self.status, f"segmentation failed: {mask}", error=True)
            else:
                self._show(mask, layer)

        self._worker = create_worker(work, _start_thread=False)
        self._worker.returned.connect(done)
        self._worker.finished.connect(self._worker_finished)
        report(self.status, "computing preview…")
        self._worker.start()

    def _worker_finished(self) -> None:
        self._worker = None
        if self._pending:
            self._pending = False
            self.preview_in_background()

    def accept(self) -> Any | None:
        """Make the current preview the ``graft`` Labels layer (to correct with the brush)."""
        missing = self.last_mask is None or PREVIEW_NAME not in self.viewer.layers
        if missing and self.preview() is None:
            return None
        mask = self.last_mask
        source = self.image_combo.layer()
        self.viewer.layers.remove(PREVIEW_NAME)
        layer = show_mask(self.viewer, mask, name=GRAFT_NAME, source=source)
        self.viewer.layers.selection.active = layer
        report(self.status, f"accepted into layer {GRAFT_NAME!r}: correct it with the brush")
        return layer
