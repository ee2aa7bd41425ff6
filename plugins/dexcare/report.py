"""The vocabulary of DexCare's All Visits Reports API, validated before anything goes over the wire.

Validation lives here, not in the hook, so operators can reject a bad template at render time and the
sandbox can answer with the same rules the client checks.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from dexcare.exceptions import DexCareValidationError

REPORTS_PATH = "/api/8/reporting/allvisitsreport"
DEFAULT_LOOKBACK_DAYS = 10


class ReportType(StrEnum):
    VIRTUAL = "virtual"
    RETAIL = "retail"
    PROVIDER_BOOKING = "provider_booking"

    @classmethod
    def parse(cls, value: str | ReportType | None) -> ReportType:
        try:
            return cls(str(value).strip().lower())
        except ValueError:
            allowed = ", ".join(t.value for t in cls)
            raise DexCareValidationError(
                f"Unknown DexCare report type {value!r}: use one of {allowed}."
            ) from None


class ReportStatus(StrEnum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def in_progress(self) -> bool:
        return self in (ReportStatus.QUEUED, ReportStatus.RUNNING)

    @property
    def reusable(self) -> bool:
        """A report in this state can still deliver data, so a retried task may keep waiting on it."""
        return self in (ReportStatus.QUEUED, ReportStatus.RUNNING, ReportStatus.SUCCEEDED)


def validate_report_id(report_id: Any) -> str:
    """Return the canonical lower-case GUID, so a bad id fails here and never reaches DexCare."""
    text = str(report_id).strip() if report_id is not None else ""
    try:
        parsed = uuid.UUID(text)
    except ValueError:
        parsed = None
    if parsed is None or str(parsed) != text.lower():
        raise DexCareValidationError(
            f"Report id {text!r} is not a GUID (expected 8-4-4-4-12 hex digits, e.g. "
            "'3f2b8c1e-4d5a-4b6c-9e7f-0a1b2c3d4e5f'): pass the id returned by start_report."
        )
    return str(parsed)


def parse_iso_date(value: Any, name: str) -> dt.date | None:
    """Accept a date, a datetime (its calendar date) or an ISO 'YYYY-MM-DD' string; None stays None."""
    if value is None or value == "":
        return None
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    text = str(value).strip()
    for parse in (dt.date.fromisoformat, lambda t: dt.datetime.fromisoformat(t).date()):
        try:
            return parse(text)
        except ValueError:
            continue
    raise DexCareValidationError(f"{name} {value!r} is not an ISO date: use YYYY-MM-DD, e.g. 2026-11-24.")


@dataclass(frozen=True)
class ReportRequest:
    """What one report covers; pushed to XCom so downstream tasks know the window they load."""

    report_type: ReportType
    start_date: dt.date | None = None
    end_date: dt.date | None = None

    @classmethod
    def build(
        cls,
        report_type: str | ReportType | None,
        start_date: str | dt.date | None = None,
        end_date: str | dt.date | None = None,
    ) -> ReportRequest:
        rtype = ReportType.parse(report_type)
        start = parse_iso_date(start_date, "start_date")
        end = parse_iso_date(end_date, "end_date")
        if (start is None) != (end is None):
            raise DexCareValidationError(
                "Give both start_date and end_date or neither (DexCare then reports the past "
                f"{DEFAULT_LOOKBACK_DAYS} days); got start_date={start_date!r}, end_date={end_date!r}."
            )
        if start is not None and end is not None and start > end:
            raise DexCareValidationError(
                f"start_date {start.isoformat()} is after end_date {end.isoformat()}: swap them."
            )
        return cls(rtype, start, end)

    def to_payload(self) -> dict[str, str]:
        payload = {"type": self.report_type.value}
        if self.start_date is not None and self.end_date is not None:
            payload["startDate"] = self.start_date.isoformat()
            payload["endDate"] = self.end_date.isoformat()
        return payload

    def to_dict(self) -> dict[str, str | None]:
        """Plain JSON values, fit for XCom and trigger kwargs."""
        return {
            "report_type": self.report_type.value,
            "start_date": self.start_date.isoformat() if self.start_date else None,
            "end_date": self.end_date.isoformat() if self.end_date else None,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ReportRequest:
        return cls.build(data["report_type"], data.get("start_date"), data.get("end_date"))

    def describe_window(self) -> str:
        """The window as every log line and message names it (``2026-11-14..2026-11-24``): the hook's, when it
        starts a report, and the wait's, so one report reads the same wherever it is mentioned."""
        if self.start_date is None:
            return "DexCare's default window"
        return f"{self.start_date.isoformat()}..{self.end_date.isoformat() if self.end_date else ''}"

