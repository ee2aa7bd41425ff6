"""DexCareStartReportOperator: asks DexCare for a report, and on a task retry keeps the one already asked for.

A report can take hours to build; starting a second one because the worker died after the first POST wastes
DexCare capacity and can hit its rate limit. So the id goes into Airflow 3.3's task state store (which,
unlike XCom, survives into the next try) as soon as DexCare returns it, and a retry reuses that report while
it can still deliver data.

``ResumableJobMixin`` is not used: it assumes one operator that submits *and* polls, and treats a lookup
error as fatal, while here the sensor polls and a 404 (expired report) must mean "start a new one".
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from dexcare.compat import missing_task_state_store, task_state_store
from dexcare.exceptions import DexCareNotFoundError
from dexcare.operators.base import REPORT_WINDOW_FIELDS, ReportWindowMixin
from dexcare.report import ReportRequest
from dexcare.task_context import XCOM_REQUEST
from dexcare.wait.messages import format_seconds

if TYPE_CHECKING:
    import datetime as dt

    from airflow.sdk import Context

    from dexcare.hooks.dexcare import DexCareHook

#: Task state store key; renaming it breaks reuse for tasks retried across an upgrade.
STATE_KEY = "dexcare_report"


class DexCareStartReportOperator(ReportWindowMixin, BaseOperator):
    """Start a DexCare All Visits Report and return its id.

    Also pushes XCom ``request`` = ``{"report_type", "start_date", "end_date"}`` so downstream tasks know
    what the report covers. Dates are ``YYYY-MM-DD`` (templated); give both or neither (DexCare then
    reports its default window of the past 10 days).

    :param report_type: ``virtual``, ``retail`` or ``provider_booking``.
    :param report_start_date: first day of the window.
    :param report_end_date: last day of the window.
    :param dexcare_conn_id: the DexCare connection.
    :param reuse_previous: on a retry, reuse the report an earlier try of this task started if it is still
        QUEUED, RUNNING or SUCCEEDED and was asked for with the same type and window. Set False to always
        start a new report.
    """

    template_fields: Sequence[str] = REPORT_WINDOW_FIELDS
    ui_color = "#d9ecf7"

    def __init__(
        self,
        *,
        report_type: str,
        report_start_date: str | dt.date | None = None,
        report_end_date: str | dt.date | None = None,
        dexcare_conn_id: str = "dexcare_default",
        reuse_previous: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            report_type=report_type,
            report_start_date=report_start_date,
            report_end_date=report_end_date,
            dexcare_conn_id=dexcare_conn_id,
            **kwargs,
        )
        self.reuse_previous = reuse_previous
        self._check_window_when_parsed(required=True)

    def execute(self, context: Context) -> str:
        from dexcare.hooks.dexcare import DexCareHook

        request = ReportRequest.build(self.report_type, self.report_start_date, self.report_end_date)
        hook = DexCareHook(self.dexcare_conn_id)
        store = task_state_store(context)
        report_id = self._previous_report(store, request, hook) if self.reuse_previous else None
        if report_id is None:
            report_id = hook.start_report(
                request.report_type.value, request.start_date, request.end_date
            )
            if store is not None:
                store.set(STATE_KEY, {"report_id": report_id, "request": request.to_dict(), "at": time.time()})
        context["ti"].xcom_push(key=XCOM_REQUEST, value=request.to_dict())
        return report_id

    def _previous_report(self, store: Any, request: ReportRequest, hook: DexCareHook) -> str | None:
        """The id an earlier try started, if that report can still deliver what this try asks for."""
        if store is None:
            self.log.info(missing_task_state_store("a retry of this task starts a new report, not reusing this one."))
            return None
        previous = store.get(STATE_KEY)
        if not isinstance(previous, dict) or "report_id" not in previous:
            return None
        report_id = str(previous["report_id"])
        if previous.get("request") != request.to_dict():
            self.log.info(
                "An earlier try started report %s for %s; this try asks for %s, so a new report is started.",
                report_id,
                previous.get("request"),
                request.to_dict(),
            )
            return None
        try:
            status = hook.get_report_status(report_id)
        except DexCareNotFoundError:
            self.log.info("Report %s from an earlier try is gone (404): starting a new report.", report_id)
            return None
        age = time.time() - float(previous.get("at") or time.time())
        if status.reusable:
            self.log.info(
                "Reusing report %s started by an earlier try %s ago: it is %s.",
                report_id,
                format_seconds(age),
                status.value,
            )
            return report_id
        self.log.warning(
            "Report %s from an earlier try is %s: starting a new report for the same request.",
            report_id,
            status.value,
        )
        return None
