"""DexCareReportSensor: waits for a DexCare report to SUCCEED, requesting it again if DexCare loses it.

After one status check on the worker, a deferrable sensor moves the wait to the triggerer, where it costs no
worker slot. Whatever the mode, the same rules apply (``dexcare.wait.tracking``): FAILED is final only after a
grace period, CANCELLED at once, and a final failure can be resubmitted up to ``max_resubmits`` times. A
resubmission is a POST, so it always happens here on the worker, never in the trigger.

A try that Airflow loses after its wait has ended. Airflow's scheduler can fail a deferred try whose trigger
has already fired, on the stale "success" of the worker's exit at deferral (apache/airflow#71580, #67287,
#72716); Airflow's task retry then starts a fresh try. The resume never runs, so no worker sees the trigger's
event, and a trigger has no task state store to record it in: a design that relied on the event being
recorded would fail exactly then. So a new try relies on DexCare instead: it continues with the report the
wait was on (kept in the task state store) and checks its status first, before it resubmits anything or
looks at a deadline or a budget; a report already SUCCEEDED ends the wait at once, whatever earlier tries
spent. What the earlier try saved (``dexcare.wait.state.Stage``: deferred and never resumed, or resumed with the
trigger's success) only explains, in the new try's log, what happened and what to set against it.

This module holds the Airflow entry points and the deferral only: the settings and their rules are in
``dexcare.wait.settings``, the state that outlives a process in ``dexcare.wait.state``, and what the wait
says in ``dexcare.wait.messages``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, NoReturn

from airflow.providers.common.compat.sdk import conf
from airflow.sdk import BaseSensorOperator, PokeReturnValue

from dexcare import metrics
from dexcare.compat import AirflowSensorTimeout, missing_task_state_store, task_state_store
from dexcare.exceptions import DexCareError, DexCareReportFailedError, DexCareValidationError
from dexcare.operators.base import REPORT_WINDOW_FIELDS, ReportWindowMixin
from dexcare.report import ReportRequest, ReportStatus, validate_report_id
from dexcare.task_context import (
    XCOM_REPORT_ID,
    XCOM_REPORT_IDS,
    XCOM_REQUEST,
    is_literal,
    resolve_request,
    upstream_task_id,
)
from dexcare.triggers.report_status import DexCareReportStatusTrigger, event_error, validate_event
from dexcare.wait import messages
from dexcare.wait.settings import WaitSettings
from dexcare.wait.state import STATE_KEY, EarlierTry, Stage, WaitState
from dexcare.wait.tracking import Verdict

if TYPE_CHECKING:
    import datetime as dt

    from airflow.sdk import Context, XComArg

    from dexcare.hooks.dexcare import DexCareHook

__all__ = ["STATE_KEY", "DexCareReportFailedError", "DexCareReportSensor"]

DEFAULT_TIMEOUT = 24 * 3600.0


class DexCareReportSensor(ReportWindowMixin, BaseSensorOperator):
    """Wait until a DexCare report SUCCEEDS and return the id of the report that succeeded.

    Pushes XCom ``report_id`` (the id being waited on now), ``report_ids`` (every id, oldest first) and
    ``request`` (type and window, when known) before it waits, and again after each resubmission.

    :param report_id: the report GUID (templated; usually ``start.output``).
    :param dexcare_conn_id: the DexCare connection.
    :param deferrable: wait in the triggerer after the first check. False: poke in ``mode="poke"`` or
        ``"reschedule"``. Defaults to Airflow's ``[operators] default_deferrable`` (False unless set), like the
        official providers' sensors.
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
        *REPORT_WINDOW_FIELDS,
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
        report_id: str | XComArg,
        dexcare_conn_id: str = "dexcare_default",
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
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
        super().__init__(
            report_type=report_type,
            report_start_date=report_start_date,
            report_end_date=report_end_date,
            dexcare_conn_id=dexcare_conn_id,
            **kwargs,
        )
        self.report_id = report_id
        self.deferrable = deferrable
        self.poll_interval: Any = poll_interval if isinstance(poll_interval, str) else self.poke_interval
        self.wait_timeout: Any = timeout if isinstance(timeout, str) else self.timeout
        self.failed_grace_period: Any = failed_grace_period
        self.max_resubmits: Any = max_resubmits
        self.max_consecutive_errors: Any = max_consecutive_errors
        self.request_task_id = request_task_id or upstream_task_id(report_id)
        settings = (poll_interval, timeout, failed_grace_period, max_resubmits, max_consecutive_errors, dexcare_conn_id)
        if all(not isinstance(v, str) or is_literal(v) for v in settings):
            self._apply_settings()  # fail when the DAG is parsed, not when the report is hours old
        if is_literal(report_id):
            validate_report_id(report_id)
        self._check_window_when_parsed()
        self._wait: WaitState | None = None
        self._request: ReportRequest | None = None
        self._hooks: dict[int, DexCareHook] = {}

    def _apply_settings(self) -> WaitSettings:
        """Turn the (rendered) settings into numbers, checked before any request is made, by the same rules
        the trigger applies to them (``dexcare.wait.settings``)."""
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
        return settings

    # --- entry points ------------------------------------------------------------------------------------

    def execute(self, context: Context) -> Any:
        self._begin(context)
        if not self.deferrable:
            return super().execute(context)
        first = self.poke(context)
        if first:
            return first.xcom_value
        self._defer()

    def poke(self, context: Context) -> PokeReturnValue:
        if self._wait is None:  # a subclass or test calling poke() directly
            self._begin(context)
        wait = self._wait
        assert wait is not None
        # Only the first status check of a try can say what became of the try before it.
        earlier, wait.earlier = wait.earlier, None
        status = self._check(wait)
        if status is None:
            return PokeReturnValue(False)
        now = time.time()
        verdict, change = wait.observe(status, now)
        if change:
            self.log.info(change)
        if verdict == Verdict.SUCCEEDED:
            if earlier is not None:
                self._explain_earlier_try(wait, earlier)
            return PokeReturnValue(True, self._succeeded(wait))
        if verdict != Verdict.WAIT:
            self._resubmit_or_fail(context, wait, wait.how_it_ended(verdict, now))
        return PokeReturnValue(False)

    def execute_complete(
        self, context: Context, event: dict[str, Any] | None = None, state: dict[str, Any] | None = None
    ) -> str:
        """Resume after the trigger: succeed, resubmit and wait again, or fail with the trigger's reason."""
        self._apply_settings()
        wait = self._wait = WaitState.resume(context, state)
        self._request = self._resolve_request(context)
        event = validate_event(event, wait.report_id)
        self.log.info(messages.trigger_finished(event["polls"], event["message"]))
        wait.observed_in_trigger(event)
        outcome = event["status"]
        if outcome == "success":
            return self._succeeded(wait)
        if outcome == "timeout":
            raise AirflowSensorTimeout(f"{event['message']} {messages.timeout_advice(float(self.timeout))}")
        if outcome == "error":
            raise event_error(event)
        self._resubmit_or_fail(context, wait, wait.how_it_ended(outcome, time.time()))
        self._defer()

    # --- the wait ------------------------------------------------------------------------------------------

    def _begin(self, context: Context) -> None:
        """Check everything, then pick up where an earlier reschedule or try left off, and tell XCom what we
        wait on. Nothing here sends a request."""
        settings = self._apply_settings()
        origin = validate_report_id(self.report_id)
        self._request = self._resolve_request(context)
        if self.max_resubmits and self._request is None:
            raise DexCareValidationError(
                f"max_resubmits={self.max_resubmits} needs the report's type and window: pass "
                "report_id=<start task>.output, request_task_id=<start task>, or "
                "report_type/report_start_date/report_end_date."
            )
        store = task_state_store(context)
        if store is None and not self.deferrable and self.reschedule:
            raise DexCareValidationError(
                missing_task_state_store(
                    "mode='reschedule' would forget the FAILED grace period and the resubmissions between "
                    "pokes, so it is refused: use deferrable=True or mode='poke'."
                )
            )
        if store is None and self.max_resubmits:
            self.log.info(
                missing_task_state_store(
                    f"should this try end early, the next one waits on report {origin} again, not on a report "
                    "this try requested again."
                )
            )
        self._wait = WaitState.begin(
            context, origin, timeout=settings.timeout, grace_period=settings.failed_grace_period, log=self.log
        )
        self._push(context)

    def _check(self, wait: WaitState) -> ReportStatus | None:
        """One status request; a transient failure counts against max_consecutive_errors and returns None."""
        try:
            # One request per check: max_consecutive_errors counts failed status requests, here and in the
            # trigger, so the hook must not retry on its own.
            return self._hook(max_attempts=1).get_report_status(wait.report_id)
        except DexCareError as exc:
            if not exc.retryable:
                raise
            errors = wait.check_failed()
            if errors >= self.max_consecutive_errors:
                raise DexCareError(messages.failed_checks_on_worker(wait.report_id, errors, exc)) from exc
            self.log.warning(messages.failed_check_on_worker(errors, self.max_consecutive_errors, wait.report_id, exc))
            return None

    def _explain_earlier_try(self, wait: WaitState, earlier: EarlierTry) -> None:
        """This try's first check found the report SUCCEEDED: say why an earlier try did not end with it,
        unless that try was still checking on the worker (then it failed or was killed there, and said so)."""
        if earlier.stage == Stage.WORKER:
            return
        nothing_kept = (
            ""
            if earlier.stage is not None
            else missing_task_state_store(f"nothing of try {earlier.try_number} was kept to tell for sure.")
        )
        self.log.warning(
            messages.lost_after_its_wait_ended(
                wait.try_number, earlier.try_number, wait.report_id, earlier.stage, nothing_kept
            )
        )

    def _succeeded(self, wait: WaitState) -> str:
        wait.succeeded()
        if self._request is not None and wait.waited is not None:
            metrics.report_waited(self._request.report_type.value, wait.waited)
        self.log.info(
            # Resubmissions of the whole chain, earlier tries included (``resubmits`` is this try's budget).
            messages.summary(self._request, wait.report_id, wait.waited, wait.report_ids, len(wait.report_ids) - 1)
        )
        return wait.report_id

    def _resubmit_or_fail(self, context: Context, wait: WaitState, how_it_ended: str) -> None:
        """Request the same report again from the worker, or fail with what happened and what to do."""
        request = self._request
        if wait.resubmits >= self.max_resubmits or request is None:
            raise DexCareReportFailedError(
                messages.give_up(
                    request, wait.report_id, how_it_ended, wait.report_ids, wait.resubmits, self.max_resubmits
                )
            )
        if time.time() >= wait.deadline:
            raise AirflowSensorTimeout(messages.deadline_passed(wait.report_id, how_it_ended, wait.deadline))
        new_id = self._hook().start_report(request.report_type.value, request.start_date, request.end_date)
        old_id = wait.report_id
        wait.resubmitted(new_id)
        self.log.warning(
            messages.resubmitted(wait.resubmits, self.max_resubmits, old_id, how_it_ended, request, new_id)
        )
        self._push(context)

    def _defer(self) -> NoReturn:
        wait = self._wait
        assert wait is not None
        trigger = DexCareReportStatusTrigger(
            **wait.handoff(),
            dexcare_conn_id=self.dexcare_conn_id,
            poll_interval=self.poll_interval,
            failed_grace_period=self.failed_grace_period,
            max_consecutive_errors=self.max_consecutive_errors,
        )
        # Airflow's own deferral timeout is only a backstop for a dead triggerer: the trigger itself looks
        # one last time at the deadline and reports "timeout" with the last status it saw.
        backstop = max(wait.deadline - time.time(), 0.0) + self.poll_interval + 60.0
        self.log.info(messages.deferring(wait.report_id, wait.deadline))
        wait.deferring()
        self.defer(
            trigger=trigger,
            method_name="execute_complete",
            # The wait state saved itself; the store, not the kwargs, carries it: dags test drops resume kwargs.
            kwargs={},
            timeout=timedelta(seconds=backstop),
        )

    # --- plumbing ------------------------------------------------------------------------------------------

    def _resolve_request(self, context: Context) -> ReportRequest | None:
        return resolve_request(
            context,
            report_type=self.report_type,
            start_date=self.report_start_date,
            end_date=self.report_end_date,
            request_task_id=self.request_task_id,
        )

    def _push(self, context: Context) -> None:
        assert self._wait is not None
        ti = context["ti"]
        ti.xcom_push(key=XCOM_REPORT_ID, value=self._wait.report_id)
        ti.xcom_push(key=XCOM_REPORT_IDS, value=list(self._wait.report_ids))
        if self._request is not None:
            ti.xcom_push(key=XCOM_REQUEST, value=self._request.to_dict())

    def _hook(self, max_attempts: int = 5) -> DexCareHook:
        """One hook per kind of call for the whole run: a poking sensor reads the connection once and keeps
        its session (and its keep-alive connection) from poke to poke."""
        from dexcare.hooks.dexcare import DexCareHook

        hook = self._hooks.get(max_attempts)
        if hook is None:
            hook = self._hooks[max_attempts] = DexCareHook(self.dexcare_conn_id, max_attempts=max_attempts)
        return hook
