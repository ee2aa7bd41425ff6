"""Small pieces the DexCare operators and the sensor share: XCom keys, the request, per-task state.

The request (type and window) travels with the report id through XCom so that every task downstream of the
start operator knows what data it holds, and so the sensor can ask for the same report again.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from dexcare.exceptions import DexCareValidationError
from dexcare.report import ReportRequest

if TYPE_CHECKING:
    from airflow.sdk import Context

#: XCom key of the request ``{"report_type", "start_date", "end_date"}`` pushed by the start operator and
#: forwarded by the sensor.
XCOM_REQUEST = "request"
#: XCom key of the report id the sensor is waiting on right now (changes on resubmission).
XCOM_REPORT_ID = "report_id"
#: XCom key of every report id the sensor waited on, oldest first.
XCOM_REPORT_IDS = "report_ids"


def is_literal(value: Any) -> bool:
    """True when ``value`` is fixed at parse time, so it can be validated before the DAG ever runs."""
    if value is None or isinstance(value, dt.date):
        return True
    return isinstance(value, str) and "{{" not in value and "{%" not in value


def upstream_task_id(value: Any) -> str | None:
    """The task behind ``some_task.output``, so the request can be pulled from the same task as the id."""
    from airflow.sdk.definitions.xcom_arg import PlainXComArg

    if isinstance(value, PlainXComArg):
        return value.operator.task_id
    return None


def resolve_request(
    context: Context,
    *,
    report_type: Any,
    start_date: Any,
    end_date: Any,
    request_task_id: str | None,
) -> ReportRequest | None:
    """Explicit arguments win; otherwise the ``request`` XCom of ``request_task_id``; otherwise None."""
    if report_type is not None:
        return ReportRequest.build(report_type, start_date, end_date)
    if start_date is not None or end_date is not None:
        raise DexCareValidationError("start_date/end_date were given without report_type: give all three.")
    if request_task_id is None:
        return None
    pulled = context["ti"].xcom_pull(task_ids=request_task_id, key=XCOM_REQUEST)
    if pulled is None:
        return None
    if not isinstance(pulled, dict) or "report_type" not in pulled:
        raise DexCareValidationError(
            f"XCom {XCOM_REQUEST!r} of task {request_task_id!r} is not a DexCare request: {pulled!r}."
        )
    return ReportRequest.from_dict(pulled)


def run_end_date(context: Mapping[str, Any]) -> dt.date:
    """The day a run's report window ends: its data interval end, else its logical date.

    Manual runs in Airflow 3 can have neither; then the run's ``run_after``, and outside Airflow today (UTC).
    """
    for key in ("data_interval_end", "logical_date"):
        value = context.get(key)
        if value is not None:
            return value.date() if isinstance(value, dt.datetime) else value
    dag_run = context.get("dag_run")
    for attr in ("data_interval_end", "logical_date", "run_after"):
        value = getattr(dag_run, attr, None)
        if value is not None:
            return value.date() if isinstance(value, dt.datetime) else value
    return dt.datetime.now(dt.UTC).date()


def try_number(context: Context) -> int:
    ti = context.get("ti")
    return int(getattr(ti, "try_number", 0) or 0)


def refuse_task_dates_as_window(kwargs: dict[str, Any]) -> None:
    """``start_date``/``end_date`` belong to Airflow's BaseOperator (when the *task* may run).

    The report window is ``report_start_date``/``report_end_date``; a date-only value or a string here is
    almost certainly a window meant for DexCare, and letting it through would silently reschedule the task.
    """
    for name in ("start_date", "end_date"):
        value = kwargs.get(name)
        if isinstance(value, str) or (isinstance(value, dt.date) and not isinstance(value, dt.datetime)):
            raise DexCareValidationError(
                f"{name}={value!r} is the Airflow task's own {name}; for the DexCare report window use "
                f"report_{name}."
            )
