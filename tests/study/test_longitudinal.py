"""Longitudinal table: % change from baseline / previous visit, repeatability flags, deposits."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from islet_imaging.study.longitudinal import (
    ChangeLimit,
    limit_for,
    longitudinal_table,
    match_deposits,
)


def _visits(dates=("2024-01-10", "2024-04-10", "2024-07-10"), implantation_days=(9, 100, 191)):
    return pd.DataFrame(
        {
            "visit_id": [11, 12, 13][: len(dates)],
            "patient": "P001",
            "visit_date": list(dates),
            "days_since_implantation": list(implantation_days),
            "visit_index": list(range(len(dates))),
            "label": [f"V{i}" for i in range(len(dates))],
        }
    )


def _rows(metric: str, values, unit: str = "", object_="graft", labels=None) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "visit_id": [11, 12, 13][: len(values)],
            "object": object_,
            "label": labels if labels is not None else [None] * len(values),
            "metric": metric,
            "value": values,
            "unit": unit,
            "method": "m",
        }
    )


def test_percent_changes_and_flags_by_hand() -> None:
    table = longitudinal_table(
        pd.concat(
            [
                _rows("volume", [0.80, 0.60, 0.66], "mL"),
                _rows("suv_max", [4.0, 5.3, 5.9], "SUVbw"),
                _rows("suv_mean", [2.0, 2.7, 2.0], "SUVbw"),
            ]
        ),
        _visits(),
    )
    vol = table[table["metric"] == "volume"].reset_index()
    assert vol["days"].tolist() == [9, 100, 191]
    assert vol["days_since_baseline"].tolist() == [0, 91, 182]
    np.testing.assert_allclose(vol["change_baseline_pct"], [np.nan, -25.0, -17.5])
    np.testing.assert_allclose(vol["change_previous_pct"], [np.nan, -25.0, 10.0])
    # -25 % is within the default 30 % volume limit
    assert vol["flag_baseline"].tolist() == ["", "within noise", "within noise"]
    suv = table[table["metric"] == "suv_max"].reset_index()
    # +32.5 % and +1.3 SUV: beyond PERCIST (30 % and 0.8); then +11 % / +0.6 from V1
    assert suv["flag_baseline"].tolist() == ["", "increase", "increase"]
    assert suv["flag_previous"].tolist() == ["", "increase", "within noise"]
    mean = table[table["metric"] == "suv_mean"].reset_index()
    # +35 % but only +0.7 SUV: within noise under PERCIST's absolute limit
    assert mean["flag_baseline"].tolist() == ["", "within noise", "within noise"]
    assert mean["flag_previous"].tolist() == ["", "within noise", "within noise"]


def test_limits_are_configurable_and_days_fall_back_to_baseline() -> None:
    visits = _visits(implantation_days=(None, None, None))
    visits["days_since_implantation"] = pd.array([pd.NA] * 3, dtype="Int64")
    strict = (("volume*", ChangeLimit(0.10)),)
    table = longitudinal_table(_rows("volume", [0.80, 0.60, 0.65], "mL"), visits, limits=strict)
    assert table["days"].tolist() == [0, 91, 182]
    assert table["flag_baseline"].tolist() == ["", "decrease", "decrease"]
    assert table["flag_previous"].tolist() == ["", "decrease", "within noise"]
    assert table["limit"].iloc[1] == "≥10 %"
    assert limit_for("mr_cnr", strict) is None
    assert limit_for("deposit_count").absolute == 1.0


def test_deposits_keep_their_names_after_registration_to_baseline() -> None:
    # baseline: deposits 1 at (0,0,0) and 2 at (30,0,0); at V1 the labels are swapped and the
    # positions (already mapped to the baseline frame) moved by 3 mm; at V2 a new deposit
    # appears far away and deposit "2" has vanished.
    deposits = pd.DataFrame(
        {
            "patient": "P001",
            "visit_id": [11, 11, 12, 12, 13, 13],
            "label": [1, 2, 1, 2, 1, 2],
            "x_mm": [0.0, 30.0, 31.0, 2.0, 1.0, 80.0],
            "y_mm": [0.0, 0.0, 2.0, 1.0, -1.0, 0.0],
            "z_mm": [0.0, 0.0, 2.0, 2.0, 0.0, 0.0],
        }
    )
    measurements = pd.DataFrame(
        {
            "visit_id": [11, 11, 12, 12, 13, 13],
            "object": "deposit",
            "label": [1, 2, 1, 2, 1, 2],
            "metric": "volume",
            "value": [0.5, 0.2, 0.2, 0.4, 0.55, 0.1],
            "unit": "mL",
            "method": "m",
        }
    )
    table = longitudinal_table(measurements, _visits(), deposits=deposits)
    by = {(r.object, r.visit): r for r in table.itertuples()}
    assert sorted({o for o, _ in by}) == ["D1", "D2", "D3"]
    assert by[("D1", "V1")].value == 0.4
    assert by[("D2", "V1")].value == 0.2
    assert by[("D1", "V2")].value == 0.55
    assert by[("D1", "V1")].change_baseline_pct == pytest.approx(-20.0)
    assert by[("D3", "V2")].flag_baseline == ""
    assert ("D2", "V2") not in by


def test_match_deposits_respects_max_distance() -> None:
    deposits = pd.DataFrame(
        {"patient": "P", "visit_id": [1, 2], "visit_order": [0, 1], "label": [1, 1],
         "x_mm": [0.0, 12.0], "y_mm": [0.0, 0.0], "z_mm": [0.0, 0.0]}
    )  # fmt: skip
    assert match_deposits(deposits)["track"].tolist() == ["D1", "D2"]
    assert match_deposits(deposits, max_distance_mm=15)["track"].tolist() == ["D1", "D1"]


def test_empty_measurements_give_an_empty_table() -> None:
    table = longitudinal_table(_rows("volume", []), _visits())
    assert table.empty
    assert "change_baseline_pct" in table.columns
