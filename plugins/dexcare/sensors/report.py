"""DexCareReportSensor: waits for a DexCare report to SUCCEED, requesting it again if DexCare loses it.

Deferrable by default: after one status check on the worker, the wait moves to the triggerer and costs no
worker slot. Whatever the mode, the same rules apply (``dexcare.tracking``): FAILED is final only after a
grace period, CANCELLED at once, and a final failure can be resubmitted up to ``max_resubmits`` times. A
resubmission is a POST, so it always happens here on the worker, never in the trigger.

State that must outlive one process (current report id, resubmissions used, deadline, last status and
since when) lives in the trigger's resume kwargs and in Airflow 3.3's task state store, which keeps it
across reschedules and tries (XCom is cleared at each reschedule).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue
from airflow.sdk.exceptions import AirflowSensorTimeout

from dexcare.exceptions import DexCareError, DexCareReportFailedError, DexCareValidationError
from dexcare.report import ReportRequest, validate_report_id
from dexcare.task_support import (
    XCOM_REPORT_ID,
    XCOM_REPORT_IDS,
    XCOM_REQUEST,
    is_literal,
    refuse_task_dates_as_window,
    resolve_request,
    state_store,
    try_number,
    upstream_task_id,
)
from dexcare.tracking import ReportTracker, Verdict, format_seconds
from dexcare.triggers.report_status import DexCareReportStatusTrigger, format_deadline, validate_event
from dexcare.wait_settings import WaitSettings

if TYPE_CHECKING:
    import datetime as dt

    from airflow.sdk import Context

    from dexcare.hooks.dexcare import DexCareHook

#: Task state store key of the sensor's ``WaitState``.
STATE_KEY = "dexcare_wait"
DEFAULT_TIMEOUT = 24 * 3600.0


@dataclass
class WaitState:
    """Everything the wait needs to continue in another process; plain values only."""

    origin: str
    try_number: int
    report_id: str
    deadline: float
    tracker: dict[str, Any]
    report_ids: list[str] = field(default_factory=list)
    resubmits: int = 0
    errors: int = 0
    started: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WaitState:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


class DexCareReportSensor(BaseSensorOperator):
    """Wait until a DexCare report SUCCEEDS and return the id of the report that succeeded.

    Pushes XCom ``report_id`` (the id being waited on now), ``report_ids`` (every id, oldest first) and
    ``request`` (type and window, when known) before it waits, and again after each resubmission.

    :param report_id: the report GUID (templated; usually ``start.output``).
    :param dexcare_conn_id: the DexCare connection.
    :param deferrable: wait in the triggerer (default). False: poke in ``mode="poke"`` or ``"reschedule"``.
    :param poll_interval: seconds between status checks (also the poke interval). Default 60.

    ``poll_interval``, ``timeout``, ``failed_grace_period``, ``max_resubmits`` and
    ``max_consecutive_errors`` may be Jinja templates (e.g. ``"{{ params.max_resubmits }}"``); they are
    checked when the DAG is parsed if they are plain values, otherwise after rendering and before any request.

    :param timeout: seconds (or timedelta) from the first check of this try to giving up; it is an absolute
        deadline, so a triggerer restart does not restart the clock. Default 24 hours.
    :param failed_grace_period: seconds a FAILED status must last before it is final; DexCare retries a
        failed report on its own and a return to QUEUED or RUNNING resets the clock. Default 10 minutes.
    :param max_resubmits: how many times a report that ends FAILED or CANCELLED is requested again with
        the same type and window (default 0: fail at once). Counted per task try.
    :param max_consecutive_errors: failed status requests (5xx, 429, connection, timeout) in a row before
        the wait fails, counted across the worker and the triggerer; any good status check resets the count.
    :param report_type: with ``report_start_date``/``report_end_date``, the request to resubmit; by default
        it is pulled from the ``request`` XCom of ``request_task_id``.
    :param report_start_date: first day of the window to resubmit.
    :param report_end_date: last day of the window to resubmit.
    :param request_task_id: task whose XCom ``request`` describes the report; defaults to the task behind
        ``report_id`` when that is ``some_task.output``.
    """

    template_fields: Sequence[str] = (
        "report_id",
        "report_type",
        "report_start_date",
        "report_end_date",
        "dexcare_conn_id",
        "poll_interval",
        "wait_timeout",
        "failed_grace_period",
        "max_resubmits",
        "max_consecutive_errors",
    )
    ui_color = "#c9e4f2"

    def __init__(
        self,
        *,
        report_id: str,
        dexcare_conn_id: str = "dexcare_default",
        deferrable: bool = True,
        poll_interval: float | str | None = None,
        failed_grace_period: float | timedelta | str = 600.0,
        max_resubmits: int | str = 0,
        max_consecutive_errors: int | str = 10,
        report_type: str | None = None,
        report_start_date: str | dt.date | None = None,
        report_end_date: str | dt.date | None = None,
        request_task_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        # poll_interval and timeout may be templates (e.g. from DAG params). BaseSensorOperator coerces
        # poke_interval/timeout to numbers in its constructor, so it gets defaults here and the real values
        # are applied once the templates are rendered (``_apply_settings``).
        timeout = kwargs.pop("timeout", DEFAULT_TIMEOUT)
        if timeout is not None and not isinstance(timeout, str):
            timeout = WaitSettings.check("timeout", timeout)  # before BaseSensorOperator trips over it
        kwargs["timeout"] = DEFAULT_TIMEOUT if isinstance(timeout, str) else timeout
        if poll_interval is not None and not isinstance(poll_interval, str):
            kwargs["poke_interval"] = WaitSettings.check("poll_interval", poll_interval)
        kwargs.setdefault("poke_interval", 60.0)
        refuse_task_dates_as_window(kwargs)
        super().__init__(**kwargs)
        self.report_id = report_id
        self.dexcare_conn_id = dexcare_conn_id
        self.deferrable = deferrable
        self.poll_interval: Any = poll_interval if isinstance(poll_interval, str) else self.poke_interval
        self.wait_timeout: Any = timeout if isinstance(timeout, str) else self.timeout
        self.failed_grace_period: Any = failed_grace_period
        self.max_resubmits: Any = max_resubmits
        self.max_consecutive_errors: Any = max_consecutive_errors
        self.report_type = report_type
        self.report_start_date = report_start_date
        self.report_end_date = report_end_date
        self.request_task_id = request_task_id or upstream_task_id(report_id)
        settings = (poll_interval, timeout, failed_grace_period, max_resubmits, max_consecutive_errors, dexcare_conn_id)
        if all(not isinstance(v, str) or is_literal(v) for v in settings):
            self._apply_settings()  # fail when the DAG is parsed, not when the report is hours old
        if is_literal(report_id):
            validate_report_id(report_id)
        if report_type is not None and all(is_literal(v) for v in (report_type, report_start_date, report_end_date)):
            ReportRequest.build(report_type, report_start_date, report_end_date)
        self._state: WaitState | None = None
        self._request: ReportRequest | None = None

    def _apply_settings(self) -> None:
        """Turn the (rendered) settings into numbers, checked before any request is made, by the same rules
        the trigger applies to them (``dexcare.wait_settings``)."""
        settings = WaitSettings.parse(
            poll_interval=self.poll_interval,
            timeout=self.wait_timeout,
            failed_grace_period=self.failed_grace_period,
            max_resubmits=self.max_resubmits,
            max_consecutive_errors=self.max_consecutive_errors,
            dexcare_conn_id=self.dexcare_conn_id,
        )
        self.poll_interval = self.poke_interval = settings.poll_interval
        self.wait_timeout = self.timeout = settings.timeout
        self.failed_grace_period = settings.failed_grace_period
        self.max_resubmits = settings.max_resubmits
        self.max_consecutive_errors = settings.max_consecutive_errors

    # --- entry points ------------------------------------------------------------------------------------

    def execute(self, context: Context) -> Any:
        self._apply_settings()
        self._prepare(context)
        if not self.deferrable:
            return super().execute(context)
        first = self.poke(context)
        if first:
            return first.xcom_value
        self._defer(context)

    def poke(self, context: Context) -> PokeReturnValue:
        if self._state is None:  # a subclass or test calling poke() directly
            self._apply_settings()
            self._prepare(context)
        state = self._state
        assert state is not None
        tracker = ReportTracker.from_dict(state.tracker)
        try:
            # One request per check: max_consecutive_errors counts failed status requests, here and in the
            # trigger, so the hook must not retry on its own.
            status = self._hook(max_attempts=1).get_report_status(state.report_id)
        except DexCareError as exc:
            if not exc.retryable:
                raise
            state.errors += 1
            self._save(context)
            if state.errors >= self.max_consecutive_errors:
                raise DexCareError(
                    f"Gave up on DexCare report {state.report_id} after {state.errors} failed status checks in "
                    f"a row; the last was {type(exc).__name__}: {exc}"
                ) from exc
            self.log.warning(
                "Status check %d of at most %d in a row failed for report %s: %s",
                state.errors,
                self.max_consecutive_errors,
                state.report_id,
                exc,
            )
            return PokeReturnValue(False)
        changed = state.errors > 0
        state.errors = 0
        now = time.time()
        verdict, message = tracker.observe(status, now)
        if message:
            self.log.info(message)
            changed = True
        state.tracker = tracker.to_dict()
        if verdict == Verdict.SUCCEEDED:
            self._save(context)
            self._log_summary()
            return PokeReturnValue(True, state.report_id)
        if verdict == Verdict.WAIT:
            if changed:
                self._save(context)
            return PokeReturnValue(False)
        ending = (
            "was CANCELLED"
            if verdict == Verdict.CANCELLED
            else f"stayed FAILED for {format_seconds(tracker.failed_for(now))}"
        )
        self._resubmit_or_fail(context, ending)
        return PokeReturnValue(False)

    def execute_complete(
        self, context: Context, event: dict[str, Any] | None = None, state: dict[str, Any] | None = None
    ) -> str:
        """Resume after the trigger: succeed, resubmit and wait again, or fail with the trigger's reason."""
        self._apply_settings()
        if state is None:
            # ``dag.test()`` runs triggers inline and replaces the resume kwargs with the event alone; the
            # copy saved in the task state store before deferring covers that.
            store = state_store(context)
            state = store.get(STATE_KEY) if store is not None else None
        if not isinstance(state, dict):
            raise DexCareError("The sensor resumed without its wait state; refusing to guess the report id.")
        self._state = WaitState.from_dict(state)
        self._request = self._resolve_request(context)
        event = validate_event(event, self._state.report_id)
        self.log.info("Trigger finished after %d status checks: %s", event["polls"], event["message"])
        tracker = ReportTracker(
            event["report_id"], float(self.failed_grace_period), event["report_status"], event["status_since"]
        )
        self._state.tracker = tracker.to_dict()
        status = event["status"]
        if status == "success":
            self._save(context)
            self._log_summary()
            return self._state.report_id
        if status == "timeout":
            raise AirflowSensorTimeout(f"{event['message']} {self._advice_on_timeout()}")
        if status == "error":
            raise DexCareError(event["message"])
        failed_for = format_seconds(tracker.failed_for(time.time()))
        self._resubmit_or_fail(context, "was CANCELLED" if status == "cancelled" else f"stayed FAILED for {failed_for}")
        self._defer(context)

    # --- the wait's state ---------------------------------------------------------------------------------

    def _prepare(self, context: Context) -> None:
        """Validate, then pick up where an earlier reschedule or try left off, and tell XCom what we wait on."""
        origin = validate_report_id(self.report_id)
        self._request = self._resolve_request(context)
        if self.max_resubmits and self._request is None:
            raise DexCareValidationError(
                f"max_resubmits={self.max_resubmits} needs the report's type and window: pass "
                "report_id=<start task>.output, request_task_id=<start task>, or "
                "report_type/report_start_date/report_end_date."
            )
        store = state_store(context)
        if store is None and not self.deferrable and self.reschedule:
            raise DexCareValidationError(
                "mode='reschedule' keeps the FAILED grace period and resubmissions in Airflow 3.3's task state "
                "store, which this Airflow does not have: use deferrable=True or mode='poke'."
            )
        saved = store.get(STATE_KEY) if store is not None else None
        current_try = try_number(context)
        state = WaitState.from_dict(saved) if isinstance(saved, dict) else None
        if state is not None and state.origin != origin:
            state = None
        if state is not None and state.try_number != current_try:
            # A new try keeps waiting on the newest report of the chain, with a fresh deadline and budget.
            self.log.info(
                "An earlier try last waited on report %s (reports so far: %s); this try continues with it.",
                state.report_id,
                ", ".join(state.report_ids),
            )
            state = self._fresh_state(origin, current_try, state.report_id, state.report_ids)
        elif state is not None:
            self.log.info(
                "Continuing the wait on report %s (%d resubmission(s) used, deadline %s).",
                state.report_id,
                state.resubmits,
                format_deadline(state.deadline),
            )
        else:
            state = self._fresh_state(origin, current_try, origin, [origin])
        self._state = state
        self._save(context)
        self._push(context)

    def _log_summary(self) -> None:
        """The last line of the task log: what an on-call engineer needs without scrolling."""
        state = self._state
        assert state is not None
        request = self._request
        what = f"{request.report_type.value} report " if request else "report "
        window = f" for {request.start_date}..{request.end_date}" if request and request.start_date else ""
        waited = format_seconds(time.time() - state.started) if state.started else "an unknown time"
        self.log.info(
            "Summary: DexCare %s%s%s SUCCEEDED after waiting %s; reports tried: %s (%d resubmission(s)).",
            what,
            state.report_id,
            window,
            waited,
            ", ".join(state.report_ids),
            state.resubmits,
        )

    def _fresh_state(self, origin: str, current_try: int, report_id: str, ids: list[str]) -> WaitState:
        return WaitState(
            origin=origin,
            try_number=current_try,
            report_id=report_id,
            deadline=time.time() + float(self.timeout),
            tracker=ReportTracker(report_id, float(self.failed_grace_period)).to_dict(),
            report_ids=list(ids),
            started=time.time(),
        )

    def _resolve_request(self, context: Context) -> ReportRequest | None:
        return resolve_request(
            context,
            report_type=self.report_type,
            start_date=self.report_start_date,
            end_date=self.report_end_date,
            request_task_id=self.request_task_id,
        )

    def _save(self, context: Context) -> None:
        store = state_store(context)
        if store is not None and self._state is not None:
            store.set(STATE_KEY, self._state.to_dict())

    def _push(self, context: Context) -> None:
        assert self._state is not None
        ti = context["ti"]
        ti.xcom_push(key=XCOM_REPORT_ID, value=self._state.report_id)
        ti.xcom_push(key=XCOM_REPORT_IDS, value=list(self._state.report_ids))
        if self._request is not None:
            ti.xcom_push(key=XCOM_REQUEST, value=self._request.to_dict())

    def _hook(self, max_attempts: int = 5) -> DexCareHook:
        from dexcare.hooks.dexcare import DexCareHook

        return DexCareHook(self.dexcare_conn_id, max_attempts=max_attempts)

    # --- resubmission and failure --------------------------------------------------------------------------

    def _resubmit_or_fail(self, context: Context, ending: str) -> None:
        """Request the same report again from the worker, or fail with what happened and what to do."""
        state = self._state
        assert state is not None
        if state.resubmits >= self.max_resubmits or self._request is None:
            raise DexCareReportFailedError(self._give_up_message(ending))
        if time.time() >= state.deadline:
            raise AirflowSensorTimeout(
                f"DexCare report {state.report_id} {ending}, and the deadline "
                f"{format_deadline(state.deadline)} has passed, so it is not requested again."
            )
        request = self._request
        new_id = self._hook().start_report(request.report_type.value, request.start_date, request.end_date)
        state.resubmits += 1
        self.log.warning(
            "Resubmission %d of %d: DexCare report %s %s; requested the same %s report for %s again as %s.",
            state.resubmits,
            self.max_resubmits,
            state.report_id,
            ending,
            request.report_type.value,
            _window(request),
            new_id,
        )
        state.report_id = new_id
        state.report_ids.append(new_id)
        state.tracker = ReportTracker(new_id, float(self.failed_grace_period)).to_dict()
        state.errors = 0
        self._save(context)  # before anything else can fail, so a retry continues on the new report
        self._push(context)

    def _give_up_message(self, ending: str) -> str:
        state = self._state
        assert state is not None
        request = self._request
        what = f"{request.report_type.value} report for {_window(request)}" if request else "report"
        lines = [
            f"DexCare {what} {state.report_id} {ending}.",
            f"Reports tried: {', '.join(state.report_ids)} ({state.resubmits} resubmission(s), "
            f"max_resubmits={self.max_resubmits}).",
            "What to do: ask DexCare support about report "
            f"{state.report_id} (give them the id and the time above) and check whether DexCare is degraded. "
            "Then clear this task: it waits on the newest report again"
            + (
                f" and may request it up to {self.max_resubmits} more time(s)."
                if self.max_resubmits
                else "; set max_resubmits to request a lost report again automatically."
            )
            + " Clearing the start task as well requests a brand-new report.",
        ]
        return " ".join(lines)

    def _advice_on_timeout(self) -> str:
        return (
            f"Timeout was {format_seconds(float(self.timeout))}. The report may still finish: clear this task to "
            "wait again on the same report, or raise timeout if DexCare is just slow today."
        )

    def _defer(self, context: Context) -> None:
        state = self._state
        assert state is not None
        self._save(context)  # the resume kwargs carry it too, but dag.test() drops them
        tracker = ReportTracker.from_dict(state.tracker)
        trigger = DexCareReportStatusTrigger(
            report_id=state.report_id,
            deadline=state.deadline,
            dexcare_conn_id=self.dexcare_conn_id,
            poll_interval=self.poll_interval,
            failed_grace_period=float(self.failed_grace_period),
            max_consecutive_errors=self.max_consecutive_errors,
            consecutive_errors=state.errors,
            last_status=tracker.status,
            last_status_since=tracker.status_since,
        )
        # Airflow's own deferral timeout is only a backstop for a dead triggerer: the trigger itself looks
        # one last time at the deadline and reports "timeout" with the last status it saw.
        backstop = max(state.deadline - time.time(), 0.0) + self.poll_interval + 60.0
        self.log.info(
            "Deferring: waiting on DexCare report %s in the triggerer until %s.",
            state.report_id,
            format_deadline(state.deadline),
        )
        self.defer(
            trigger=trigger,
            method_name="execute_complete",
            kwargs={"state": state.to_dict()},
            timeout=timedelta(seconds=backstop),
        )


def _window(request: ReportRequest | None) -> str:
    if request is None or request.start_date is None:
        return "DexCare's default window"
    return f"{request.start_date.isoformat()}..{request.end_date.isoformat() if request.end_date else ''}"
