"""Search, pull and push DICOM over DICOMweb (QIDO-RS, WADO-RS, STOW-RS) with dicomweb-client.

Credentials come from, in increasing priority: the config file (``pacs.toml`` with a ``[pacs]``
table holding ``url``, ``user``, ``password``; default ``~/.config/islet-imaging/pacs.toml`` or
the path given), then the environment variables ``ISLET_PACS_URL``, ``ISLET_PACS_USER`` and
``ISLET_PACS_PASSWORD``. The password is never printed, logged or put in an error message:
:class:`PacsConfig` hides it in its repr, credentials written in the URL
(``https://user:pw@host``) are moved out of it, and every error text is scrubbed.

Example config file::

    [pacs]
    url = "https://pacs.example.org/dicom-web"
    user = "islet"
    password = "..."        # or leave it out and set ISLET_PACS_PASSWORD
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import re
import tomllib
import urllib.parse
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pydicom

from islet_imaging.errors import PacsError
from islet_imaging.io._dicom_files import write_object

__all__ = [
    "DEFAULT_CONFIG",
    "PacsConfig",
    "connect",
    "find_derived",
    "load_pacs_config",
    "pull_series",
    "pull_study",
    "push",
    "search_series",
    "search_studies",
]

DEFAULT_CONFIG = Path("~/.config/islet-imaging/pacs.toml")
_ENV = {"url": "ISLET_PACS_URL", "user": "ISLET_PACS_USER", "password": "ISLET_PACS_PASSWORD"}


@dataclasses.dataclass(frozen=True)
class PacsConfig:
    """Where the DICOMweb service is and how to log in (the password never appears in repr).

    ``timeout_s`` bounds the wait for each answer. A request that cannot connect, times out
    or is answered HTTP 408, 429, 503 or 504 is tried up to ``attempts`` times in all, waiting
    2 s, 4 s, 8 s... between tries (dicomweb-client's retrying); any other HTTP error fails at
    once. Then a :class:`PacsError` is raised.
    """

    url: str
    user: str | None = None
    password: str | None = dataclasses.field(default=None, repr=False)
    timeout_s: float = 60.0
    attempts: int = 3

    def __repr__(self) -> str:
        auth = f", user={self.user!r}, password=***" if self.user else ""
        return f"PacsConfig(url={self.url!r}{auth})"

    def scrub(self, text: str) -> str:
        """``text`` with the password (and its basic-auth encodings) replaced by ``***``."""
        if not self.password:
            return text
        import base64

        secrets = {self.password, urllib.parse.quote(self.password, safe="")}
        if self.user:
            secrets.add(base64.b64encode(f"{self.user}:{self.password}".encode()).decode())
        for secret in secrets:
            text = text.replace(secret, "***")
        return text


def _split_url_credentials(url: str) -> tuple[str, str | None, str | None]:
    """``(url without credentials, user, password)``; the URL is never echoed in errors."""
    malformed = PacsError(
        "the PACS URL cannot be parsed (not shown: it may hold a password)",
        tag="url (ISLET_PACS_URL)",
        hint="percent-encode special characters of a user or password written in the URL "
        "(# as %23, / as %2F, ? as %3F), or set ISLET_PACS_USER / ISLET_PACS_PASSWORD",
    )
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError:
        raise malformed from None
    if parts.username is None and parts.password is None:
        if "@" in url:  # e.g. user:pa#ss@host: the password would stay in the URL
            raise malformed
        return url.rstrip("/"), None, None
    host = parts.hostname or ""
    if port:
        host = f"{host}:{port}"
    clean = urllib.parse.urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
    user = urllib.parse.unquote(parts.username) if parts.username else None
    password = urllib.parse.unquote(parts.password) if parts.password else None
    return clean.rstrip("/"), user, password


def load_pacs_config(
    path: str | os.PathLike | None = None, *, env: dict[str, str] | None = None
) -> PacsConfig:
    """Read the PACS settings from ``path`` (or the default file if it exists) and the environment.

    Environment variables override the file. Raises :class:`PacsError` (never showing the
    password) when no URL is configured or the file is malformed.
    """
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    file = Path(path).expanduser() if path is not None else DEFAULT_CONFIG.expanduser()
    if path is not None and not file.is_file():
        raise PacsError("PACS config file not found", path=file, hint="check the --config path")
    if file.is_file():
        try:
            data = tomllib.loads(file.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            # the decoder message can quote the offending line: do not repeat it
            raise PacsError(
                "PACS config file is not valid TOML",
                path=file,
                hint=f"fix the syntax near line {getattr(exc, 'lineno', '?')}",
            ) from None
        section = data.get("pacs", data)
        values.update(
            {
                k: section[k]
                for k in ("url", "user", "password", "timeout_s", "attempts")
                if k in section
            }
        )
    for key, var in _ENV.items():
        if env.get(var):
            values[key] = env[var]
    if not values.get("url"):
        raise PacsError(
            "no PACS configured",
            tag="ISLET_PACS_URL",
            hint=f"set ISLET_PACS_URL (and ISLET_PACS_USER / ISLET_PACS_PASSWORD) or write "
            f"{DEFAULT_CONFIG} with a [pacs] table",
        )
    url, url_user, url_password = _split_url_credentials(str(values["url"]))
    return PacsConfig(
        url=url,
        user=values.get("user") or url_user,
        password=values.get("password") or url_password,
        timeout_s=_positive(values, "timeout_s", 60.0, float, file),
        attempts=int(_positive(values, "attempts", 3, int, file)),
    )


def _positive(
    values: dict[str, Any], key: str, default: float, kind: type, file: Path
) -> float | int:
    """``values[key]`` (or ``default``) as a positive finite ``kind``; the value is never echoed."""
    value = values.get(key, default)
    try:
        number = kind(value)
        valid = not isinstance(value, bool) and float(value) == number and 0 < number < float("inf")
    except (TypeError, ValueError, OverflowError):
        valid = False
    if not valid:
        raise PacsError(
            f"{key} must be a positive {'whole number' if kind is int else 'number'}",
            path=file,
            tag=key,
            hint=f"write e.g. {key} = {default} in the [pacs] table",
        )
    return number


# --------------------------------------------------------------------------- client
class _Client:
    """A dicomweb-client wrapper turning every failure into a scrubbed :class:`PacsError`."""

    def __init__(self, config: PacsConfig) -> None:
        import requests
        from dicomweb_client.api import DICOMwebClient

        self.config = config
        session = requests.Session()
        if config.user:
            session.auth = (config.user, config.password or "")
        self._client = DICOMwebClient(url=config.url, session=session, timeout=config.timeout_s)
        self._client.set_http_retry_params(max_attempts=max(1, config.attempts))

    def call(self, what: str, method: str, *args: Any, **kwargs: Any) -> Any:
        import requests
        from retrying import RetryError  # dicomweb-client's retry decorator

        try:
            return getattr(self._client, method)(*args, **kwargs)
        except RetryError as exc:  # every try was answered HTTP 408, 429, 503 or 504
            last = exc.last_attempt
            raise PacsError(
                f"{what} failed: HTTP {getattr(last.value, 'status_code', None)} "
                f"({last.attempt_number} tries)",
                path=self.config.url,
                hint="the server is busy or overloaded: try again later, or raise attempts",
            ) from None
        except requests.HTTPError as exc:
            status = getattr(exc.response, "status_code", None)
            hint = {
                401: "check ISLET_PACS_USER / ISLET_PACS_PASSWORD",
                403: "the account may not do this",
                404: "check the URL (DICOMweb root) and the UIDs",
            }.get(status)
            raise PacsError(
                self.config.scrub(f"{what} failed: HTTP {status}"),
                path=self.config.url,
                hint=hint,
            ) from None
        except (requests.RequestException, OSError) as exc:
            raise PacsError(
                self.config.scrub(f"{what} failed: {type(exc).__name__}"),
                path=self.config.url,
                hint="is the server running and the URL right?",
            ) from None


def connect(config: PacsConfig | None = None) -> _Client:
    """A client for ``config`` (default :func:`load_pacs_config`)."""
    return _Client(config or load_pacs_config())


def _as_client(pacs: PacsConfig | _Client | None) -> _Client:
    return pacs if isinstance(pacs, _Client) else connect(pacs)


def _value(item: dict, tag: str) -> Any:
    values = item.get(tag, {}).get("Value")
    if not values:
        return None
    first = values[0]
    if isinstance(first, dict) and "Alphabetic" in first:
        return first["Alphabetic"]
    return first if len(values) == 1 else list(values)


def _date_range(date_from: dt.date | str | None, date_to: dt.date | str | None) -> str | None:
    def fmt(d: dt.date | str | None) -> str:
        if d is None:
            return ""
        if isinstance(d, dt.date):
            return d.strftime("%Y%m%d")
        text = str(d).replace("-", "")
        if len(text) != 8 or not text.isdigit():
            raise PacsError("dates are YYYY-MM-DD or YYYYMMDD", tag="date", value=d)
        return text

    if date_from is None and date_to is None:
        return None
    return f"{fmt(date_from)}-{fmt(date_to)}"


def search_studies(
    pacs: PacsConfig | _Client | None = None,
    *,
    patient_id: str | None = None,
    date_from: dt.date | str | None = None,
    date_to: dt.date | str | None = None,
    modality: str | None = None,
) -> list[dict[str, Any]]:
    """QIDO-RS study search. Returns dicts: study_uid, patient_id, date, time, modalities,
    description, n_series (no patient name or birth date)."""
    client = _as_client(pacs)
    filters: dict[str, Any] = {}
    if patient_id:
        filters["PatientID"] = patient_id
    dates = _date_range(date_from, date_to)
    if dates:
        filters["StudyDate"] = dates
    if modality:
        filters["ModalitiesInStudy"] = modality
    found = client.call(
        "study search",
        "search_for_studies",
        search_filters=filters,
        fields=["ModalitiesInStudy", "StudyDescription", "NumberOfStudyRelatedSeries"],
    )
    studies = []
    for item in found:
        modalities = _value(item, "00080061")
        studies.append(
            {
                "study_uid": _value(item, "0020000D"),
                "patient_id": _value(item, "00100020"),
                "date": _value(item, "00080020"),
                "time": _value(item, "00080030"),
                "modalities": [modalities] if isinstance(modalities, str) else modalities or [],
                "description": _value(item, "00081030"),
                "n_series": _value(item, "00201206"),
            }
        )
    if modality:  # servers differ on ModalitiesInStudy matching: check it here
        studies = [s for s in studies if not s["modalities"] or modality in s["modalities"]]
    return sorted(studies, key=lambda s: (str(s["date"]), str(s["study_uid"])))


def search_series(
    pacs: PacsConfig | _Client | None = None,
    *,
    study_uid: str,
    modality: str | None = None,
) -> list[dict[str, Any]]:
    """QIDO-RS series search in one study: series_uid, modality, number, description,
    n_instances."""
    client = _as_client(pacs)
    filters = {"Modality": modality} if modality else {}
    found = client.call(
        "series search",
        "search_for_series",
        study_instance_uid=study_uid,
        search_filters=filters,
        fields=["SeriesDescription", "NumberOfSeriesRelatedInstances"],
    )
    series = [
        {
            "study_uid": study_uid,
            "series_uid": _value(item, "0020000E"),
            "modality": _value(item, "00080060"),
            "number": _value(item, "00200011"),
            "description": _value(item, "0008103E"),
            "n_instances": _value(item, "00201209"),
        }
        for item in found
    ]
    if modality:
        series = [s for s in series if s["modality"] == modality]
    return sorted(series, key=lambda s: (s["number"] is None, s["number"] or 0, s["series_uid"]))


_UID = re.compile(r"[0-9]+(\.[0-9]+)*")


def _file_name_uid(uid: Any, tag: str) -> str:
    """``uid`` if it is a valid DICOM UID (digits and dots), safe as a file name; else refuse.

    Folder and file names of pulled series come from UIDs (given or sent by the server): a
    value such as ``../x`` must not write outside the output folder.
    """
    text = str(uid or "")
    if len(text) > 64 or not _UID.fullmatch(text):
        raise PacsError(
            "not a valid DICOM UID (digits and dots, at most 64 characters)",
            tag=tag,
            value=text[:80],
            hint="check the UID given, or the data the server sent",
        )
    return text


def pull_series(
    pacs: PacsConfig | _Client | None = None,
    *,
    study_uid: str,
    series_uid: str,
    out_dir: str | os.PathLike,
) -> list[Path]:
    """WADO-RS retrieve one series into ``out_dir/<series UID>/<SOP UID>.dcm`` (atomic writes).

    Instances already present (same file name) are kept, so an interrupted pull resumes.
    """
    client = _as_client(pacs)
    folder = Path(out_dir) / _file_name_uid(series_uid, "SeriesInstanceUID")
    datasets = client.call(
        "series retrieve",
        "retrieve_series",
        study_instance_uid=study_uid,
        series_instance_uid=series_uid,
    )
    if not datasets:
        raise PacsError(
            "the series has no instances on the server", tag="SeriesInstanceUID", value=series_uid
        )
    paths = []
    for ds in datasets:
        target = folder / f"{_file_name_uid(ds.get('SOPInstanceUID'), 'SOPInstanceUID')}.dcm"
        if not target.exists():
            write_object(ds, target)
        paths.append(target)
    return sorted(paths)


def pull_study(
    pacs: PacsConfig | _Client | None = None,
    *,
    study_uid: str,
    out_dir: str | os.PathLike,
    modalities: Sequence[str] | None = None,
) -> dict[str, list[Path]]:
    """Pull every series of a study (optionally only some modalities): series UID -> files."""
    client = _as_client(pacs)
    result = {}
    for series in search_series(client, study_uid=study_uid):
        if modalities and series["modality"] not in modalities:
            continue
        result[series["series_uid"]] = pull_series(
            client, study_uid=study_uid, series_uid=series["series_uid"], out_dir=out_dir
        )
    return result


def push(
    pacs: PacsConfig | _Client | None,
    files: Iterable[str | os.PathLike | pydicom.Dataset],
) -> int:
    """STOW-RS store DICOM files (e.g. SEG and SR); returns the number of instances stored."""
    client = _as_client(pacs)
    datasets = []
    for item in files:
        if isinstance(item, pydicom.Dataset):
            datasets.append(item)
            continue
        try:
            datasets.append(pydicom.dcmread(item))
        except (OSError, pydicom.errors.InvalidDicomError) as exc:
            raise PacsError(f"cannot read DICOM file to push: {exc}", path=item) from None
    if not datasets:
        raise PacsError("nothing to push", tag="files")
    by_study: dict[str, list[pydicom.Dataset]] = {}
    for ds in datasets:
        by_study.setdefault(str(ds.StudyInstanceUID), []).append(ds)
    stored = 0
    for study_uid, group in by_study.items():
        response = client.call(
            "store", "store_instances", datasets=group, study_instance_uid=study_uid
        )
        failed = response.get("FailedSOPSequence") if response is not None else None
        if failed:
            raise PacsError(
                "the server refused some instances",
                tag="FailedSOPSequence",
                value=[str(item.ReferencedSOPInstanceUID) for item in failed],
            )
        stored += len(group)
    return stored


def _no_bulk_data(*_args: Any) -> bytes:
    return b""


def find_derived(
    pacs: PacsConfig | _Client | None = None,
    *,
    study_uid: str,
    referenced_series_uid: str | None = None,
    modalities: Sequence[str] = ("SEG", "SR"),
) -> list[dict[str, Any]]:
    """Find SEG / SR series of a study (QIDO), with the series their instances reference.

    Each result is a series dict (see :func:`search_series`) plus ``referenced_series``: the
    SeriesInstanceUIDs listed in the instances' ReferencedSeriesSequence /
    CurrentRequestedProcedureEvidenceSequence (read with WADO-RS metadata). With
    ``referenced_series_uid`` only series referencing it are returned.
    """
    client = _as_client(pacs)
    results = []
    for modality in modalities:
        for series in search_series(client, study_uid=study_uid, modality=modality):
            metadata = client.call(
                "metadata retrieve",
                "retrieve_series_metadata",
                study_instance_uid=study_uid,
                series_instance_uid=series["series_uid"],
            )
            referenced = set()
            for item in metadata:
                ds = pydicom.Dataset.from_json(item, bulk_data_uri_handler=_no_bulk_data)
                for ref in ds.get("ReferencedSeriesSequence", []):
                    referenced.add(str(ref.SeriesInstanceUID))
                for study in ds.get("CurrentRequestedProcedureEvidenceSequence", []):
                    for ref in study.get("ReferencedSeriesSequence", []):
                        referenced.add(str(ref.SeriesInstanceUID))
            if referenced_series_uid and referenced_series_uid not in referenced:
                continue
            results.append({**series, "referenced_series": sorted(referenced)})
    return results
