"""Property tests: Volume -> DICOM (H2's writer) -> Volume keeps geometry and values."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
from _dicom_synth import rotation, write
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import islet_imaging as ii

angles = st.floats(-180, 180, allow_nan=False)
spacings = st.floats(0.3, 6.0, allow_nan=False).map(lambda v: round(v, 4))
coords = st.floats(-300, 300, allow_nan=False).map(lambda v: round(v, 3))


@st.composite
def volumes(draw):
    shape = (draw(st.integers(2, 5)), draw(st.integers(1, 7)), draw(st.integers(1, 7)))
    seed = draw(st.integers(0, 2**16))
    array = np.random.default_rng(seed).integers(-32768, 32767, shape).astype(np.float32)
    direction = rotation(draw(angles), draw(angles), draw(angles))
    if draw(st.booleans()):
        direction = direction * [-1.0, 1.0, 1.0]  # slices written against the DICOM normal
    return ii.Volume(
        array,
        spacing=(draw(spacings), draw(spacings), draw(spacings)),
        origin=(draw(coords), draw(coords), draw(coords)),
        direction=direction,
    )


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("roundtrip")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(vol=volumes())
def test_volume_dicom_volume_round_trip(workdir, vol):
    with tempfile.TemporaryDirectory(dir=workdir) as folder:
        write(vol, Path(folder))
        loaded = ii.load_series(folder)
    normal = np.cross(vol.direction[:, 2], vol.direction[:, 1])
    if np.dot(normal, vol.direction[:, 0]) < 0:  # the loader orders slices along +normal
        last = vol.index_to_world([vol.shape[0] - 1, 0, 0])
        expected = ii.Volume(
            vol.array[::-1],
            spacing=vol.spacing,
            origin=last,
            direction=vol.direction * [-1.0, 1.0, 1.0],
        )
    else:
        expected = vol
    assert loaded.same_grid(expected, atol=1e-3)
    np.testing.assert_array_equal(loaded.array, expected.array)
    assert loaded.meta["rescale"] == ((1.0, 0.0),) * vol.shape[0]
