"""Sample data: one synthetic forearm islet-graft visit (MR T2, PET in SUV, truth deposits).

Generated in memory by :func:`islet_imaging.phantom.make_visit` (deterministic, no download);
the PET is converted to SUVbw from its DICOM tags like a real scan.
"""

from __future__ import annotations

from typing import Any

from ._layers import labels_like, volume_to_layer_data

__all__ = ["phantom_layers", "phantom_visit"]


def phantom_layers(*, seed: int = 0, size: str = "sample", **options: Any) -> list[tuple]:
    """Layer data of a phantom visit: MR T2, PET (SUVbw) and the truth deposit labels.

    Parameters
    ----------
    seed
        Phantom seed (same seed, same patient and graft).
    size
        Grid preset of :func:`islet_imaging.phantom.make_visit` (``"small"`` is fastest).
    **options
        Other keyword arguments of ``make_visit`` (``orientation``, ``visit``...).
    """
    from islet_imaging.io.pet import to_suv
    from islet_imaging.phantom import make_visit

    visit = make_visit(seed=seed, size=size, **options)
    return [
        volume_to_layer_data(visit.mr_t2),
        volume_to_layer_data(to_suv(visit.pet)),
        labels_like(
            visit.mr_t2,
            visit.deposit_labels.array,
            name="truth deposits",
            opacity=0.5,
        ),
    ]


def phantom_visit() -> list[tuple]:
    """napari sample data: the baseline visit of phantom patient ISLET-001."""
    return phantom_layers()
