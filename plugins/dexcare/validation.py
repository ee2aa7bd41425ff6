"""Plain-value checks shared by every layer: a number of seconds, a count, a connection id.

They were written for the wait's settings, and the hook's transport needs the same rule for a connection's
``timeout``; kept here, at the root, so the hook layer reads them without importing the wait above it. Each
error names the setting and the value the user wrote.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

from dexcare.exceptions import DexCareValidationError

#: Longest duration any setting may have. A wait of more than ten years is a typo, and an unbounded one
#: overflows the deadline arithmetic (``timedelta``, ``datetime``) only when the task defers.
MAX_SECONDS = 10 * 365 * 24 * 3600.0
#: Latest wall-clock time a deadline may have: the end of the year 9999, the last one ``datetime`` knows.
MAX_EPOCH = dt.datetime(9999, 12, 31, tzinfo=dt.UTC).timestamp()


def seconds(
    name: str, value: Any, *, positive: bool = False, maximum: float = MAX_SECONDS, given: Any = None
) -> float:
    """A plain, finite number of seconds; ``bool`` is an ``int`` in Python but never a duration.

    ``given`` is what the user wrote, when ``value`` was converted from it, so the message shows that.
    """
    shown = value if given is None else given
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise DexCareValidationError(f"{name} must be a finite number of seconds, got {shown!r}.")
    if value < 0 or (positive and value == 0):
        raise DexCareValidationError(f"{name} must be {'>' if positive else '>='} 0 seconds, got {shown!r}.")
    if value > maximum:
        raise DexCareValidationError(f"{name} must be at most {maximum:.0f} seconds, got {shown!r}.")
    return float(value)


def count(name: str, value: Any, *, least: int) -> int:
    """A plain integer; ``2.5`` or ``True`` is a mistake, not a count."""
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise DexCareValidationError(f"{name} must be an integer >= {least}, got {value!r}.")
    return value


def conn_id(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise DexCareValidationError(f"{name} must be a non-empty connection id, got {value!r}.")
    return value


def given_seconds(name: str, value: Any, *, positive: bool = False) -> float:
    """``seconds`` for what a DAG author writes: also a ``timedelta`` or a rendered template (``"600"``)."""
    number = value
    if isinstance(value, dt.timedelta):
        number = value.total_seconds()
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise DexCareValidationError(f"{name} must be a finite number of seconds, got {value!r}.") from None
    return seconds(name, number, positive=positive, given=value)


def given_count(name: str, value: Any, *, least: int) -> int:
    """``count`` for what a DAG author writes: also a rendered template such as ``"2"``."""
    if isinstance(value, str):
        text = value.strip()
        value = int(text) if text.lstrip("-").isdigit() else text
    return count(name, value, least=least)
