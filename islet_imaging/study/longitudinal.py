"""Change over visits: a tidy longitudinal table with % change and repeatability flags.

Input is the tidy measurement table of a study (one row per visit × object × metric, see
:meth:`islet_imaging.study.workspace.Workspace.measurements`) and the visit list. Deposits of
each visit are matched to the patient's earlier deposits by the distance between their
centroids in the *baseline* frame (every visit is registered to its baseline by the pipeline),
so one deposit keeps one name (``D1``, ``D2``…) over time.

Each change is compared with a repeatability limit: a change is flagged as an ``increase`` or
``decrease`` only when it exceeds the relative limit *and* (if given) the absolute one, e.g.
PERCIST's ≥ 30 % and ≥ 0.8 SUL; smaller changes are ``within noise``. The defaults follow the
test-retest literature (SUV within-subject CV ≈ 10 %, changes under ≈ 25–30 % are noise).
"""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment

__all__ = [
    "DEFAULT_LIMITS",
    "ChangeLimit",
    "limit_for",
    "longitudinal_table",
    "match_deposits",
]


@dataclasses.dataclass(frozen=True)
class ChangeLimit:
    """Smallest change considered real.

    Parameters
    ----------
    relative
        Fraction of the reference value (0.30 = 30 %); the change must reach it.
    absolute
        Optional absolute change in the metric's unit that must also be reached (e.g. 0.8 SUV).
    """

    relative: float
    absolute: float | None = None

    def exceeded(self, reference: float, value: float) -> bool:
        """True if going from ``reference`` to ``value`` is a real change under this limit.

        >>> ChangeLimit(0.30, 0.8).exceeded(2.0, 2.7)   # +35 % but only +0.7 SUV
        False
        >>> ChangeLimit(0.30, 0.8).exceeded(4.0, 5.3)
        True
        """
        if not (np.isfinite(reference) and np.isfinite(value)):
            return False
        delta = abs(value - reference)
        if self.absolute is not None and delta < self.absolute - 1e-12:
            return False
        if reference == 0:
            return delta > 0
        return delta / abs(reference) >= self.relative - 1e-12


#: Default limits as ``(metric glob pattern, limit)``; the first matching pattern applies.
DEFAULT_LIMITS: tuple[tuple[str, ChangeLimit], ...] = (
    ("deposit_count", ChangeLimit(0.0, 1.0)),
    ("*ratio*", ChangeLimit(0.30)),
    ("suv*", ChangeLimit(0.30, 0.8)),
    ("volume*", ChangeLimit(0.30)),
    ("*", ChangeLimit(0.30)),
)


def limit_for(
    metric: str, limits: Sequence[tuple[str, ChangeLimit]] = DEFAULT_LIMITS
) -> ChangeLimit | None:
    """The limit of the first pattern in ``limits`` matching ``metric`` (case-insensitive).

    >>> limit_for("suv_peak")
    ChangeLimit(relative=0.3, absolute=0.8)
    >>> limit_for("suv_max_ratio")
    ChangeLimit(relative=0.3, absolute=None)
    """
    for pattern, limit in limits:
        if fnmatch.fnmatchcase(metric.lower(), pattern.lower()):
            return limit
    return None


def match_deposits(deposits: pd.DataFrame, *, max_distance_mm: float = 10.0) -> pd.DataFrame:
    """Give each deposit a track name (``D1``, ``D2``…) that follows it over visits.

    Parameters
    ----------
    deposits
        Columns ``patient, visit_id, label, x_mm, y_mm, z_mm`` (centroids in the baseline
        visit's LPS frame, mm) and ``visit_order`` (0 = baseline, increasing with date).
    max_distance_mm
        Deposits further than this from every known track start a new track.

    Returns
    -------
    pandas.DataFrame
        ``deposits`` with a ``track`` column. Matching is one-to-one per visit (Hungarian
        assignment on centroid distance to the track's latest position).
    """
    out = deposits.copy()
    out["track"] = pd.Series(dtype=object)
    for _, patient_rows in out.groupby("patient", sort=False):
        positions: dict[str, np.ndarray] = {}
        for _, visit_rows in patient_rows.groupby("visit_order", sort=True):
            visit_rows = visit_rows.sort_values("label")
            points = visit_rows[["x_mm", "y_mm", "z_mm"]].to_numpy(float)
            names = list(positions)
            assigned: dict[int, str] = {}
            if names and len(points):
                known = np.array([positions[n] for n in names])
                cost = np.linalg.norm(points[:, None, :] - known[None, :, :], axis=2)
                for i, j in zip(*linear_sum_assignment(cost), strict=True):
                    if cost[i, j] <= max_distance_mm:
                        assigned[i] = names[j]
            for i, index in enumerate(visit_rows.index):
                name = assigned.get(i)
                if name is None:
                    name = f"D{len(positions) + 1}"
                positions[name] = points[i]
                out.loc[index, "track"] = name
    return out


