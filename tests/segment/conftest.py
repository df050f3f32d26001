"""Synthetic forearm MR with analytic ellipsoid grafts (exact volumes) for the segmentation tests.

The forearm is a cylinder along the LPS S axis: 4 mm of subcutaneous fat, two bones (cortex
around fat-like marrow) and muscle. Grafts are ellipsoids inside muscle whose partial-volume
fraction in each voxel is computed by supersampling, so voxel values carry realistic edges.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from islet_imaging.volume import Volume

INTENSITY = {"air": 0.0, "fat": 300.0, "muscle": 100.0, "cortex": 15.0, "marrow": 280.0}


def tissue_values(points: np.ndarray) -> np.ndarray:
    """Noise-free MR value of each LPS point (…, 3) for the forearm background."""
    x, y = points[..., 0], points[..., 1]
    r = np.hypot(x, y)
    out = np.full(x.shape, INTENSITY["air"], np.float32)
    out[r <= 32] = INTENSITY["fat"]
    out[r <= 28] = INTENSITY["muscle"]
    for bx in (-11.0, 11.0):
        rb = np.hypot(x - bx, y - 8.0)
        out[rb <= 6.0] = INTENSITY["cortex"]
        out[rb <= 4.0] = INTENSITY["marrow"]
    return out


def ellipsoid_fraction(volume: Volume, center, radii, rotation, sub=(5, 3, 3)) -> np.ndarray:
    """Fraction of each voxel inside an ellipsoid (supersampled), array on ``volume``'s grid."""
    center = np.asarray(center, float)
    rmax = max(radii)
    # bounding box in index space
    corners = center + rmax * np.array(np.meshgrid(*[[-1.2, 1.2]] * 3)).reshape(3, -1).T
    idx = volume.world_to_index(corners)
    lo = np.maximum(np.floor(idx.min(0)).astype(int) - 1, 0)
    hi = np.minimum(np.ceil(idx.max(0)).astype(int) + 2, volume.shape)
    offsets = [(np.arange(n) + 0.5) / n - 0.5 for n in sub]
    grids = np.meshgrid(
        *[np.arange(lo[a], hi[a])[:, None] + offsets[a][None, :] for a in range(3)],
        indexing="ij",
    )
    # grids: each (nz, sz, ny, sy, nx, sx) flattened per axis pair
    kz, ky, kx = (
        g.reshape(-1)
        for g in np.meshgrid(
            *[(np.arange(lo[a], hi[a])[:, None] + offsets[a][None, :]).ravel() for a in range(3)],
            indexing="ij",
        )
    )
    del grids
    pts = volume.index_to_world(np.stack([kz, ky, kx], -1)) - center
    local = pts @ rotation  # columns of rotation = ellipsoid axes in LPS
    inside = ((local / np.asarray(radii)) ** 2).sum(-1) <= 1.0
    shape = tuple(int(hi[a] - lo[a]) for a in range(3))
    inside = inside.reshape(shape[0], sub[0], shape[1], sub[1], shape[2], sub[2])
    frac = np.zeros(volume.shape, np.float32)
    frac[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = inside.mean(axis=(1, 3, 5))
    return frac


def make_forearm(
    *,
    seed: int,
    grafts: list[dict],
    spacing=(3.0, 0.6, 0.6),
    shape=(16, 128, 128),
    oblique_deg=(0.0, 0.0, 0.0),
    noise_sd: float = 6.0,
    graft_value: float = 220.0,
) -> tuple[Volume, dict]:
    """MR Volume of the synthetic forearm and its truth (fractions, masks, analytic volumes)."""
    rng = np.random.default_rng(seed)
    direction = Rotation.from_euler("xyz", oblique_deg, degrees=True).as_matrix()
    extent = (np.asarray(shape) - 1) * np.asarray(spacing)
    origin = -(direction @ (extent / 2))
    vol = Volume(np.zeros(shape, np.float32), spacing, origin, direction, {"modality": "MR"})
    kji = np.stack(np.indices(shape), -1).reshape(-1, 3)
    base = tissue_values(vol.index_to_world(kji)).reshape(shape)
    image = base.copy()
    fractions, volumes_ml = [], []
    for g in grafts:
        rot = Rotation.from_euler("xyz", g.get("angles", (0, 0, 0)), degrees=True).as_matrix()
        frac = ellipsoid_fraction(vol, g["center"], g["radii"], rot)
        value = g.get("value", graft_value)
        image = image * (1 - frac) + value * frac
        fractions.append(frac)
        volumes_ml.append(4 / 3 * np.pi * np.prod(g["radii"]) / 1000)
    image = image + rng.normal(0, noise_sd, shape).astype(np.float32)
    mr = vol.with_array(image.astype(np.float32), series_uid=f"1.2.3.{seed}")
    union = np.clip(sum(fractions), 0, 1) if fractions else np.zeros(shape)
    truth = {
        "fractions": fractions,
        "masks": [f >= 0.5 for f in fractions],
        "union": union >= 0.5,
        "volumes_ml": volumes_ml,
        "total_ml": float(sum(volumes_ml)),
    }
    return mr, truth


@pytest.fixture
def forearm():
    """``forearm.make(seed=..., grafts=[...], oblique_deg=...)``, ``.intensity``, ``.tissue``."""
    return SimpleNamespace(make=make_forearm, intensity=INTENSITY, tissue=tissue_values)
