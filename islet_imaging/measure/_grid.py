"""Label masks on another image's grid: supersampled occupancy fractions (private)."""

from __future__ import annotations

import numpy as np

from islet_imaging.segment._common import nonzero_box
from islet_imaging.volume import Volume


def sample_labels(labels: Volume, reference: Volume, lo, hi, subsample: int) -> np.ndarray:
    """Labels (nearest voxel) at ``subsample``³ points per voxel of ``reference[lo:hi]``.

    The index-to-index map is affine, so it is evaluated by broadcasting along the three axes
    (no per-point matrix product). Returns an array of shape ``(hi - lo) * subsample``.
    """
    matrix = np.linalg.inv(labels.affine) @ reference.affine
    offsets = (np.arange(subsample) + 0.5) / subsample - 0.5
    axes = [
        (np.arange(lo[a], hi[a])[:, None] + offsets[None, :]).ravel().astype(np.float32)
        for a in range(3)
    ]
    shape = tuple(len(a) for a in axes)
    src = []
    for c in range(3):
        coord = np.full(shape, matrix[c, 3], np.float32)
        coord += matrix[c, 0] * axes[0][:, None, None]
        coord += matrix[c, 1] * axes[1][None, :, None]
        coord += matrix[c, 2] * axes[2][None, None, :]
        src.append(np.rint(coord).astype(np.int32))
    inside = np.ones(shape, bool)
    for c, n in enumerate(labels.shape):
        inside &= (src[c] >= 0) & (src[c] < n)
    values = np.zeros(shape, labels.array.dtype)
    values[inside] = labels.array[src[0][inside], src[1][inside], src[2][inside]]
    return values


def label_fractions(
    labels: Volume, reference: Volume, label_ids: list[int], *, subsample: int = 3
) -> dict[int, np.ndarray]:
    """Fraction of each ``reference`` voxel covered by each label of ``labels``.

    Each reference voxel is sampled at ``subsample``³ regularly spaced points, every point is
    looked up (nearest voxel) in ``labels``; the fraction is the share of points carrying the
    label. On the same grid this is exactly the indicator of the label. ``label_ids`` are
    non-zero labels.

    Returns
    -------
    dict
        label -> float32 array of ``reference.shape`` with values in [0, 1].
    """
    crop, fractions = label_fractions_box(labels, reference, label_ids, subsample=subsample)
    out = {lab: np.zeros(reference.shape, np.float32) for lab in label_ids}
    if crop is not None:
        for lab in label_ids:
            out[lab][crop] = fractions[lab]
    return out


def label_fractions_box(
    labels: Volume, reference: Volume, label_ids: list[int], *, subsample: int = 3
) -> tuple[tuple[slice, ...] | None, dict[int, np.ndarray]]:
    """:func:`label_fractions` on the box of ``reference`` outside which they are all 0.

    Returns ``(box, {label: float32 fractions on reference[box]})``; ``(None, {})`` when no
    voxel carries one of the labels.
    """
    array = labels.array
    box = nonzero_box(array)
    if box is None:
        return None, {}
    present = np.isin(array[box], label_ids)
    if not present.any():
        return None, {}
    if labels.same_grid(reference):
        return box, {lab: (array[box] == lab).astype(np.float32) for lab in label_ids}
    # bounding box of the labels in reference index space (with one voxel margin)
    idx = np.argwhere(present) + [s.start for s in box]
    lo_hi = np.array([idx.min(0) - 1, idx.max(0) + 1], float)
    corners = np.array(np.meshgrid(*lo_hi.T, indexing="ij")).reshape(3, -1).T
    ref_idx = reference.world_to_index(labels.index_to_world(corners))
    lo = np.maximum(np.floor(ref_idx.min(0)).astype(int) - 1, 0)
    hi = np.minimum(np.ceil(ref_idx.max(0)).astype(int) + 2, reference.shape)
    if np.any(hi <= lo):
        return None, {}
    offsets = (np.arange(subsample) + 0.5) / subsample - 0.5
    axes = [(np.arange(lo[a], hi[a])[:, None] + offsets[None, :]).ravel() for a in range(3)]
    kk, jj, ii = np.meshgrid(*axes, indexing="ij")
    points = reference.index_to_world(np.stack([kk, jj, ii], -1).reshape(-1, 3))
    src = np.rint(labels.world_to_index(points)).astype(int)
    inside = np.all((src >= 0) & (src < np.asarray(labels.shape)), axis=1)
    values = np.zeros(len(src), array.dtype)
    values[inside] = array[tuple(src[inside].T)]
    shape = tuple(int(h - low) for low, h in zip(lo, hi, strict=True))
    values = values.reshape(shape[0], subsample, shape[1], subsample, shape[2], subsample)
    crop = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    return crop, {lab: (values == lab).mean(axis=(1, 3, 5)).astype(np.float32) for lab in label_ids}
