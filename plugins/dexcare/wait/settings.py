"""The settings of a wait on a DexCare report, and the one set of rules that checks them.

The sensor and the trigger must agree on what a valid setting is: when they did not, a value the sensor
accepted (``timeout="inf"``) was refused by the trigger only when the task deferred, after the report had
been started. So both apply the rules below, made of the value checks in :mod:`dexcare.validation`. The
sensor also accepts what a DAG author writes (a ``timedelta``, or a rendered template such as ``"600"``) and
turns it into the plain value the trigger takes; the trigger takes plain JSON values only, because its kwargs
are stored in the metadata database.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dexcare.validation import conn_id, given_count, given_seconds

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
