"""The sensor's wait on a DexCare report, for a caller that can simply block: a notebook, ``DexCareHook.get_df``.

The rules are the sensor's and the trigger's, not a copy of them: :class:`dexcare.wait.tracking.ReportTracker`
decides what a status means (FAILED is provisional for ``failed_grace_period`` because DexCare retries a failed
report on its own; CANCELLED ends the wait at once), :mod:`dexcare.wait.settings` checks the settings, and
:mod:`dexcare.wait.messages` words every line. What a blocking caller does not need is left out: no task state store
(the wait lives and dies with the call) and no deferral. A report that ends FAILED or CANCELLED is requested
again up to ``max_resubmits`` times, with the same type and window, as the sensor does.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from dexcare.exceptions import DexCareError, DexCareReportFailedError
from dexcare.wait import messages
from dexcare.wait.settings import WaitSettings
from dexcare.wait.tracking import ReportTracker, Verdict

if TYPE_CHECKING:
    from dexcare.compat import TaskLog
    from dexcare.hooks.dexcare import DexCareHook
    from dexcare.report import ReportRequest

DEFAULT_POLL_INTERVAL = 15.0
DEFAULT_TIMEOUT = 3600.0
DEFAULT_FAILED_GRACE_PERIOD = 600.0


@dataclass(frozen=True)
class BlockingWait:
    """How long and how patiently to wait; checked by the sensor's rules when built (:meth:`build`)."""

    poll_interval: float = DEFAULT_POLL_INTERVAL
    timeout: float = DEFAULT_TIMEOUT
    failed_grace_period: float = DEFAULT_FAILED_GRACE_PERIOD
    max_resubmits: int = 0
    max_consecutive_errors: int = 10

    @classmethod
    def build(cls, **values: float | int) -> BlockingWait:
        """Refuses a bad setting before any report is requested."""
        return cls(**{name: WaitSettings.check(name, value) for name, value in values.items()})

    def wait(self, hook: DexCareHook, report_id: str, request: ReportRequest | None, log: TaskLog) -> str:
        """Block until ``report_id`` (or a resubmission of ``request``) SUCCEEDS; returns the id that did."""
        started = time.time()
        deadline = started + self.timeout
        report_ids = [report_id]
        tracker = ReportTracker(report_id, self.failed_grace_period)
        errors = 0
        while True:
            try:
                status = hook.get_report_status(report_id)
            except DexCareError as exc:
                if not exc.retryable:
                    raise
                errors += 1
                if errors >= self.max_consecutive_errors:
                    raise DexCareError(messages.failed_checks_on_worker(report_id, errors, exc)) from exc
                log.warning(messages.failed_check_on_worker(errors, self.max_consecutive_errors, report_id, exc))
                self._sleep(tracker, deadline, report_id)
                continue
            errors = 0
            now = time.time()
            verdict, change = tracker.observe(status, now)
            if change:
                log.info(change)
            if verdict == Verdict.SUCCEEDED:
                log.info(messages.summary(request, report_id, now - started, report_ids, len(report_ids) - 1))
                return report_id
            if verdict != Verdict.WAIT:
                how_it_ended = messages.ending(verdict == Verdict.CANCELLED, tracker.failed_for(now))
                resubmits = len(report_ids) - 1
                if resubmits >= self.max_resubmits or request is None:
                    raise DexCareReportFailedError(
                        messages.give_up(request, report_id, how_it_ended, report_ids, resubmits, self.max_resubmits)
                    )
                if now >= deadline:
                    raise DexCareReportFailedError(messages.deadline_passed(report_id, how_it_ended, deadline))
                new_id = hook.start_report(request.report_type.value, request.start_date, request.end_date)
                log.warning(messages.resubmitted(resubmits + 1, self.max_resubmits, report_id, how_it_ended, request,
                                                 new_id))
                report_id = new_id
                report_ids.append(new_id)
                tracker = ReportTracker(new_id, self.failed_grace_period)
                continue
            self._sleep(tracker, deadline, report_id)

    def _sleep(self, tracker: ReportTracker, deadline: float, report_id: str) -> None:
        """To the next poll, but wake for the end of a grace period and look once more at the deadline (as the
        trigger does), so a report that finishes just in time is not given up on."""
        now = time.time()
        if now >= deadline:
            detail = (f" The report may still finish: read it later by its id ({report_id}), or raise timeout "
                      f"(it was {messages.format_seconds(self.timeout)}).")
            raise DexCareError(messages.timed_out(report_id, tracker.status, tracker.time_in_status(now), deadline,
                                                  detail))
        pause = min(self.poll_interval, deadline - now)
        grace_left = tracker.grace_remaining(now)
        if grace_left is not None:
            pause = min(pause, grace_left)
        time.sleep(max(pause, 0.0))
