"""Hand-computed values: SUVpeak, recovery coefficient of a sphere, PVC, table provenance."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import integrate, special

from islet_imaging import __version__
from islet_imaging.measure import (
    first_order,
    gtm_correct,
    mask_sha256,
    measure_graft,
    rc_correct,
    recovery_coefficient,
    suv_peak,
)
from islet_imaging.measure.intensity import sphere_kernel
from islet_imaging.volume import Volume


def test_sphere_kernel_is_one_ml():
    for spacing in [(1.0, 1.0, 1.0), (4.0, 4.0, 4.0), (3.0, 0.8, 0.8)]:
        k = sphere_kernel(spacing)
        assert k.sum() == pytest.approx(1.0)
        # un-normalised weights add up to the sphere volume, 1000 mm³
        counts = k / k.max() * np.prod(spacing)
        assert counts.sum() == pytest.approx(1000.0, rel=0.03)


def test_suv_peak_hand_computed():
    shape = (31, 31, 31)
    hot = np.zeros(shape, np.float32)
    hot[15, 15, 15] = 1000.0
    mask = np.zeros(shape, bool)
    mask[12:19, 12:19, 12:19] = True
    # one hot 1 mm³ voxel fully inside the 1000 mm³ sphere: peak = 1000 × 1 / 1000
    peak, _ = suv_peak(Volume(hot), mask)
    assert peak == pytest.approx(1.0, rel=0.01)
    # linear ramp along array axis 2 (mm): a centred sphere averages to its centre's value;
    # the best centre is the mask voxel with the largest index (18 at 2 mm spacing -> 36 mm)
    spacing = (2.0, 2.0, 2.0)
    ramp = (np.indices(shape)[2] * spacing[2]).astype(np.float32)
    peak, centre = suv_peak(Volume(ramp, spacing), mask)
    assert peak == pytest.approx(36.0, abs=1e-6)
    assert centre[2] == pytest.approx(36.0)  # array axis 2 is LPS z with identity direction
    # uniform uptake: peak equals the uniform value
    peak, _ = suv_peak(Volume(np.full(shape, 3.5, np.float32), spacing), mask)
    assert peak == pytest.approx(3.5)


def analytic_sphere_rc(radius: float, fwhm: float) -> float:
    """Mean over a sphere of the sphere blurred by a 3D Gaussian (closed form in r)."""
    s = fwhm / (2 * math.sqrt(2 * math.log(2)))

    def blurred(r: float) -> float:
        a = (radius - r) / (math.sqrt(2) * s)
        b = (radius + r) / (math.sqrt(2) * s)
        tail = s / (r * math.sqrt(2 * math.pi)) * (math.exp(-(a**2)) - math.exp(-(b**2)))
        return 0.5 * (special.erf(a) + special.erf(b)) - tail

    integral, _ = integrate.quad(lambda r: blurred(r) * 4 * math.pi * r * r, 1e-9, radius)
    return integral / (4 / 3 * math.pi * radius**3)


@pytest.mark.parametrize(("radius", "fwhm"), [(6.2, 6.0), (10.0, 5.0), (4.0, 8.0)])
def test_recovery_coefficient_of_a_sphere(radius, fwhm):
    spacing = (0.5, 0.5, 0.5)
    n = int(2 * (radius + 3) / 0.5) + 1
    c = (n - 1) / 2
    kji = (np.indices((n, n, n)) - c) * 0.5
    sphere = Volume((np.sqrt((kji**2).sum(0)) <= radius).astype(np.float32), spacing)
    expected = analytic_sphere_rc(radius, fwhm)
    assert recovery_coefficient(sphere, fwhm_mm=fwhm) == pytest.approx(expected, abs=0.01)


def test_first_order_definitions():
    rng = np.random.default_rng(1)
    image = Volume(rng.normal(5, 2, (6, 7, 8)).astype(np.float32))
    mask = image.array > 4
    v = image.array[mask].astype(np.float64)
    stats = first_order(image, mask)
    assert stats["mean"] == pytest.approx(v.sum() / v.size)
    assert stats["variance"] == pytest.approx(((v - v.mean()) ** 2).mean())
    assert stats["sd"] == pytest.approx(math.sqrt(stats["variance"]))
    assert (stats["minimum"], stats["maximum"]) == (v.min(), v.max())


def test_pvc_recovers_activity_of_spheres(synthetic_pet):
    r1 = (3 / (4 * math.pi) * 1000) ** (1 / 3)  # 1 mL
    r2 = (3 / (4 * math.pi) * 2500) ** (1 / 3)  # 2.5 mL
    spheres = [
        {"center": (0.0, -12.0, 6.0), "radius": r1, "activity": 8.0},
        {"center": (6.0, 16.0, -8.0), "radius": r2, "activity": 5.0},
    ]
    suv, labels, truth = synthetic_pet(
        seed=3, spheres=spheres, background=1.0, fwhm_mm=6.0, oblique_deg=(20, 30, 10)
    )
    gtm = gtm_correct(suv, labels, fwhm_mm=6.0)
    rc = rc_correct(suv, labels, fwhm_mm=6.0, background=1.0)
    for k, true in enumerate(truth["activity"], start=1):
        assert gtm[k]["measured"] < 0.8 * true  # partial volume really loses activity
        assert gtm[k]["corrected"] == pytest.approx(true, rel=0.10)
        assert rc[k]["corrected"] == pytest.approx(true, rel=0.10)
    assert gtm["background"]["corrected"] == pytest.approx(1.0, rel=0.05)


def test_measure_graft_table(synthetic_pet):
    r = (3 / (4 * math.pi) * 1500) ** (1 / 3)
    spheres = [{"center": (0.0, 0.0, 0.0), "radius": r, "activity": 6.0}]
    suv, labels, _ = synthetic_pet(seed=4, spheres=spheres, background=1.0)
    weight_kg = 70.0
    suv = suv.with_meta(suv={"tags": {"weight_kg": weight_kg}})
    activity = suv.with_array(suv.array * 1000.0, units="BQML")
    table = measure_graft(labels, suv=suv, activity=activity, fwhm_mm=6.0, injected_dose_bq=1e8)
    assert list(table.columns[:5]) == ["object", "metric", "value", "unit", "method"]
    row = table.set_index(["object", "metric", "method"])["value"]
    volume = row["graft", "volume", "voxel_count"]
    assert volume == pytest.approx(np.count_nonzero(labels.array) * labels.voxel_volume_ml)
    assert volume == pytest.approx(1.5, rel=0.02)
    assert row["graft", "deposit_count", "connected_components"] == 1
    mean = row["graft", "suv_mean", "mean_voxel"]
    assert row["graft", "total_uptake", "suv_mean_x_volume"] == pytest.approx(mean * volume)
    pid = row["graft", "percent_injected_dose", "suvbw_x_volume_over_weight"]
    assert pid == pytest.approx(100 * mean * volume / (weight_kg * 1000))
    assert row["graft", "suv_mean_pvc", "pvc_gtm"] == pytest.approx(6.0, rel=0.1)
    assert row["graft", "suv_max", "max_voxel"] >= row["graft", "suv_peak", "percist_1ml_sphere"]
    assert set(table["software_version"]) == {__version__}
    assert set(table["mask_sha256"]) == {mask_sha256(labels)}
    pvc_rows = table[table["method"] == "pvc_gtm"]
    assert {json.loads(p)["fwhm_mm"] for p in pvc_rows["parameters"]} == {6.0}
    assert set(table.loc[table["metric"] == "suv_max", "image_series_uid"]) == {"9.9.4"}


def test_mask_hash_depends_on_labels_and_geometry():
    a = Volume(np.eye(4, dtype=bool)[None].repeat(2, 0), spacing=(2.0, 1.0, 1.0))
    assert mask_sha256(a) == mask_sha256(a.with_array(a.array.astype(np.int16)))
    assert mask_sha256(a) != mask_sha256(a.with_array(~a.array))
    moved = Volume(a.array, a.spacing, origin=(0.0, 0.0, 1.0))
    assert mask_sha256(a) != mask_sha256(moved)
