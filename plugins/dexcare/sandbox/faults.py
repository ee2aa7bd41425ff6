"""Failure modes the sandbox can be told to produce, so retry, resume and sensor logic meet real failures.

Faults are counted, not probabilistic: "the next 2 status calls answer 429" makes a test assert exact
behaviour (how many retries, whether a POST was repeated) instead of hoping for a random failure.

Two families exist. Request faults (``http_500``, ``http_429``, ``slow``, ``drop_download``) are consumed
by matching HTTP requests. Report faults (``fail_then_retry``, ``fail``, ``cancel``, ``expire``) are
consumed by the next matching report started, and shape that report's whole life.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from dexcare.report import ReportType

__all__ = [
    "ENDPOINTS",
    "REPORT_FAULTS",
    "REQUEST_FAULTS",
    "Fault",
    "FaultBook",
    "FaultKind",
    "parse_fault_spec",
]


class FaultKind(StrEnum):
    HTTP_500 = "http_500"
    HTTP_429 = "http_429"
    SLOW = "slow"
    DROP_DOWNLOAD = "drop_download"
    FAIL_THEN_RETRY = "fail_then_retry"
    FAIL = "fail"
    CANCEL = "cancel"
    EXPIRE = "expire"


ENDPOINTS = ("start", "status", "download")
REQUEST_FAULTS = frozenset({FaultKind.HTTP_500, FaultKind.HTTP_429, FaultKind.SLOW, FaultKind.DROP_DOWNLOAD})
REPORT_FAULTS = frozenset({FaultKind.FAIL_THEN_RETRY, FaultKind.FAIL, FaultKind.CANCEL, FaultKind.EXPIRE})
# Outcome faults decide how a report ends; at most one applies to a report (expire combines with any).
OUTCOME_FAULTS = frozenset({FaultKind.FAIL_THEN_RETRY, FaultKind.FAIL, FaultKind.CANCEL})

# Parameters each kind accepts, with defaults; anything else is a typo worth an error, not a silent no-op.
PARAMS: dict[FaultKind, dict[str, float]] = {
    FaultKind.HTTP_500: {},
    FaultKind.HTTP_429: {"retry_after": 1.0},
    FaultKind.SLOW: {"delay": 1.0},
    FaultKind.DROP_DOWNLOAD: {},
    FaultKind.FAIL_THEN_RETRY: {"failed_seconds": 0.5},
    FaultKind.FAIL: {},
    FaultKind.CANCEL: {},
    FaultKind.EXPIRE: {"expire_seconds": 1.0},
}


@dataclass
class Fault:
    """One injected fault; ``remaining`` counts down as requests or reports consume it."""

    kind: FaultKind
    remaining: int = 1
    report_type: ReportType | None = None
    endpoint: str | None = None
    params: dict[str, float] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        kind: str,
        *,
        count: int = 1,
        report_type: str | None = None,
        endpoint: str | None = None,
        **params: Any,
    ) -> Fault:
        """Validate everything up front, so a typo in a test or a CLI flag fails loudly at injection."""
        try:
            fkind = FaultKind(str(kind).strip().lower())
        except ValueError:
            allowed = ", ".join(k.value for k in FaultKind)
            raise ValueError(f"Unknown fault kind {kind!r}: use one of {allowed}.") from None
        try:
            count = int(count)
        except (TypeError, ValueError):
            raise ValueError(f"Fault count must be an integer, got {count!r}.") from None
        if count < 1:
            raise ValueError(f"Fault count must be >= 1, got {count}.")
        rtype = ReportType.parse(report_type) if report_type not in (None, "") else None
        endpoint = endpoint or None
        if endpoint is not None and endpoint not in ENDPOINTS:
            raise ValueError(f"Unknown endpoint {endpoint!r}: use one of {', '.join(ENDPOINTS)} or none.")
        if fkind is FaultKind.DROP_DOWNLOAD and endpoint not in (None, "download"):
            raise ValueError("drop_download only applies to the download endpoint.")
        if fkind in REPORT_FAULTS and endpoint not in (None, "start"):
            raise ValueError(f"{fkind.value} shapes reports as they start: endpoint must be 'start' or none.")
        defaults = PARAMS[fkind]
        unknown = set(params) - set(defaults)
        if unknown:
            accepted = ", ".join(defaults) or "none"
            raise ValueError(f"Fault {fkind.value} has no parameter {', '.join(sorted(unknown))} "
                             f"(accepted: {accepted}).")
        values: dict[str, float] = {}
        for name, default in defaults.items():
            raw = params.get(name, default)
            try:
                value = float(raw)
            except (TypeError, ValueError):
                raise ValueError(f"Fault parameter {name} must be a number of seconds, got {raw!r}.") from None
            if value < 0:
                raise ValueError(f"Fault parameter {name} must be >= 0, got {value}.")
            values[name] = value
        return cls(fkind, count, rtype, endpoint, values)

    def matches(self, endpoint: str, report_type: ReportType | None) -> bool:
        if self.endpoint is not None and self.endpoint != endpoint:
            return False
        return self.report_type is None or self.report_type == report_type

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "count": self.remaining,
            "report_type": self.report_type.value if self.report_type else None,
            "endpoint": self.endpoint,
            **self.params,
        }


def parse_fault_spec(spec: str) -> dict[str, Any]:
    """``KIND[:key=value,...]`` (the CLI's ``--fault``) into keyword arguments for ``Fault.build``."""
    kind, _, rest = spec.strip().partition(":")
    kwargs: dict[str, Any] = {"kind": kind.strip()}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"Bad fault option {item!r} in {spec!r}: use key=value.")
        kwargs[key.strip()] = value.strip()
    Fault.build(**kwargs)  # validate now, so the CLI refuses a bad flag before listening
    return kwargs


class FaultBook:
    """The pending faults of one server; every method is atomic, since handlers run in many threads."""

    def __init__(self, specs: Iterable[str | Mapping[str, Any]] | None = None) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        for spec in specs or ():
            kwargs = parse_fault_spec(spec) if isinstance(spec, str) else dict(spec)
            self.add(Fault.build(**kwargs))

    def add(self, fault: Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def clear(self) -> int:
        with self._lock:
            count = len(self._faults)
            self._faults.clear()
            return count

    def pending(self) -> list[Fault]:
        with self._lock:
            return [Fault(f.kind, f.remaining, f.report_type, f.endpoint, dict(f.params)) for f in self._faults]

    def take(self, kinds: Iterable[FaultKind], endpoint: str, report_type: ReportType | None) -> Fault | None:
        """Consume one use of the oldest pending fault of ``kinds`` that matches, if any."""
        wanted = frozenset(kinds)
        with self._lock:
            for fault in self._faults:
                if fault.kind in wanted and fault.matches(endpoint, report_type):
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._faults.remove(fault)
                    return fault
        return None
