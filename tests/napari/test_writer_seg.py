"""DICOM SEG writer contribution: a Labels layer drawn on a DICOM series becomes a SEG of it."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from _plugin_data import AXIAL, write_visit
from napari.layers import Layer
from napari_islet_imaging._layers import labels_like
from napari_islet_imaging._writer import write_labels_seg

from islet_imaging.errors import IsletImagingError
from islet_imaging.io.dicom import load_series
from islet_imaging.io.seg import read_seg


def test_labels_layer_written_as_seg_round_trips_pixel_exact(tmp_path):
    visit = write_visit(tmp_path / "visit", mr_direction=AXIAL)
    mr = load_series(tmp_path / "visit" / "mr")
    labels = np.zeros(mr.shape, np.int32)
    labels[2:5, 10:20, 8:18] = 1  # deposit 1
    labels[6:8, 25:30, 20:30] = 2  # deposit 2
    layer = Layer.create(*labels_like(mr, labels, name="graft"))
    layer.data[3, 12, 12] = 0  # an edit in the viewer, in display axes (axial = array axes)

    out = tmp_path / "graft_seg.dcm"
    assert write_labels_seg(str(out), *layer.as_layer_data_tuple()[:2]) == [str(out)]

    seg = pydicom.dcmread(out)
    assert seg.Modality == "SEG"
    referenced = seg.ReferencedSeriesSequence[0].SeriesInstanceUID
    assert referenced == mr.meta["series_uid"] == visit.mr.meta.get("series_uid", referenced)
    assert len(seg.SegmentSequence) == 2
    assert {s.SegmentAlgorithmType for s in seg.SegmentSequence} == {"MANUAL"}

    expected = labels.copy()
    expected[3, 12, 12] = 0
    back = read_seg(out, reference=mr)
    assert back.same_grid(mr)
    np.testing.assert_array_equal(back.array, expected)

    with pytest.raises(IsletImagingError, match="overwrite"):
        write_labels_seg(str(out), *layer.as_layer_data_tuple()[:2])
