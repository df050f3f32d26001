"""Report figures with matplotlib's Agg backend: trend plots and per-visit thumbnails.

Every function returns PNG bytes (no global pyplot state, no display needed), so callers can
embed them in HTML or write them atomically next to it.
"""

from __future__ import annotations

import io
from collections.abc import Mapping

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["cohort_plot", "trend_plot", "visit_thumbnail"]

_DPI = 100


def _png(figure: Figure) -> bytes:
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=_DPI, bbox_inches="tight")
    return buffer.getvalue()


def trend_plot(
    table: pd.DataFrame,
    metrics: Mapping[str, str],
    *,
    title: str = "",
    by_object: bool = False,
    xlabel: str = "days since implantation",
) -> bytes:
    """Plot metrics over time (one panel per metric) from a longitudinal table.

    Parameters
    ----------
    table
        Rows of :func:`~islet_imaging.study.longitudinal.longitudinal_table` for one patient
        (``days, object, metric, value, unit, flag_baseline``).
    metrics
        ``{metric name: panel title}``; metrics absent from ``table`` are left out.
    title
        Figure title.
    by_object
        One line per object (e.g. per deposit track) instead of the whole graft only.
    xlabel
        Label of the time axis (what ``days`` counts from).

    Returns
    -------
    bytes
        A PNG image. Points flagged as a real change from baseline are drawn filled red.
    """
    present = [m for m in metrics if (table["metric"] == m).any()]
    n = max(len(present), 1)
    figure = Figure(figsize=(3.6 * n, 2.8), layout="constrained")
    axes = figure.subplots(1, n, squeeze=False)[0]
    for axis, metric in zip(axes, present, strict=False):
        rows = table[table["metric"] == metric]
        if not by_object:
            rows = rows[rows["object"] == "graft"]
        for name, group in rows.groupby("object", sort=True):
            group = group.sort_values("days")
            line = axis.plot(group["days"], group["value"], marker="o", label=str(name))[0]
            flagged = group[group["flag_baseline"].isin(["increase", "decrease"])]
            axis.plot(
                flagged["days"], flagged["value"], "o", color="tab:red", zorder=3,
                markeredgecolor=line.get_color(),
            )  # fmt: skip
        unit = rows["unit"].dropna().iloc[0] if rows["unit"].notna().any() else ""
        axis.set_title(metrics[metric], fontsize=10)
        axis.set_xlabel(xlabel)
        axis.set_ylabel(str(unit))
        axis.grid(alpha=0.3)
        if by_object and rows["object"].nunique() > 1:
            axis.legend(fontsize=7)
    if not present:
        axes[0].text(0.5, 0.5, "no data", ha="center", va="center")
        axes[0].set_axis_off()
    if title:
        figure.suptitle(title, fontsize=11)
    return _png(figure)


def cohort_plot(
    table: pd.DataFrame, *, metric: str, title: str, xlabel: str = "days since implantation"
) -> bytes:
    """One line per patient of ``metric`` (whole graft) as % change from baseline over days."""
    figure = Figure(figsize=(6.0, 3.2), layout="constrained")
    axis = figure.subplots()
    rows = table[(table["metric"] == metric) & (table["object"] == "graft")]
    for patient, group in rows.groupby("patient", sort=True):
        group = group.sort_values("days")
        change = group["change_baseline_pct"].fillna(0.0)
        axis.plot(group["days"], change, marker="o", label=str(patient))
    axis.axhspan(-30, 30, color="0.9", zorder=0, label="±30 % (repeatability)")
    axis.axhline(0, color="0.5", lw=0.8)
    axis.set_xlabel(xlabel)
    axis.set_ylabel("change from baseline (%)")
    axis.set_title(title, fontsize=11)
    axis.grid(alpha=0.3)
    if rows["patient"].nunique() <= 12:
        axis.legend(fontsize=7, ncol=2)
    return _png(figure)


def visit_thumbnail(
    mr: np.ndarray,
    mask: np.ndarray,
    *,
    pixel_spacing: tuple[float, float] = (1.0, 1.0),
    pet: np.ndarray | None = None,
    title: str = "",
) -> bytes:
    """MR slice through the graft with the graft contour and an optional PET overlay.

    Parameters
    ----------
    mr
        2D MR slice, shape (rows, columns).
    mask
        2D labels or boolean mask on the same pixels (contour drawn at 0.5).
    pixel_spacing
        (row, column) spacing in mm, so the image keeps its physical aspect ratio.
    pet
        Optional 2D SUV slice resampled on the same pixels, drawn with the ``hot`` colour map
        where above 35 % of its maximum (hot spots, not the muscle background).
    title
        Caption above the image.

    Returns
    -------
    bytes
        A PNG image.
    """
    mr = np.asarray(mr, dtype=float)
    rows, cols = mr.shape
    extent = (0, cols * pixel_spacing[1], rows * pixel_spacing[0], 0)
    figure = Figure(
        figsize=(3.0, 3.0 * rows * pixel_spacing[0] / max(cols * pixel_spacing[1], 1e-6) + 0.3)
    )
    axis = figure.add_axes((0, 0, 1, 0.92))
    low, high = np.percentile(mr, [1, 99.5]) if mr.size else (0, 1)
    axis.imshow(mr, cmap="gray", vmin=low, vmax=high if high > low else low + 1, extent=extent)
    if pet is not None:
        pet = np.asarray(pet, dtype=float)
        peak = float(np.nanmax(pet)) if np.isfinite(pet).any() else 0.0
        if peak > 0:
            shown = np.ma.masked_less(pet, 0.35 * peak)
            axis.imshow(shown, cmap="hot", alpha=0.5, vmin=0, vmax=1.3 * peak, extent=extent)
    binary = np.asarray(mask) > 0
    if binary.any():
        x = (np.arange(cols) + 0.5) * pixel_spacing[1]
        y = (np.arange(rows) + 0.5) * pixel_spacing[0]
        axis.contour(x, y, binary.astype(float), levels=[0.5], colors=["#00e5ff"], linewidths=1.2)
    axis.set_axis_off()
    if title:
        figure.suptitle(title, fontsize=9, y=0.99)
    return _png(figure)
