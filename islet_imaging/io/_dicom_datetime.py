"""DICOM DA, TM and DT values as :mod:`datetime` objects (PS3.5 §6.2).

Times of one series share the scanner's local clock, so a DT value's UTC offset suffix is
dropped and every result is naive.
"""

from __future__ import annotations

import datetime as dt

__all__ = ["parse_da", "parse_da_tm", "parse_dt", "parse_tm"]


def parse_da(text: str) -> dt.date:
    """A DA value (``YYYYMMDD``; the old ``YYYY.MM.DD`` form too).

    >>> parse_da("20240131")
    datetime.date(2024, 1, 31)

    Raises
    ------
    ValueError
        If ``text`` is not a valid date.
    """
    text = str(text).strip().replace(".", "")
    return dt.date(int(text[0:4]), int(text[4:6]), int(text[6:8]))


def parse_tm(text: str) -> dt.time:
    """A TM value (``HH[MM[SS[.FFFFFF]]]``; the old ``HH:MM:SS`` form too).

    A leap second (``SS`` = 60, allowed by DICOM) becomes 59.

    >>> parse_tm("101530.25")
    datetime.time(10, 15, 30, 250000)

    Raises
    ------
    ValueError
        If ``text`` is not a valid time.
    """
    text = str(text).strip().replace(":", "")
    main, _, frac = text.partition(".")
    hour = int(main[0:2])
    minute = int(main[2:4]) if len(main) >= 4 else 0
    second = int(main[4:6]) if len(main) >= 6 else 0
    micro = int((frac + "000000")[:6]) if frac else 0
    if second == 60:
        second = 59
    return dt.time(hour, minute, second, micro)


def parse_dt(text: str) -> dt.datetime:
    """A DT value (``YYYYMMDD[HHMMSS[.FFFFFF]][&ZZXX]``), its UTC offset dropped.

    >>> parse_dt("20240131101530+0100")
    datetime.datetime(2024, 1, 31, 10, 15, 30)
    """
    text = str(text).strip()
    for sign in "+-":
        if sign in text[8:]:
            text = text[: 8 + text[8:].index(sign)]
    date = parse_da(text[:8])
    time = parse_tm(text[8:]) if len(text) > 8 else dt.time()
    return dt.datetime.combine(date, time)


def parse_da_tm(date: str, time: str) -> dt.datetime:
    """A DA and a TM value (e.g. ``AcquisitionDate`` and ``AcquisitionTime``) as one datetime.

    >>> parse_da_tm("20240131", "1015")
    datetime.datetime(2024, 1, 31, 10, 15)
    """
    return dt.datetime.combine(parse_da(date), parse_tm(time))
