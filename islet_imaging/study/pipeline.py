"""One visit end to end: DICOM → SUV → registrations → graft → deposits → measurements.

The work is split so that only one process ever writes the catalogue:

* :func:`plan_visit` (client, reads the catalogue) gathers everything a worker needs into a
  picklable :class:`VisitJob`: the files of the MR reference series (T2 preferred), of the PET
  and of the baseline visit's MR, the latest human mask version if a person saved one, the
  options and fresh output paths;
* :func:`run_visit` (any process, never touches SQLite) loads MR and PET, converts PET to SUV,
  registers PET → MR and the visit's MR → the baseline MR, takes the human mask or segments
  the graft automatically, splits it into deposits, measures everything and writes its files
  (automatic mask, transforms, preview slice) under new unique names in the workspace;
* :func:`commit_visit` (client) stores the result in one transaction
  (:meth:`~islet_imaging.study.workspace.Workspace.finish_run`).

:func:`process_visit` chains the three in the current process.
"""

from __future__ import annotations

import dataclasses
import secrets
import time
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from islet_imaging._atomic import atomic_path
from islet_imaging.errors import IsletImagingError, RegistrationError, WorkspaceError
from islet_imaging.study.workspace import MaskOrigin, Role, Workspace
from islet_imaging.volume import Volume

__all__ = [
    "MR_ROLES",
    "PipelineOptions",
    "VisitJob",
    "VisitResult",
    "commit_visit",
    "pick_series",
    "plan_visit",
    "process_visit",
    "run_visit",
]


#: random sampling seed of the registration metrics (SimpleITK treats 0 as "wall clock", which
#: would make re-runs differ)
_SEED = 20240101


