"""The settings of a wait on a DexCare report, and the one set of rules that checks them.

The sensor and the trigger must agree on what a valid setting is: when they did not, a value the sensor
accepted (``timeout="inf"``) was refused by the trigger only when the task deferred, after the report had
been started. So both call the functions below. The sensor also accepts what a DAG author writes (a
``timedelta``, or a rendered template such as ``"600"``) and turns it into the plain value the trigger
takes; the trigger takes plain JSON values only, because its kwargs are stored in the metadata database.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable
from dataclasses import dataclass
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


_RULES: dict[str, Callable[[Any], Any]] = {
    "poll_interval": lambda value: given_seconds("poll_interval", value, positive=True),
    "timeout": lambda value: given_seconds("timeout", value),
    "failed_grace_period": lambda value: given_seconds("failed_grace_period", value),
    "max_resubmits": lambda value: given_count("max_resubmits", value, least=0),
    "max_consecutive_errors": lambda value: given_count("max_consecutive_errors", value, least=1),
    "dexcare_conn_id": lambda value: conn_id("dexcare_conn_id", value),
}


@dataclass(frozen=True)
class WaitSettings:
    """The sensor's settings once checked: what the worker uses and what it hands to the trigger."""

    poll_interval: float
    timeout: float
    failed_grace_period: float
    max_resubmits: int
    max_consecutive_errors: int
    dexcare_conn_id: str

    @staticmethod
    def check(name: str, value: Any) -> Any:
        """One setting, e.g. when the DAG is parsed and only some settings are plain values yet."""
        return _RULES[name](value)

    @classmethod
    def parse(cls, **values: Any) -> WaitSettings:
        """All settings, from numbers, timedeltas or rendered templates such as ``"600"``."""
        missing = sorted(set(_RULES) - set(values))
        unknown = sorted(set(values) - set(_RULES))
        if missing or unknown:
            raise TypeError(f"WaitSettings.parse: missing {missing}, unknown {unknown}")
        return cls(**{name: rule(values[name]) for name, rule in _RULES.items()})
