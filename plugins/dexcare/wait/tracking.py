"""How a wait on one DexCare report decides what a status means, shared by the trigger and the poking sensor.

DexCare's FAILED is not always final: DexCare retries a failed report on its own, and the report goes back
to QUEUED. So FAILED only counts once it has lasted ``failed_grace_period`` seconds, and any return to
QUEUED or RUNNING resets that clock. Keeping the rule in one pure class (plain values in, plain values out,
no I/O) means the deferrable and the non-deferrable paths cannot drift apart, and its state fits in trigger
kwargs and in the task state store.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from dexcare.report import ReportStatus
from dexcare.wait import messages


class Verdict(StrEnum):
    """What the caller should do after one observation."""

    WAIT = "wait"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass
class ReportTracker:
    """The last status seen for ``report_id`` and since when; ``to_dict``/``from_dict`` for persistence.

    ``status_since`` is wall-clock epoch seconds (not monotonic) because the state crosses processes:
    worker -> triggerer -> worker, and a rescheduled sensor resumes on another machine.
    """

    report_id: str
    failed_grace_period: float
    status: str | None = None
    status_since: float | None = None

    def observe(self, status: ReportStatus, now: float) -> tuple[Verdict, str | None]:
        """Record one status; return the verdict and, on a state change, the line to log."""
        message = None
        previous = self.status
        if previous != status.value:
            if previous is None or self.status_since is None:
                message = messages.first_status(self.report_id, status.value)
            else:
                message = messages.status_change(self.report_id, previous, status.value, now - self.status_since)
                if previous == ReportStatus.FAILED and status.in_progress:
                    message += messages.RETRYING_ON_ITS_OWN
            if status == ReportStatus.FAILED:
                message += messages.failed_is_provisional(self.failed_grace_period)
            self.status = status.value
            self.status_since = now
        if status == ReportStatus.SUCCEEDED:
            return Verdict.SUCCEEDED, message
        if status == ReportStatus.CANCELLED:
            return Verdict.CANCELLED, message
        if status == ReportStatus.FAILED and self.failed_for(now) >= self.failed_grace_period:
            return Verdict.FAILED, message
        return Verdict.WAIT, message

    def failed_for(self, now: float) -> float:
        """Seconds the report has been FAILED without interruption (0 when it is not FAILED)."""
        if self.status != ReportStatus.FAILED or self.status_since is None:
            return 0.0
        return max(now - self.status_since, 0.0)

    def grace_remaining(self, now: float) -> float | None:
        """Seconds until a FAILED report becomes final, so a poller can check again exactly then."""
        if self.status != ReportStatus.FAILED:
            return None
        return max(self.failed_grace_period - self.failed_for(now), 0.0)

    def time_in_status(self, now: float) -> float:
        return 0.0 if self.status_since is None else max(now - self.status_since, 0.0)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ReportTracker:
        return cls(
            report_id=str(data["report_id"]),
            failed_grace_period=float(data["failed_grace_period"]),
            status=data.get("status"),
            status_since=data.get("status_since"),
        )