@dataclasses.dataclass(frozen=True)
class PipelineOptions:
    """Settings of the automatic pipeline (stored with every run).

    Parameters
    ----------
    segmentation
        ``"mr"`` (default: MR threshold relative to the reference muscle, the method validated
        on phantom truth), ``"pet_guided"`` (MR delineation kept only where PET hot spots are;
        MR-only when the visit has no PET) or ``"pet"`` (PET delineation resampled on the MR
        grid).
    k
        MR detection threshold in reference-muscle SDs.
    pet_fraction
        Fraction of SUVmax for PET hot spots / PET delineation.
    min_deposit_mm3
        Smallest deposit kept, mm³.
    suv_kind
        SUV normalisation (``"bw"``, ``"lbm"``, ``"bsa"``, ``"ibw"``).
    register_to_baseline
        Register every follow-up MR to the baseline MR (rigid) to follow deposits.
    baseline_search_steps
        Rotation search grid of that registration: ``(2 n + 1)³`` starting rotations within
        ±20° (2: robust to a repositioned arm; 1: faster, for small repositioning).
    """

    segmentation: str = "mr"
    k: float = 3.0
    pet_fraction: float = 0.5
    min_deposit_mm3: float = 10.0
    suv_kind: str = "bw"
    register_to_baseline: bool = True
    baseline_search_steps: int = 2

    def __post_init__(self) -> None:
        if self.segmentation not in ("pet_guided", "mr", "pet"):
            raise WorkspaceError(
                "unknown segmentation",
                tag="segmentation",
                value=self.segmentation,
                hint="use 'pet_guided', 'mr' or 'pet'",
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class VisitJob:
    """Everything :func:`run_visit` needs, with no catalogue access (picklable)."""

    workspace: str
    visit_id: int
    title: str
    mr_files: tuple[str, ...]
    mr_series_uid: str
    pet_files: tuple[str, ...] | None
    baseline_mr_files: tuple[str, ...] | None
    mask_path: str | None
    mask_id: int | None
    run_dir: str
    auto_mask_path: str
    options: PipelineOptions


@dataclasses.dataclass(frozen=True)
class VisitResult:
    """What :func:`run_visit` returns: results to commit, or the reason it failed."""

    visit_id: int
    ok: bool
    reason: str | None = None
    measurements: pd.DataFrame | None = None
    deposits: pd.DataFrame | None = None
    mask_id: int | None = None
    auto_mask: dict[str, Any] | None = None
    artifacts: dict[str, Any] = dataclasses.field(default_factory=dict)
    seconds: float = 0.0


#: roles of an MR series the pipeline segments, in order of preference
MR_ROLES = (Role.MR_T2, Role.MR, Role.MR_T1)


def pick_series(series: pd.DataFrame, roles: tuple[Role, ...]) -> pd.Series | None:
    """The series of the first of ``roles`` a visit has (most instances, then lowest number).

    Parameters
    ----------
    series
        A visit's catalogued series (:meth:`~islet_imaging.study.workspace.Workspace.series`).
    roles
        Roles in order of preference (e.g. :data:`MR_ROLES`).

    Returns
    -------
    Series or None
        The chosen row, or None when the visit has no series of these roles.
    """
    for role in roles:
        hit = series[series["role"] == role.value]
        if len(hit):
            return hit.sort_values(["n_instances", "series_number"], ascending=[False, True]).iloc[
                0
            ]
    return None


def plan_visit(
    workspace: Workspace, visit: int | str, *, options: PipelineOptions | None = None
) -> VisitJob:
    """Collect the inputs of one visit from the catalogue (client side).

    Raises
    ------
    WorkspaceError
        If the visit has no MR series (nothing to segment).
    """
    options = options or PipelineOptions()
    info = workspace.visit(visit)
    visit_id = int(info["visit_id"])
    series = workspace.series(visit_id)
    mr = pick_series(series, MR_ROLES)
    if mr is None:
        raise WorkspaceError(
            "visit has no MR series to segment",
            path=workspace.root,
            tag="Modality",
            value=sorted(set(series["modality"].dropna())),
            hint="import the visit's MR series, or set a series role with set_series_role()",
        )
    pet = pick_series(series, (Role.PET,))
    baseline_files = None
    baseline = workspace.baseline_visit(visit_id)
    if options.register_to_baseline and baseline != visit_id:
        base = pick_series(workspace.series(baseline), (Role(mr["role"]), *MR_ROLES))
        baseline_files = None if base is None else tuple(base["files"])
    human = workspace.latest_mask(visit_id, origin=MaskOrigin.HUMAN)
    token = f"{visit_id:04d}-{time.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(4)}"
    return VisitJob(
        workspace=str(workspace.root),
        visit_id=visit_id,
        title=f"{info['patient']}/{info['label']}",
        mr_files=tuple(mr["files"]),
        mr_series_uid=str(mr["series_uid"]),
        pet_files=None if pet is None else tuple(pet["files"]),
        baseline_mr_files=baseline_files,
        mask_path=None if human is None else str(human.path),
        mask_id=None if human is None else human.id,
        run_dir=str(workspace.root / "runs" / token),
        auto_mask_path=str(workspace.new_mask_path(visit_id, prefix="auto")),
        options=options,
    )


def _load_one(files: tuple[str, ...], **kwargs: Any) -> Volume:
    from islet_imaging.io.dicom import load_volumes

    volumes = load_volumes(list(files), **kwargs)
    return volumes[0]


def _labels_from_mask(
    mask: Volume, mr: Volume, options: PipelineOptions, *, method: str, parameters: Any
) -> Volume:
    """Deposit labels on the MR grid from a stored or automatic mask, with its provenance.

    A mask holding several labels keeps them (a person's split of the deposits); a binary mask
    is split by :func:`~islet_imaging.segment.graft.split_deposits` (on the MR signal too).
    """
    from islet_imaging.register import resample_like
    from islet_imaging.segment.graft import split_deposits

    if not mask.same_grid(mr):
        mask = resample_like(mask.as_mask(), mr)
    provenance = {
        "graft_method": method,
        "graft_parameters": parameters,
        "source_series_uid": mr.meta.get("series_uid"),
    }
    values = np.unique(mask.array)
    if len(values[values > 0]) > 1:  # already labelled deposits: keep a person's split
        labels = mr.with_array(mask.array.astype(np.int32))
        return labels.as_mask(method="stored_labels", parameters={}, **provenance)
    binary = mr.with_array(mask.array > 0).as_mask()
    labels = split_deposits(binary, image=mr, min_volume_mm3=options.min_deposit_mm3)
    return labels.with_meta(**provenance)


def _segment(mr: Volume, suv: Volume | None, options: PipelineOptions) -> Volume:
    from islet_imaging.register import resample_like
    from islet_imaging.segment.graft import (
        segment_graft_mr,
        segment_graft_mr_pet_guided,
        segment_graft_pet,
    )

    if options.segmentation == "pet_guided" and suv is not None:
        return segment_graft_mr_pet_guided(
            mr, suv, fraction=options.pet_fraction, k=options.k,
            min_volume_mm3=options.min_deposit_mm3,
        )  # fmt: skip
    if options.segmentation == "pet" and suv is not None:
        pet_mask = segment_graft_pet(suv, fraction=options.pet_fraction)
        return resample_like(pet_mask, mr).as_mask(method=pet_mask.meta.get("method"))
    return segment_graft_mr(mr, k=options.k, min_volume_mm3=options.min_deposit_mm3)


def _in_fixed_frame(moving: Volume, matrix: np.ndarray) -> Volume:
    """``moving`` with its geometry moved into the fixed frame by a rigid registration.

    ``matrix`` maps fixed points to moving points (ITK convention), so the new voxel-to-world
    affine is ``inv(matrix) @ moving.affine``. The voxels are untouched (no interpolation:
    SUVmax stays a measured voxel value).
    """
    affine = np.linalg.inv(np.asarray(matrix, float)) @ moving.affine
    direction = affine[:3, :3] / np.asarray(moving.spacing, float)[None, :]
    return dataclasses.replace(moving, origin=tuple(affine[:3, 3]), direction=direction)


def _deposit_positions(labels: Volume, to_baseline: Any | None) -> pd.DataFrame:
    """Centroid (LPS mm, baseline frame) and volume (mL) of every deposit label."""
    from scipy import ndimage as ndi

    array = np.asarray(labels.array)
    ids = [int(v) for v in np.unique(array) if v > 0]
    if not ids:
        return pd.DataFrame(columns=["label", "volume_ml", "x_mm", "y_mm", "z_mm"])
    centres = np.atleast_2d(np.array(ndi.center_of_mass(np.ones_like(array), array, ids)))
    points = labels.index_to_world(centres)
    if to_baseline is not None:
        points = np.array([to_baseline.TransformPoint(tuple(map(float, p))) for p in points])
    counts = ndi.sum_labels(np.ones_like(array, dtype=float), array, ids)
    return pd.DataFrame(
        {
            "label": ids,
            "volume_ml": np.asarray(counts) * labels.voxel_volume_ml,
            "x_mm": points[:, 0],
            "y_mm": points[:, 1],
            "z_mm": points[:, 2],
        }
    )


def _preview(mr: Volume, labels: Volume, suv_on_mr: Volume | None, path: Path) -> None:
    """Save the MR slice with the largest graft area (plus mask and SUV) for thumbnails."""
    area = (np.asarray(labels.array) > 0).sum(axis=(1, 2))
    k = int(np.argmax(area)) if area.any() else mr.shape[0] // 2
    arrays = {
        "mr": np.asarray(mr.array[k], dtype=np.float32),
        "mask": np.asarray(labels.array[k], dtype=np.uint16),
        "pet": np.asarray(suv_on_mr.array[k], np.float32) if suv_on_mr is not None else np.zeros(0),
        "pixel_spacing": np.asarray(mr.spacing[1:], dtype=float),
        "slice_index": np.asarray(k),
    }
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez_compressed(handle, **arrays)


def tidy_measurements(table: pd.DataFrame) -> pd.DataFrame:
    """Split :func:`~islet_imaging.measure.records.measure_graft`'s ``object`` column
    (``"graft"``, ``"deposit 3"``, ``"reference"``) into ``object`` (``"graft"``,
    ``"deposit"``, ``"reference"``) and ``label`` (3), as the catalogue stores them."""
    table = table.copy()
    objects = table["object"].astype(str).str.strip()
    parts = objects.str.extract(r"^deposit\s+(\d+)$")
    is_deposit = parts[0].notna()
    table["label"] = pd.array(
        [int(v) if ok else None for v, ok in zip(parts[0], is_deposit, strict=True)], dtype="Int64"
    )
    table["object"] = np.where(is_deposit, "deposit", objects)
    return table


def run_visit(job: VisitJob) -> VisitResult:
    """Process one visit (worker side); failures come back as ``ok=False`` with the reason.

    Never raises for a bad visit: any error becomes a one-line ``reason`` so a batch can go on.
    """
    start = time.perf_counter()
    try:
        return _run_visit(job, start)
    except IsletImagingError as exc:
        reason = f"{type(exc).__name__}: {exc}"
    except Exception as exc:  # a broken series must not stop the cohort
        last = traceback.extract_tb(exc.__traceback__)[-1]
        reason = f"{type(exc).__name__}: {exc} (at {Path(last.filename).name}:{last.lineno})"
    return VisitResult(
        visit_id=job.visit_id, ok=False, reason=reason, seconds=time.perf_counter() - start
    )


def _run_visit(job: VisitJob, start: float) -> VisitResult:
    from islet_imaging.io.files import read_mask, write_volume
    from islet_imaging.measure.records import measure_graft
    from islet_imaging.register import register_pet_to_mr, register_to_baseline, resample_like
    from islet_imaging.segment.muscle import reference_muscle_roi

    options = job.options
    run_dir = Path(job.run_dir)
    artifacts: dict[str, Any] = {"mr_series_uid": job.mr_series_uid}
    mr = _load_one(job.mr_files)
    suv = suv_on_mr = None
    if job.pet_files:
        pet = _load_one(job.pet_files, units=f"suv{options.suv_kind}")
        artifacts["pet_series_uid"] = pet.meta.get("series_uid")
        artifacts["suv"] = pet.meta.get("suv")
        try:
            registration = register_pet_to_mr(pet, mr, seed=_SEED)
        except RegistrationError as exc:
            same_frame = pet.meta.get("frame_of_reference_uid") == mr.meta.get(
                "frame_of_reference_uid"
            )
            if not same_frame or not pet.meta.get("frame_of_reference_uid"):
                raise
            # a hybrid acquisition whose identity alignment cannot be improved: keep it
            artifacts["pet_to_mr"] = {"transform": "identity", "reason": str(exc)}
            suv = pet
            suv_on_mr = resample_like(pet, mr)
        else:
            registration.save(_new(run_dir / "pet_to_mr.tfm"))
            artifacts["pet_to_mr"] = {
                "transform": _relative(run_dir / "pet_to_mr.tfm", job),
                "metric": _float(registration.metric),
                **{k: registration.info.get(k) for k in ("rotation_deg", "translation_mm")},
            }
            suv = _in_fixed_frame(pet, registration.matrix)
            suv_on_mr = resample_like(pet, mr, transform=registration.transform)
    to_baseline = None
    if job.baseline_mr_files:
        baseline_mr = _load_one(job.baseline_mr_files)
        steps = options.baseline_search_steps
        reg = register_to_baseline(
            mr, baseline_mr, seed=_SEED, search_steps=steps, candidates=min(2, steps)
        )
        reg.save(_new(run_dir / "to_baseline.tfm"))
        artifacts["to_baseline"] = {
            "transform": _relative(run_dir / "to_baseline.tfm", job),
            "metric": _float(reg.metric),
            **{k: reg.info.get(k) for k in ("rotation_deg", "translation_mm")},
            "baseline_series_uid": baseline_mr.meta.get("series_uid"),
        }
        to_baseline = reg.transform.GetInverse()
    auto_mask = None
    if job.mask_path:
        labels = _labels_from_mask(
            read_mask(job.mask_path), mr, options,
            method=f"stored mask version (id {job.mask_id})", parameters={"path": job.mask_path},
        )  # fmt: skip
        artifacts["mask"] = {"source": "human", "mask_id": job.mask_id}
    else:
        graft = _segment(mr, suv, options)
        labels = _labels_from_mask(
            graft, mr, options,
            method=graft.meta.get("method"), parameters=graft.meta.get("parameters"),
        )  # fmt: skip
        with atomic_path(job.auto_mask_path) as tmp:
            write_volume(labels.with_array(labels.array.astype(np.uint16)), tmp, overwrite=True)
        method = {
            "segmentation": graft.meta.get("method"),
            "parameters": graft.meta.get("parameters"),
            "deposits": labels.meta.get("method"),
        }
        auto_mask = {
            "path": job.auto_mask_path,
            "method": f"{method['segmentation']} + {method['deposits']}",
            "reference_series_uid": job.mr_series_uid,
        }
        artifacts["mask"] = {"source": "auto", **method}
    reference = reference_muscle_roi(mr, graft=labels.with_array(labels.array > 0).as_mask())
    table = measure_graft(labels, mr=mr, suv=suv, reference=reference)
    preview = run_dir / "preview.npz"
    _preview(mr, labels, suv_on_mr, preview)
    artifacts["preview"] = _relative(preview, job)
    return VisitResult(
        visit_id=job.visit_id,
        ok=True,
        measurements=tidy_measurements(table),
        deposits=_deposit_positions(labels, to_baseline),
        mask_id=job.mask_id,
        auto_mask=auto_mask,
        artifacts=artifacts,
        seconds=time.perf_counter() - start,
    )


def _relative(path: Path, job: VisitJob) -> str:
    """``path`` relative to the workspace folder (so a workspace can be moved)."""
    return Path(path).relative_to(job.workspace).as_posix()


def _new(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def commit_visit(workspace: Workspace, run_id: int, result: VisitResult) -> None:
    """Store a :class:`VisitResult` for ``run_id`` (done in one transaction, or failed)."""
    if not result.ok:
        workspace.fail_run(run_id, result.reason or "unknown error")
        return
    workspace.finish_run(
        run_id,
        measurements=result.measurements,
        deposits=result.deposits,
        mask_id=result.mask_id,
        auto_mask=result.auto_mask,
        artifacts={**result.artifacts, "seconds": round(result.seconds, 3)},
    )


def process_visit(
    workspace: Workspace,
    visit: int | str,
    *,
    options: PipelineOptions | None = None,
    params: Mapping[str, Any] | None = None,
) -> VisitResult:
    """Run the pipeline on one visit in this process and store the result.

    Returns
    -------
    VisitResult
        ``ok`` False with ``reason`` when the visit failed (also recorded in the run log).
    """
    job = plan_visit(workspace, visit, options=options)
    run_id = workspace.start_run(job.visit_id, params={**job.options.to_dict(), **(params or {})})
    result = run_visit(job)
    commit_visit(workspace, run_id, result)
    return result