def longitudinal_table(
    measurements: pd.DataFrame,
    visits: pd.DataFrame,
    *,
    deposits: pd.DataFrame | None = None,
    limits: Sequence[tuple[str, ChangeLimit]] = DEFAULT_LIMITS,
    max_distance_mm: float = 10.0,
) -> pd.DataFrame:
    """Tidy table of every metric over visits with % change and repeatability flags.

    Parameters
    ----------
    measurements
        Tidy rows ``visit_id, object, label, metric, value, unit, method``; ``object`` is
        ``"graft"`` for the whole graft or ``"deposit"`` with its ``label``.
    visits
        ``visit_id, patient, visit_date, days_since_implantation, visit_index, label``
        (as :meth:`Workspace.visits` returns).
    deposits
        Deposit centroids in the baseline frame (``patient, visit_id, label, x_mm, y_mm,
        z_mm``) used to follow deposits over visits; without it deposits keep their labels.
    limits
        ``(metric glob, ChangeLimit)`` pairs, first match wins (default :data:`DEFAULT_LIMITS`).
    max_distance_mm
        Largest centroid distance for two deposits of different visits to be the same one.

    Returns
    -------
    pandas.DataFrame
        One row per patient × object × metric × visit: ``patient, visit_id, visit, visit_date,
        days`` (since implantation; since baseline when the implantation date is unknown),
        ``days_since_baseline, object, metric, value, unit, method, change_baseline_pct,
        change_previous_pct, flag_baseline, flag_previous`` (``"increase"``, ``"decrease"``,
        ``"within noise"`` or ``""`` for the baseline) and ``limit`` (the rule applied).

    Examples
    --------
    >>> visits = pd.DataFrame({"visit_id": [1, 2], "patient": ["P001"] * 2,
    ...     "visit_date": ["2024-01-10", "2024-04-10"], "days_since_implantation": [9, 100],
    ...     "visit_index": [0, 1], "label": ["V0", "V1"]})
    >>> m = pd.DataFrame({"visit_id": [1, 2], "object": "graft", "label": None,
    ...     "metric": "volume", "value": [1.0, 0.6], "unit": "mL", "method": "mr"})
    >>> t = longitudinal_table(m, visits)
    >>> t[["visit", "days", "value", "change_baseline_pct", "flag_baseline"]].values.tolist()
    [['V0', 9, 1.0, nan, ''], ['V1', 100, 0.6, -40.0, 'decrease']]
    """
    columns = [
        "patient", "visit_id", "visit", "visit_date", "days", "days_since_baseline", "object",
        "metric", "value", "unit", "method", "change_baseline_pct", "change_previous_pct",
        "flag_baseline", "flag_previous", "limit",
    ]  # fmt: skip
    if measurements.empty:
        return pd.DataFrame(columns=columns)
    info = visits.set_index("visit_id")
    data = measurements.copy()
    for column in ("label", "unit", "method"):
        if column not in data:
            data[column] = None
    data = data.drop(columns=[c for c in ("patient", "visit_date") if c in data.columns])
    data = data.join(
        info[["patient", "visit_date", "days_since_implantation", "visit_index", "label"]].rename(
            columns={"label": "visit"}
        ),
        on="visit_id",
    )
    dates = pd.to_datetime(data["visit_date"])
    first = dates.groupby(data["patient"]).transform("min")
    data["days_since_baseline"] = (dates - first).dt.days
    data["days"] = data["days_since_implantation"].where(
        data["days_since_implantation"].notna(), data["days_since_baseline"]
    )
    is_deposit = data["object"].eq("deposit")
    data["track"] = data["object"].astype(str)
    if is_deposit.any():
        if deposits is not None and len(deposits):
            positions = deposits.drop(columns=[c for c in ("patient",) if c in deposits.columns])
            positions = positions.join(info[["patient", "visit_index"]], on="visit_id")
            tracks = match_deposits(
                positions.rename(columns={"visit_index": "visit_order"}),
                max_distance_mm=max_distance_mm,
            ).set_index(["visit_id", "label"])["track"]
            keys = list(zip(data["visit_id"], data["label"], strict=True))
            data.loc[is_deposit, "track"] = [
                tracks.get((v, int(lab)), f"deposit {int(lab)}")
                for (v, lab), dep in zip(keys, is_deposit, strict=True)
                if dep
            ]
        else:
            data.loc[is_deposit, "track"] = [
                f"deposit {int(v)}" for v in data.loc[is_deposit, "label"]
            ]
    data["object"] = data["track"]
    data = data.sort_values(["patient", "object", "metric", "method", "visit_index"], kind="stable")
    keys = [data["patient"], data["object"], data["metric"], data["method"].fillna("")]
    grouped = data.groupby(keys, sort=False)["value"]
    baseline = grouped.transform("first")
    previous = grouped.shift(1)
    first_row = grouped.cumcount().eq(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        data["change_baseline_pct"] = np.where(
            first_row, np.nan, (data["value"] - baseline) / baseline.abs() * 100.0
        )
        data["change_previous_pct"] = np.where(
            first_row, np.nan, (data["value"] - previous) / previous.abs() * 100.0
        )
    # a deposit absent at baseline is compared with its first appearance
    rules = [limit_for(str(m), limits) for m in data["metric"]]
    data["limit"] = [_describe(r) for r in rules]
    data["flag_baseline"] = [
        "" if f else _flag(r, b, v)
        for f, r, b, v in zip(first_row, rules, baseline, data["value"], strict=True)
    ]
    data["flag_previous"] = [
        "" if f else _flag(r, p, v)
        for f, r, p, v in zip(first_row, rules, previous, data["value"], strict=True)
    ]
    data["days"] = data["days"].astype("Int64")
    data["days_since_baseline"] = data["days_since_baseline"].astype("Int64")
    return data[columns].reset_index(drop=True)


def _flag(limit: ChangeLimit | None, reference: float, value: float) -> str:
    if limit is None or not (np.isfinite(reference) and np.isfinite(value)):
        return ""
    if not limit.exceeded(reference, value):
        return "within noise"
    return "increase" if value > reference else "decrease"


def _describe(limit: ChangeLimit | None) -> str:
    if limit is None:
        return ""
    text = f"≥{limit.relative * 100:g} %"
    if limit.absolute is not None:
        text += f" and ≥{limit.absolute:g}"
    return text
