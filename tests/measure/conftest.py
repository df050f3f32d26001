"""Synthetic PET of spheres blurred by a Gaussian PSF, with exact truth, for measure tests.

Activity is rendered on a grid ``oversample`` times finer than the PET grid, blurred by the
PSF and averaged back over each PET voxel (what a scanner measures). Spheres are also
rasterised on an MR-like grid (voxel centres inside) to give the label map to measure with.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi
from scipy.spatial.transform import Rotation

from islet_imaging.measure.pvc import FWHM_TO_SIGMA
from islet_imaging.volume import Volume


def sphere_labels(grid: Volume, spheres: list[dict]) -> np.ndarray:
    """int32 labels 1..n of spheres (voxel centre inside) on ``grid``."""
    kji = np.stack(np.indices(grid.shape), -1).reshape(-1, 3)
    pts = grid.index_to_world(kji)
    out = np.zeros(len(pts), np.int32)
    for n, s in enumerate(spheres, start=1):
        out[np.linalg.norm(pts - np.asarray(s["center"]), axis=1) <= s["radius"]] = n
    return out.reshape(grid.shape)


def make_pet(
    *,
    seed: int,
    spheres: list[dict],
    background: float = 1.0,
    fwhm_mm: float = 6.0,
    pet_spacing=(4.0, 4.0, 4.0),
    pet_shape=(20, 24, 24),
    mr_spacing=(2.0, 0.5, 0.5),
    mr_shape=(36, 150, 150),
    oblique_deg=(0.0, 0.0, 0.0),
    noise_sd: float = 0.0,
    oversample: int = 4,
) -> tuple[Volume, Volume, dict]:
    """(PET SUV Volume, MR-grid label Volume, truth) for spheres of given activity."""
    rng = np.random.default_rng(seed)
    direction = Rotation.from_euler("xyz", oblique_deg, degrees=True).as_matrix()

    def grid(shape, spacing, d):
        extent = (np.asarray(shape) - 1) * np.asarray(spacing)
        return Volume(np.zeros(shape, np.float32), spacing, -(d @ (extent / 2)), d)

    pet_grid = grid(pet_shape, pet_spacing, np.eye(3))
    m = oversample
    fine_spacing = tuple(s / m for s in pet_spacing)
    fine_origin = np.asarray(pet_grid.origin) + np.asarray(pet_spacing) * (0.5 / m - 0.5)
    fine = Volume(np.zeros(tuple(n * m for n in pet_shape), np.float32), fine_spacing, fine_origin)
    act = np.where(sphere_labels(fine, spheres) > 0, 0.0, background)
    lab = sphere_labels(fine, spheres)
    for n, s in enumerate(spheres, start=1):
        act[lab == n] = s["activity"]
    sigma = [fwhm_mm * FWHM_TO_SIGMA / s for s in fine_spacing]
    blurred = ndi.gaussian_filter(act, sigma, mode="nearest", truncate=4.0)
    nz, ny, nx = pet_shape
    pet = blurred.reshape(nz, m, ny, m, nx, m).mean(axis=(1, 3, 5))
    pet = pet + rng.normal(0, noise_sd, pet.shape) if noise_sd else pet
    suv = pet_grid.with_array(
        pet.astype(np.float32), modality="PT", units="SUVbw", series_uid=f"9.9.{seed}"
    )
    mr_grid = grid(mr_shape, mr_spacing, direction)
    labels = mr_grid.with_array(sphere_labels(mr_grid, spheres), kind="mask", method="truth")
    truth = {
        "activity": [s["activity"] for s in spheres],
        "volume_ml": [4 / 3 * np.pi * s["radius"] ** 3 / 1000 for s in spheres],
        "background": background,
    }
    return suv, labels, truth


@pytest.fixture
def synthetic_pet():
    """Factory fixture: ``synthetic_pet(seed=..., spheres=[{center, radius, activity}], ...)``."""
    return make_pet
