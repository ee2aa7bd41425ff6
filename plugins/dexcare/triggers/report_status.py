"""DexCareReportStatusTrigger: waits for a DexCare report in the triggerer, so a waiting task holds no worker slot.

Trigger code only ever reads (GET status). A trigger is re-run from its stored kwargs when the triggerer
restarts, so a POST here could start a second report (apache/airflow#67945); resubmitting is the sensor's job
on the worker. The stored kwargs carry an absolute deadline, so a restart continues the same clock.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from dexcare import exceptions
from dexcare.exceptions import DexCareError, DexCareFinalError, DexCareValidationError
from dexcare.hooks.dexcare import DexCareHook
from dexcare.hooks.retry import RetryPolicy
from dexcare.redaction import redact
from dexcare.report import ReportStatus, validate_report_id
from dexcare.validation import MAX_EPOCH, conn_id, count, seconds
from dexcare.wait import messages
from dexcare.wait.tracking import ReportTracker, Verdict

CLASSPATH = "dexcare.triggers.report_status.DexCareReportStatusTrigger"

#: Every event carries exactly these keys; ``validate_event`` rejects anything else.
EVENT_KEYS = frozenset({"status", "report_id", "report_status", "status_since", "message", "error", "polls"})
#: ``status`` of an event: success (SUCCEEDED), failed (FAILED past the grace period), cancelled,
#: timeout (deadline passed before a final status), error (403, 404, unknown status, error budget spent...).
EVENT_STATUSES = frozenset({"success", "failed", "cancelled", "timeout", "error"})


class DexCareReportStatusTrigger(BaseTrigger):
    """Poll one report until it is final, the deadline passes, or an error makes waiting pointless.

    :param report_id: the GUID returned by ``start_report``.
    :param deadline: absolute wall-clock deadline, epoch seconds, computed once on the worker.
    :param dexcare_conn_id: the DexCare connection.
    :param poll_interval: seconds between status checks while the report is in progress.
    :param failed_grace_period: seconds a FAILED status must last before it counts (DexCare auto-retries).
    :param max_consecutive_errors: failed status requests (5xx, 429, connection, timeout) in a row before
        giving up; the count resets after any good poll.
    :param consecutive_errors: failed status requests in a row the worker already counted before deferring.
    :param last_status: the status the worker saw last (so the grace period continues across the handoff).
    :param last_status_since: epoch seconds since ``last_status`` has held.
    :param request_timeout: read timeout per request (default: the connection's, or 60 s).
    :param backoff_initial: first backoff delay after a transient error, seconds (jittered, doubled).
    :param backoff_max: ceiling of one backoff delay; a Retry-After hint can exceed it.
    """

    def __init__(
        self,
        report_id: str,
        deadline: float,
        dexcare_conn_id: str = "dexcare_default",
        poll_interval: float = 60.0,
        failed_grace_period: float = 600.0,
        max_consecutive_errors: int = 10,
        consecutive_errors: int = 0,
        last_status: str | None = None,
        last_status_since: float | None = None,
        request_timeout: float | None = None,
        backoff_initial: float = 1.0,
        backoff_max: float = 60.0,
    ) -> None:
        super().__init__()
        # Validated here, on the worker, before the task defers: a bad value must not reach the database
        # or fail later inside the triggerer.
        # The same rules as the sensor's (``dexcare.validation``, which ``dexcare.wait.settings`` applies), so
        # nothing it accepted is refused here.
        self.report_id = validate_report_id(report_id)
        self.deadline = seconds("deadline", deadline, positive=True, maximum=MAX_EPOCH)
        self.dexcare_conn_id = conn_id("dexcare_conn_id", dexcare_conn_id)
        self.poll_interval = seconds("poll_interval", poll_interval, positive=True)
        self.failed_grace_period = seconds("failed_grace_period", failed_grace_period)
        self.max_consecutive_errors = count("max_consecutive_errors", max_consecutive_errors, least=1)
        self.consecutive_errors = count("consecutive_errors", consecutive_errors, least=0)
        if self.consecutive_errors >= self.max_consecutive_errors:
            raise DexCareValidationError(
                f"consecutive_errors ({consecutive_errors}) must be below max_consecutive_errors "
                f"({max_consecutive_errors}): the wait should already have failed."
            )
        if last_status is not None:
            last_status = ReportStatus(last_status).value
        self.last_status = last_status
        self.last_status_since = (
            None
            if last_status_since is None
            else seconds("last_status_since", last_status_since, positive=True, maximum=MAX_EPOCH)
        )
        self.request_timeout = (
            None if request_timeout is None else seconds("request_timeout", request_timeout, positive=True)
        )
        self.backoff_initial = seconds("backoff_initial", backoff_initial)
        self.backoff_max = seconds("backoff_max", backoff_max, positive=True)
        if self.backoff_max < self.backoff_initial:
            raise DexCareValidationError("backoff_max must be >= backoff_initial.")

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            CLASSPATH,
            {
                "report_id": self.report_id,
                "deadline": self.deadline,
                "dexcare_conn_id": self.dexcare_conn_id,
                "poll_interval": self.poll_interval,
                "failed_grace_period": self.failed_grace_period,
                "max_consecutive_errors": self.max_consecutive_errors,
                "consecutive_errors": self.consecutive_errors,
                "last_status": self.last_status,
                "last_status_since": self.last_status_since,
                "request_timeout": self.request_timeout,
                "backoff_initial": self.backoff_initial,
                "backoff_max": self.backoff_max,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        tracker = ReportTracker(
            self.report_id, self.failed_grace_period, self.last_status, self.last_status_since
        )
        self._polls = 0
        try:
            event = await self._wait(tracker)
        except Exception as exc:
            # Anything unexpected (connection missing, bad connection fields) ends the wait with a reason
            # instead of killing the trigger with a traceback the task never sees.
            event = self._event(
                "error",
                tracker,
                messages.stopped(self.report_id, messages.error_text(exc)),
                error=type(exc).__name__,
            )
        self.log.info(event["message"])
        yield TriggerEvent(event)

    async def _wait(self, tracker: ReportTracker) -> dict[str, Any]:
        policy = RetryPolicy(
            max_attempts=self.max_consecutive_errors,
            initial_delay=self.backoff_initial,
            max_delay=self.backoff_max,
        )
        hook = DexCareHook(self.dexcare_conn_id, timeout=self.request_timeout)
        failures = self.consecutive_errors
        self.log.info(
            messages.waiting_in_trigger(self.report_id, self.poll_interval, self.failed_grace_period, self.deadline)
        )
        if self.last_status is not None or failures:
            # The worker checked the status just before deferring. Checking again at once only repeats that
            # request, and an event fired within seconds of the deferral can reach Airflow 3.3's scheduler
            # before it has seen the worker exit, which then fails the resumed task ("finished with state
            # success, but the task instance's state attribute is queued"). So the first check waits a poll,
            # or the backoff when the worker's check failed.
            now = time.time()
            pause = min(policy.backoff(failures), self.deadline - now) if failures else self._pause(tracker, now)
            await asyncio.sleep(max(pause, 0.0))
        async with hook.async_session() as session:
            while True:
                try:
                    status = await session.get_report_status(self.report_id)
                except DexCareError as exc:
                    if not exc.retryable:
                        return self._event(
                            "error", tracker, messages.stopped(self.report_id, str(exc)), error=type(exc).__name__
                        )
                    failures += 1
                    if failures >= self.max_consecutive_errors:
                        return self._event(
                            "error",
                            tracker,
                            messages.failed_checks_in_trigger(self.report_id, failures, exc),
                            error=type(exc).__name__,
                        )
                    now = time.time()
                    if now >= self.deadline:
                        return self._timeout(tracker, f" The last status check failed: {exc}")
                    delay = policy.backoff(failures, getattr(exc, "retry_after", None))
                    self.log.warning(
                        messages.failed_check_in_trigger(
                            failures, self.max_consecutive_errors, self.report_id, exc, delay
                        )
                    )
                    await asyncio.sleep(min(delay, self.deadline - now))
                    continue

                self._polls += 1
                if failures:
                    self.log.info(messages.answered_again(failures))
                    failures = 0
                now = time.time()
                verdict, change = tracker.observe(status, now)
                if change:
                    self.log.info(change)
                if verdict == Verdict.SUCCEEDED:
                    return self._event("success", tracker, messages.succeeded(self.report_id))
                if verdict == Verdict.CANCELLED:
                    return self._event("cancelled", tracker, messages.cancelled(self.report_id))
                if verdict == Verdict.FAILED:
                    return self._event(
                        "failed",
                        tracker,
                        messages.stayed_failed(self.report_id, tracker.failed_for(now), self.failed_grace_period),
                    )
                if now >= self.deadline:
                    return self._timeout(tracker, "")
                await asyncio.sleep(max(self._pause(tracker, now), 0.0))

    def _pause(self, tracker: ReportTracker, now: float) -> float:
        """Sleep to the next poll, but wake for the end of a grace period or for one last look at the
        deadline, so a report that finishes just in time is not failed."""
        pause = min(self.poll_interval, self.deadline - now)
        grace_left = tracker.grace_remaining(now)
        if grace_left is not None:
            pause = min(pause, grace_left)
        return pause

    def _timeout(self, tracker: ReportTracker, detail: str) -> dict[str, Any]:
        seconds_in_status = tracker.time_in_status(time.time())
        message = messages.timed_out(self.report_id, tracker.status, seconds_in_status, self.deadline, detail)
        return self._event("timeout", tracker, message)

    def _event(self, status: str, tracker: ReportTracker, message: str, *, error: str | None = None) -> dict:
        """The event, stored in the metadata database and logged: its message redacted whatever it quotes."""
        return {
            "status": status,
            "report_id": self.report_id,
            "report_status": tracker.status,
            "status_since": tracker.status_since,
            "message": redact(message),
            "error": error,
            "polls": getattr(self, "_polls", 0),
        }


def validate_event(event: Any, expected_report_id: str) -> dict[str, Any]:
    """Reject a missing, malformed or foreign event: guessing here could report a failed load as success."""
    if event is None:
        raise DexCareError(
            f"The wait for DexCare report {expected_report_id} resumed without a trigger event; refusing to "
            "guess its outcome."
        )
    if not isinstance(event, dict):
        raise DexCareError(f"Trigger event must be a dict, got {type(event).__name__}.")
    keys = set(event)
    if keys != EVENT_KEYS:
        missing, unknown = sorted(EVENT_KEYS - keys), sorted(keys - EVENT_KEYS)
        raise DexCareError(f"Malformed trigger event: missing keys {missing}, unknown keys {unknown}.")
    if event["status"] not in EVENT_STATUSES:
        raise DexCareError(
            f"Unknown trigger event status {event['status']!r}; expected one of {sorted(EVENT_STATUSES)}."
        )
    if event["report_id"] != expected_report_id:
        raise DexCareError(
            f"Trigger event is about report {event['report_id']!r}, but the task waits for "
            f"{expected_report_id!r}."
        )
    if event["report_status"] is not None and event["report_status"] not in {s.value for s in ReportStatus}:
        raise DexCareError(f"Trigger event has unknown report_status {event['report_status']!r}.")
    if not isinstance(event["message"], str):
        raise DexCareError("Trigger event message must be a string.")
    if event["status"] == "success" and event["report_status"] != ReportStatus.SUCCEEDED:
        raise DexCareError(
            f"Trigger event says success but the report status is {event['report_status']!r}."
        )
    return event


def event_error(event: dict[str, Any]) -> DexCareError:
    """The error an ``error`` event reports, to raise on the worker as it would have been raised there: one that
    no try can fix (a 403, 404 or 407, an unknown status, a bad connection field) fails the task without
    Airflow's task retries; one left over from transient errors (the error budget spent) is retried."""
    named = getattr(exceptions, event["error"] or "", None)
    final = isinstance(named, type) and issubclass(named, DexCareFinalError)
    return (DexCareFinalError if final else DexCareError)(event["message"])
