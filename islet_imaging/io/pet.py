"""Standardised uptake values (SUV) from PET DICOM headers, with provenance.

The computation follows QIBA's vendor-neutral pseudo-code. Every SUV volume says how it was
obtained (``meta['suv']``): the factor(s), the formula, the tags and the rule used for each time,
the overrides given by the user and the software version.

Conventions
-----------
The loader gives PET voxels as ``stored × RescaleSlope + RescaleIntercept`` *per slice* (the
"rescaled value", in the DICOM ``Units``). A **factor** here multiplies that rescaled value:
``SUV = rescaled value × factor[slice]``. Per-slice slopes are therefore already taken into
account by the loader, and per-slice factors (Philips scale factors, frame times) are applied per
slice.

Units (0054,1001)

* ``BQML``: the rescaled value is the activity concentration C in Bq/mL.
* ``CNTS`` (Philips): if the private SUV scale factor (7053,1000) is present and non-zero,
  ``SUVbw = rescaled × (7053,1000)`` directly. Otherwise the activity concentration scale factor
  (7053,1009) gives ``C = stored × RescaleSlope × (7053,1009) = rescaled × (7053,1009)`` (Bq/mL;
  PET rescale intercepts are zero) and the BQML path follows.
* ``GML``: the values already are SUVbw (g/mL); the factor is 1 and only ``kind="bw"`` is valid.

Decay correction (0054,1102), never applied twice. With D the injected dose
(RadionuclideTotalDose, Bq), T½ the half-life (s), t_inj the injection time:

* ``START``: voxels are decay-corrected to the scan reference time t_ref, so the dose is decayed to
  that same time: ``D_ref = D × 2^(-(t_ref - t_inj) / T½)``.
* ``ADMIN``: voxels are decay-corrected to the administration time already, so ``D_ref = D``
  (no decay term; no time tag is needed).
* ``NONE``: voxels are not decay-corrected; each slice (each frame of a dynamic series) is compared
  with the dose remaining at its own acquisition start t_acq:
  ``D_ref = D × 2^(-(t_acq - t_inj) / T½)``. Decay during the frame is not modelled.

CorrectedImage (0028,0051) must contain ``ATTN``, and ``DECY`` for START and ADMIN (and must not
contain ``DECY`` for NONE).

Scan reference time for START: SeriesDate/SeriesTime (0008,0021)/(0008,0031), unless that is
after the earliest AcquisitionDate/AcquisitionTime (0008,0022)/(0008,0032) of the series (a
post-processed series); then GE's private scan datetime (0009,100D) ("GEMS_PETD_01") if present,
else the earliest acquisition time. An Enhanced PET DecayCorrectionDateTime (0018,9701) is used
when present, since it states the reference time explicitly.

Injection time: RadiopharmaceuticalStartDateTime (0018,1078); else RadiopharmaceuticalStartTime
(0018,1072) on the SeriesDate, moved to the day before when that would put it after the scan
(acquisition across midnight).

Kinds (W weight kg, H height m, C in Bq/mL, D_ref in Bq):

* ``bw``:  ``SUVbw = C × W[g] / D_ref`` (g/mL).
* ``lbm`` (SUL): ``C × LBM[g] / D_ref`` with Janmahasatian et al. (2005) lean body mass
  ``LBM = 9270 W / (6680 + 216 BMI)`` (male), ``9270 W / (8780 + 244 BMI)`` (female),
  ``BMI = W / H²``.
* ``bsa``: ``C × BSA[cm²] / D_ref`` (cm²/mL) with Du Bois & Du Bois (1916)
  ``BSA[m²] = 0.007184 × W^0.425 × (100 H)^0.725``.
* ``ibw``: ``C × IBW[g] / D_ref`` with Devine (1974) ideal body weight
  ``IBW = 50 kg (male) or 45.5 kg (female) + 2.3 kg × (height in inches − 60)``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from islet_imaging.errors import IsletImagingError, MissingTagError
from islet_imaging.io._dicom_datetime import parse_da_tm, parse_dt, parse_tm
from islet_imaging.volume import Volume

__all__ = [
    "SuvFactors",
    "SuvKind",
    "bsa_du_bois",
    "ibw_devine",
    "lbm_janmahasatian",
    "suv_factors",
    "to_suv",
]

OVERRIDE_KEYS = ("weight_kg", "height_m", "dose_bq", "injection_time", "half_life_s", "sex")

_GE_CREATOR = "GEMS_PETD_01"
_PHILIPS_CREATOR = "Philips PET Private Group"
_SUV_UNITS = {"GML", "SUVBW"}


class SuvKind(enum.StrEnum):
    """Which body-size normalisation the SUV uses (accepts "bw", "suvbw", "sul", ...)."""

    BW = "bw"
    LBM = "lbm"
    BSA = "bsa"
    IBW = "ibw"

    @classmethod
    def _missing_(cls, value: object) -> SuvKind | None:
        text = str(value).strip().lower()
        if text == "sul":
            return cls.LBM
        if text.startswith("suv"):
            text = text[3:]
        for member in cls:
            if member.value == text:
                return member
        return None

    @property
    def units(self) -> str:
        """The ``meta['units']`` label of an SUV volume of this kind, e.g. ``"SUVbw"``."""
        return f"SUV{self.value}"


@dataclasses.dataclass(frozen=True)
class SuvFactors:
    """SUV scale factors of a series, one per slice, with their provenance.

    Attributes
    ----------
    factors : ndarray, shape (n_slices,)
        Multiply the rescaled voxel values of slice ``k`` by ``factors[k]`` to get SUV.
    kind : SuvKind
    provenance : dict
        JSON-serialisable record of how the factors were obtained.
    """

    factors: np.ndarray
    kind: SuvKind
    provenance: dict

    @property
    def units(self) -> str:
        """Units label of the resulting SUV (``"SUVbw"``, ``"SUVlbm"``...)."""
        return self.kind.units


# --------------------------------------------------------------------------- body size formulas
def lbm_janmahasatian(weight_kg: float, height_m: float, sex: str) -> float:
    """Lean body mass in kg (Janmahasatian et al., Clin Pharmacokinet 2005).

    Examples
    --------
    >>> round(lbm_janmahasatian(70.0, 1.75, "M"), 3)
    55.857
    """
    bmi = weight_kg / height_m**2
    if sex == "M":
        return 9270.0 * weight_kg / (6680.0 + 216.0 * bmi)
    return 9270.0 * weight_kg / (8780.0 + 244.0 * bmi)


def bsa_du_bois(weight_kg: float, height_m: float) -> float:
    """Body surface area in m² (Du Bois & Du Bois, 1916).

    Examples
    --------
    >>> round(bsa_du_bois(70.0, 1.75), 4)
    1.8481
    """
    return 0.007184 * weight_kg**0.425 * (100.0 * height_m) ** 0.725


def ibw_devine(height_m: float, sex: str) -> float:
    """Ideal body weight in kg (Devine, 1974): 50 (M) / 45.5 (F) + 2.3 kg per inch over 60 in.

    Examples
    --------
    >>> round(ibw_devine(1.524, "F"), 6)
    45.5
    """
    base = 50.0 if sex == "M" else 45.5
    return base + 2.3 * (100.0 * height_m / 2.54 - 60.0)


# --------------------------------------------------------------------------- DICOM helpers
def _software() -> str:
    from islet_imaging import __version__

    return f"islet-imaging {__version__}"


def _value(ds: Any, keyword: str) -> Any:
    """Value of ``keyword`` in ``ds``, or None when absent or empty."""
    value = getattr(ds, keyword, None) if ds is not None else None
    if value is None or (isinstance(value, str | bytes) and not str(value).strip()):
        return None
    try:
        if len(value) == 0:  # empty sequence or multi-value
            return None
    except TypeError:
        pass
    return value


def _datetime(ds: Any, date_kw: str, time_kw: str) -> dt.datetime | None:
    date, time = _value(ds, date_kw), _value(ds, time_kw)
    if date is None or time is None:
        return None
    return parse_da_tm(date, time)


def _private(ds: Any, group: int, creator: str, element: int) -> tuple[Any, str] | None:
    """A private element by creator (or at its usual tag when no creator is reserved)."""
    try:
        block = ds.private_block(group, creator)
    except KeyError:
        block = None
    if block is not None:
        if element in block:
            value = block[element].value
            tag = f"({group:04X},{block.block_start + element:04X}) [{creator}]"
            return (value, tag) if value not in (None, "") else None
        return None
    fallback = (group << 16) | 0x1000 | element
    if (group << 16 | 0x0010) not in ds and fallback in ds:
        value = ds[fallback].value
        if isinstance(value, bytes):
            value = value.decode("ascii", "replace").strip("\x00 ")
        return (value, f"({group:04X},{0x1000 | element:04X}) [no private creator]")
    return None


@dataclasses.dataclass
class _Series:
    """The headers of one series with the file name of each, for error messages."""

    headers: Sequence[Any]
    paths: list[str]

    def path(self, index: int) -> str:
        return self.paths[index]

    def common(self, keyword: str, tag: str, *, required: bool = True, getter=None) -> Any:
        """The value of a series-level tag, identical in every header."""
        getter = getter or (lambda ds: _value(ds, keyword))
        found = None
        first = -1
        for i, ds in enumerate(self.headers):
            value = getter(ds)
            if value is None:
                if required:
                    raise MissingTagError(
                        f"{keyword} {tag} is missing",
                        path=self.path(i),
                        tag=f"{keyword} {tag}",
                        hint="fix the header or pass an explicit override",
                    )
                continue
            if found is None:
                found, first = value, i
            elif _differs(found, value):
                raise MissingTagError(
                    f"{keyword} {tag} is contradictory within the series "
                    f"({found!r} in {self.path(first)})",
                    path=self.path(i),
                    tag=f"{keyword} {tag}",
                    value=value,
                    hint="check the series; pass an explicit override if you know the value",
                )
        return found


def _differs(a: Any, b: Any) -> bool:
    try:
        return not math.isclose(float(a), float(b), rel_tol=1e-6)
    except (TypeError, ValueError):
        return _norm(a) != _norm(b)


def _norm(value: Any) -> Any:
    if isinstance(value, str | bytes):
        return str(value).strip().upper()
    try:
        return tuple(str(v).strip().upper() for v in value)
    except TypeError:
        return value


def _radiopharm(ds: Any) -> Any:
    seq = _value(ds, "RadiopharmaceuticalInformationSequence")
    return seq[0] if seq is not None else None


def _positive(value: Any, name: str, tag: str, path: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not (number > 0 and math.isfinite(number)):
        raise MissingTagError(
            f"{name} must be a positive number",
            path=path,
            tag=tag,
            value=value,
            hint="fix the header or pass an explicit override",
        )
    return number


def _as_datetime(value: Any) -> dt.datetime:
    if isinstance(value, dt.datetime):
        return value.replace(tzinfo=None)
    text = str(value).strip()
    try:
        return dt.datetime.fromisoformat(text).replace(tzinfo=None)
    except ValueError:
        return parse_dt(text)


def _check_overrides(overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    result = dict(overrides or {})
    for key in result:
        if key not in OVERRIDE_KEYS:
            raise IsletImagingError(
                "unknown SUV override", tag="overrides", value=key, hint=f"use {OVERRIDE_KEYS}"
            )
    for key in ("weight_kg", "height_m", "dose_bq", "half_life_s"):
        if key in result:
            value = float(result[key])
            if not (value > 0 and math.isfinite(value)):
                raise IsletImagingError("must be a positive number", tag=key, value=result[key])
            result[key] = value
    if "sex" in result:
        result["sex"] = str(result["sex"]).strip().upper()[:1]
        if result["sex"] not in ("M", "F"):
            raise IsletImagingError("sex must be 'M' or 'F'", tag="sex", value=overrides["sex"])
    if "injection_time" in result:
        try:
            result["injection_time"] = _as_datetime(result["injection_time"])
        except (ValueError, IndexError) as exc:
            raise IsletImagingError(
                "injection_time must be an ISO date-time or a DICOM DT",
                tag="injection_time",
                value=overrides["injection_time"],
            ) from exc
    return result


# --------------------------------------------------------------------------- the computation
def suv_factors(
    headers: Sequence[Any],
    *,
    kind: SuvKind | str = SuvKind.BW,
    overrides: Mapping[str, Any] | None = None,
    paths: Sequence[str] | None = None,
    frame_numbers: Sequence[int] | None = None,
) -> SuvFactors:
    """SUV factors of a PET series from its DICOM headers (QIBA vendor-neutral rules).

    Parameters
    ----------
    headers : sequence of pydicom.Dataset
        One header per slice, in slice order (pixel data not needed). For an enhanced multi-frame
        object, a single header together with ``frame_numbers``.
    kind : {"bw", "lbm", "bsa", "ibw"}
        SUV normalisation (see the module docstring for the formulas).
    overrides : mapping, optional
        Values that replace (or supply) header values: ``weight_kg``, ``height_m``, ``dose_bq``
        (Bq), ``injection_time`` (datetime or ISO / DICOM DT string), ``half_life_s``, ``sex``
        ("M"/"F"). Each one is recorded in the provenance.
    paths : sequence of str, optional
        File of each header, named in errors (default: each header's ``filename``).
    frame_numbers : sequence of int, optional
        1-based frame number of each slice of a multi-frame object.

    Returns
    -------
    SuvFactors
        ``factors`` has one entry per slice: ``SUV = (stored × slope + intercept) × factor``.

    Raises
    ------
    MissingTagError
        A needed tag is missing or contradictory; the message names the tag and the file.

    Examples
    --------
    >>> from pydicom import Dataset
    >>> ds = Dataset()
    >>> ds.Units, ds.CorrectedImage, ds.DecayCorrection = "BQML", ["ATTN", "DECY"], "ADMIN"
    >>> ds.PatientWeight = 70
    >>> ds.RadiopharmaceuticalInformationSequence = [Dataset()]
    >>> ds.RadiopharmaceuticalInformationSequence[0].RadionuclideTotalDose = 1.4e8
    >>> ds.RadiopharmaceuticalInformationSequence[0].RadionuclideHalfLife = 4057.74
    >>> suv_factors([ds]).factors.tolist()  # 70 000 g / 1.4e8 Bq
    [0.0005]
    """
    kind = SuvKind(kind)
    ov = _check_overrides(overrides)
    if len(headers) == 0:
        raise MissingTagError("no DICOM headers given", tag="headers")
    names = list(paths) if paths is not None else []
    if len(names) != len(headers):
        names = [
            str(getattr(ds, "filename", None) or f"<header {i}>") for i, ds in enumerate(headers)
        ]
    series = _Series(headers, names)
    slices = _slices(series, frame_numbers)
    prov: dict[str, Any] = {
        "kind": kind.value,
        "units": kind.units,
        "software": _software(),
        "overrides": {
            k: (v.isoformat() if isinstance(v, dt.datetime) else v) for k, v in ov.items()
        },
        "tags": {},
        "rules": {},
    }

    units = str(series.common("Units", "(0054,1001)")).strip().upper()
    prov["input_units"] = units
    if units not in ("BQML", "CNTS", "GML"):
        raise MissingTagError(
            "unsupported Units for SUV",
            path=series.path(0),
            tag="Units (0054,1001)",
            value=units,
            hint="SUV needs BQML, CNTS (Philips) or GML",
        )
    if units == "GML":
        if kind is not SuvKind.BW:
            raise MissingTagError(
                f"the series is already SUVbw (Units GML); SUV{kind.value} cannot be derived",
                path=series.path(0),
                tag="Units (0054,1001)",
                value=units,
                hint="use kind='bw'",
            )
        prov["rules"]["units"] = "GML: values already SUVbw, factor 1"
        prov["formula"] = "SUVbw = rescaled value (Units GML)"
        factors = np.ones(len(slices))
        return _finish(factors, kind, prov)

    decay = str(series.common("DecayCorrection", "(0054,1102)")).strip().upper()
    corrected = series.common("CorrectedImage", "(0028,0051)")
    corrected_set = {str(c).strip().upper() for c in _as_list(corrected)}
    prov["tags"]["DecayCorrection"] = decay
    prov["tags"]["CorrectedImage"] = sorted(corrected_set)
    if decay not in ("START", "ADMIN", "NONE"):
        raise MissingTagError(
            "unsupported DecayCorrection",
            path=series.path(0),
            tag="DecayCorrection (0054,1102)",
            value=decay,
            hint="expected START, ADMIN or NONE",
        )
    needed = {"ATTN", "DECY"} if decay != "NONE" else {"ATTN"}
    if not needed <= corrected_set:
        raise MissingTagError(
            f"CorrectedImage must contain {' and '.join(sorted(needed))} for SUV",
            path=series.path(0),
            tag="CorrectedImage (0028,0051)",
            value=sorted(corrected_set),
            hint="SUV needs attenuation- and decay-corrected images",
        )
    if decay == "NONE" and "DECY" in corrected_set:
        raise MissingTagError(
            "CorrectedImage says DECY but DecayCorrection is NONE",
            path=series.path(0),
            tag="DecayCorrection (0054,1102)",
            value=decay,
            hint="the header contradicts itself: check with the site",
        )

    # activity factor: rescaled value -> Bq/mL, or a direct SUVbw factor (Philips 7053,1000)
    activity = np.ones(len(slices))
    direct = None
    if units == "CNTS":
        direct, activity = _philips(series, slices, prov)
        if direct is not None and kind is SuvKind.BW:
            prov["formula"] = "SUVbw = rescaled value × Philips SUV scale factor (7053,1000)"
            return _finish(direct, kind, prov)
    else:
        prov["rules"]["units"] = "BQML: rescaled value is Bq/mL"

    weight = _patient(series, ov, "weight_kg", "PatientWeight", "(0010,1030)")
    prov["tags"]["weight_kg"] = weight
    norm_g, norm_text = _normaliser(series, ov, kind, weight, prov)

    if direct is not None:  # CNTS with an SUVbw factor: other kinds by the body-size ratio
        prov["formula"] = f"SUV{kind.value} = rescaled × (7053,1000) × {norm_text} / (W g)"
        return _finish(direct * norm_g / (weight * 1000.0), kind, prov)

    dose = _radiopharm_number(series, ov, "dose_bq", "RadionuclideTotalDose", "(0018,1074)")
    prov["tags"]["dose_bq"] = dose
    if decay == "ADMIN":
        decayed = np.full(len(slices), dose)
        prov["rules"]["decay"] = "ADMIN: images corrected to injection time; dose not decayed"
        prov["formula"] = f"SUV{kind.value} = C × {norm_text} / D"
    else:
        half_life = _radiopharm_number(
            series, ov, "half_life_s", "RadionuclideHalfLife", "(0018,1075)"
        )
        prov["tags"]["half_life_s"] = half_life
        if decay == "START":
            t_ref = _scan_reference(series, prov)
            ref_times = [t_ref] * len(slices)
            latest_needed = t_ref
        else:  # NONE: each slice / frame at its own acquisition time
            ref_times = [_acquisition_time(series, s) for s in slices]
            prov["rules"]["scan_time"] = "NONE: each slice's acquisition date/time"
            latest_needed = min(ref_times)
        t_inj = _injection_time(series, ov, latest_needed, prov)
        delays = np.array([(t - t_inj).total_seconds() for t in ref_times])
        if np.any(delays < 0):
            raise MissingTagError(
                "injection time is after the scan reference time",
                path=series.path(0),
                tag=prov["rules"]["injection"],
                value=f"injection {t_inj.isoformat()}, scan {min(ref_times).isoformat()}",
                hint="check the time tags; pass injection_time= to override",
            )
        decayed = dose * np.exp2(-delays / half_life)
        prov["tags"]["injection_time"] = t_inj.isoformat()
        prov["tags"]["decay_time_s"] = _compact(delays)
        if decay == "START":
            prov["tags"]["scan_time"] = ref_times[0].isoformat()
            prov["rules"]["decay"] = "START: dose decayed to the scan reference time"
        else:
            prov["tags"]["scan_time"] = [t.isoformat() for t in ref_times]
            prov["rules"]["decay"] = "NONE: dose decayed to each slice's acquisition time"
        prov["formula"] = f"SUV{kind.value} = C × {norm_text} / (D × 2^(-Δt / T½))"
    return _finish(activity * norm_g / decayed, kind, prov)


def _as_list(value: Any) -> list:
    if isinstance(value, str | bytes):
        return str(value).replace("\\", " ").split()
    return list(value)


def _compact(values: np.ndarray) -> float | list[float]:
    values = np.asarray(values, dtype=float)
    if values.size and np.allclose(values, values[0], rtol=0, atol=abs(values[0]) * 1e-12):
        return float(values[0])
    return values.tolist()


def _finish(factors: np.ndarray, kind: SuvKind, prov: dict) -> SuvFactors:
    factors = np.asarray(factors, dtype=float)
    prov["factor"] = _compact(factors)
    return SuvFactors(factors=factors, kind=kind, provenance=prov)


@dataclasses.dataclass(frozen=True)
class _Slice:
    index: int  # header index
    frame: int | None  # 1-based frame of a multi-frame header


def _slices(series: _Series, frame_numbers: Sequence[int] | None) -> list[_Slice]:
    if frame_numbers is None:
        return [_Slice(i, None) for i in range(len(series.headers))]
    if len(series.headers) != 1:
        raise IsletImagingError(
            "frame_numbers need a single multi-frame header",
            tag="frame_numbers",
            value=len(series.headers),
        )
    return [_Slice(0, int(f)) for f in frame_numbers]


def _frame_item(ds: Any, frame: int | None, sequence: str) -> Any:
    """First item of a functional-group ``sequence`` for ``frame`` (per-frame, then shared)."""
    if frame is None:
        return None
    for groups, pick in (
        ("PerFrameFunctionalGroupsSequence", frame - 1),
        ("SharedFunctionalGroupsSequence", 0),
    ):
        seq = _value(ds, groups)
        if seq is not None and pick < len(seq):
            inner = _value(seq[pick], sequence)
            if inner is not None:
                return inner[0]
    return None


def _philips(
    series: _Series, slices: list[_Slice], prov: dict
) -> tuple[np.ndarray | None, np.ndarray]:
    suv = [_private(series.headers[s.index], 0x7053, _PHILIPS_CREATOR, 0x00) for s in slices]
    if all(v is not None and float(v[0]) > 0 for v in suv):
        prov["rules"]["units"] = f"CNTS: Philips SUV scale factor {suv[0][1]}"
        prov["tags"]["philips_suv_scale_factor"] = _compact(np.array([float(v[0]) for v in suv]))
        return np.array([float(v[0]) for v in suv]), np.ones(len(slices))
    act = [_private(series.headers[s.index], 0x7053, _PHILIPS_CREATOR, 0x09) for s in slices]
    for s, value in zip(slices, act, strict=True):
        if value is None or not float(value[0]) > 0:
            raise MissingTagError(
                "Units CNTS needs the Philips SUV scale factor (7053,1000) or the activity "
                "concentration scale factor (7053,1009)",
                path=series.path(s.index),
                tag="(7053,1000)/(7053,1009) [Philips PET Private Group]",
                hint="export the series in BQML or with the Philips private tags",
            )
    values = np.array([float(v[0]) for v in act])
    prov["rules"]["units"] = (
        f"CNTS: C = stored × RescaleSlope × activity concentration scale factor {act[0][1]}"
    )
    prov["tags"]["philips_activity_concentration_scale_factor"] = _compact(values)
    return None, values


def _patient(series: _Series, ov: dict, key: str, keyword: str, tag: str) -> float:
    if key in ov:
        return ov[key]
    value = series.common(keyword, tag)
    return _positive(value, keyword, f"{keyword} {tag}", series.path(0))


def _sex(series: _Series, ov: dict) -> str:
    if "sex" in ov:
        return ov["sex"]
    value = str(series.common("PatientSex", "(0010,0040)")).strip().upper()
    if value not in ("M", "F"):
        raise MissingTagError(
            "PatientSex must be M or F for this SUV kind",
            path=series.path(0),
            tag="PatientSex (0010,0040)",
            value=value,
            hint="pass sex='M' or 'F' as an override",
        )
    return value


def _normaliser(
    series: _Series, ov: dict, kind: SuvKind, weight: float, prov: dict
) -> tuple[float, str]:
    """Body-size normaliser in g (cm² for BSA) and its description."""
    if kind is SuvKind.BW:
        return weight * 1000.0, "W[g]"
    height = _patient(series, ov, "height_m", "PatientSize", "(0010,1020)")
    prov["tags"]["height_m"] = height
    if kind is SuvKind.BSA:
        bsa = bsa_du_bois(weight, height)
        prov["tags"]["bsa_m2"] = bsa
        prov["rules"]["body_size"] = "BSA Du Bois: 0.007184 × W^0.425 × H[cm]^0.725 (m²)"
        return bsa * 1e4, "BSA[cm²]"
    sex = _sex(series, ov)
    prov["tags"]["sex"] = sex
    if kind is SuvKind.LBM:
        lbm = lbm_janmahasatian(weight, height, sex)
        prov["tags"]["lbm_kg"] = lbm
        prov["rules"]["body_size"] = (
            "LBM Janmahasatian: 9270 W / (6680 + 216 BMI) (M), 9270 W / (8780 + 244 BMI) (F)"
        )
        return lbm * 1000.0, "LBM[g]"
    ibw = ibw_devine(height, sex)
    if ibw <= 0:
        raise MissingTagError(
            "ideal body weight is not positive for this height",
            path=series.path(0),
            tag="PatientSize (0010,1020)",
            value=height,
        )
    prov["tags"]["ibw_kg"] = ibw
    prov["rules"]["body_size"] = "IBW Devine: 50 (M) / 45.5 (F) + 2.3 kg per inch over 60 in"
    return ibw * 1000.0, "IBW[g]"


def _radiopharm_number(series: _Series, ov: dict, key: str, keyword: str, tag: str) -> float:
    if key in ov:
        return ov[key]
    series.common(
        "RadiopharmaceuticalInformationSequence", "(0054,0016)", getter=_radiopharm_present
    )
    value = series.common(keyword, tag, getter=lambda ds: _value(_radiopharm(ds), keyword))
    return _positive(value, keyword, f"{keyword} {tag}", series.path(0))


def _radiopharm_present(ds: Any) -> str | None:
    return "present" if _radiopharm(ds) is not None else None


def _acquisition_time(series: _Series, s: _Slice) -> dt.datetime:
    ds = series.headers[s.index]
    content = _frame_item(ds, s.frame, "FrameContentSequence")
    if content is not None and _value(content, "FrameAcquisitionDateTime") is not None:
        return parse_dt(content.FrameAcquisitionDateTime)
    if _value(ds, "AcquisitionDateTime") is not None:
        return parse_dt(ds.AcquisitionDateTime)
    time = _value(ds, "AcquisitionTime")
    if time is None:
        raise MissingTagError(
            "AcquisitionTime (0008,0032) is missing",
            path=series.path(s.index),
            tag="AcquisitionTime (0008,0032)",
            hint="DecayCorrection NONE needs each slice's acquisition time",
        )
    date = _value(ds, "AcquisitionDate") or _value(ds, "SeriesDate")
    if date is None:
        raise MissingTagError(
            "AcquisitionDate (0008,0022) and SeriesDate (0008,0021) are missing",
            path=series.path(s.index),
            tag="AcquisitionDate (0008,0022)",
        )
    return parse_da_tm(date, time)


def _scan_reference(series: _Series, prov: dict) -> dt.datetime:
    """Scan reference time of a START-corrected series (see the module docstring)."""
    first = series.headers[0]
    explicit = _value(first, "DecayCorrectionDateTime")
    if explicit is not None:
        prov["rules"]["scan_time"] = "DecayCorrectionDateTime (0018,9701)"
        return parse_dt(explicit)
    series.common("SeriesDate", "(0008,0021)")
    series.common("SeriesTime", "(0008,0031)")
    series_time = _datetime(first, "SeriesDate", "SeriesTime")
    acquisitions = []
    for i, ds in enumerate(series.headers):
        if _value(ds, "AcquisitionDateTime") is not None:
            acquisitions.append(parse_dt(ds.AcquisitionDateTime))
        elif _value(ds, "AcquisitionTime") is not None:
            date = _value(ds, "AcquisitionDate") or ds.SeriesDate
            acquisitions.append(parse_da_tm(date, ds.AcquisitionTime))
        elif i == 0:
            break
    earliest = min(acquisitions) if acquisitions else None
    if earliest is None or series_time <= earliest:
        prov["rules"]["scan_time"] = "SeriesDate/SeriesTime (0008,0021)/(0008,0031)"
        if earliest is None:
            prov["rules"]["scan_time"] += " (no AcquisitionTime to compare)"
        return series_time
    ge = _private(first, 0x0009, _GE_CREATOR, 0x0D)
    if ge is not None:
        prov["rules"]["scan_time"] = (
            f"GE private scan datetime {ge[1]} (SeriesTime after AcquisitionTime)"
        )
        return parse_dt(ge[0])
    prov["rules"]["scan_time"] = (
        "earliest AcquisitionDate/AcquisitionTime (0008,0022)/(0008,0032) "
        "(SeriesTime after AcquisitionTime)"
    )
    return earliest


def _injection_time(series: _Series, ov: dict, scan_time: dt.datetime, prov: dict) -> dt.datetime:
    if "injection_time" in ov:
        prov["rules"]["injection"] = "override injection_time"
        return ov["injection_time"]
    series.common(
        "RadiopharmaceuticalInformationSequence", "(0054,0016)", getter=_radiopharm_present
    )
    start_dt = series.common(
        "RadiopharmaceuticalStartDateTime",
        "(0018,1078)",
        required=False,
        getter=lambda ds: _value(_radiopharm(ds), "RadiopharmaceuticalStartDateTime"),
    )
    start_tm = series.common(
        "RadiopharmaceuticalStartTime",
        "(0018,1072)",
        required=start_dt is None,
        getter=lambda ds: _value(_radiopharm(ds), "RadiopharmaceuticalStartTime"),
    )
    if start_dt is not None:
        injection = parse_dt(start_dt)
        if start_tm is not None:
            other = dt.datetime.combine(injection.date(), parse_tm(start_tm))
            if abs((other - injection).total_seconds()) > 1.0:
                raise MissingTagError(
                    "RadiopharmaceuticalStartTime (0018,1072) contradicts "
                    f"RadiopharmaceuticalStartDateTime (0018,1078) ({start_dt})",
                    path=series.path(0),
                    tag="RadiopharmaceuticalStartTime (0018,1072)",
                    value=str(start_tm),
                    hint="pass injection_time= to override",
                )
        prov["rules"]["injection"] = "RadiopharmaceuticalStartDateTime (0018,1078)"
        return injection
    date = series.common("SeriesDate", "(0008,0021)")
    injection = parse_da_tm(date, start_tm)
    rule = "RadiopharmaceuticalStartTime (0018,1072) on SeriesDate (0008,0021)"
    if injection > scan_time:
        injection -= dt.timedelta(days=1)
        rule += ", previous day (midnight crossing)"
    prov["rules"]["injection"] = rule
    return injection


# --------------------------------------------------------------------------- Volume API
def to_suv(
    volume: Volume, kind: SuvKind | str = SuvKind.BW, *, overrides: Mapping[str, Any] | None = None
) -> Volume:
    """Convert a PET Volume from the loader (Bq/mL, CNTS or GML) to SUV.

    Parameters
    ----------
    volume : Volume, shape (nz, ny, nx)
        PET volume whose voxels are ``stored × slope + intercept`` and whose ``meta`` has the
        loader's ``headers`` (one per slice, or one multi-frame header with ``frame_numbers``).
    kind : {"bw", "lbm", "bsa", "ibw"}
        SUV normalisation; ``"suvbw"``-style names and ``"sul"`` are accepted.
    overrides : mapping, optional
        See :func:`suv_factors`; recorded in ``meta['suv']['overrides']``.

    Returns
    -------
    Volume
        float32 SUV on the same grid, ``meta['units']`` e.g. ``"SUVbw"`` and ``meta['suv']`` the
        provenance (factor(s), formula, tags, rules, overrides, software version).

    Raises
    ------
    MissingTagError
        Missing or contradictory header tags (message names the tag and the file).
    """
    headers = volume.meta.get("headers")
    if not headers:
        raise MissingTagError(
            "the volume carries no DICOM headers",
            tag="meta['headers']",
            hint="load the series with islet_imaging.load_series",
        )
    units = str(volume.meta.get("units") or "").upper()
    if units.startswith("SUV"):
        raise IsletImagingError(
            "the volume is already in SUV", tag="meta['units']", value=volume.meta.get("units")
        )
    frames = volume.meta.get("frame_numbers")
    sources = volume.meta.get("source_files")
    paths = None
    if sources and len(sources) == len(headers):
        paths = [str(p) for p in sources]
    result = suv_factors(
        headers,
        kind=kind,
        overrides=overrides,
        paths=paths,
        frame_numbers=frames if frames is not None and len(headers) == 1 else None,
    )
    if len(result.factors) != volume.shape[0]:
        raise MissingTagError(
            f"{len(result.factors)} SUV factors for {volume.shape[0]} slices",
            tag="meta['headers']",
            hint="pass the headers of every slice, in slice order",
        )
    prov = dict(result.provenance)
    prov["series_uid"] = volume.meta.get("series_uid")
    suv = volume.array.astype(np.float32) * result.factors.astype(np.float32)[:, None, None]
    return volume.with_array(suv, units=result.units, suv=prov)
