"""The report window every DexCare task that names a report takes: one block of arguments, written once.

The start operator, the download operator and the sensor all take ``report_type``, ``report_start_date``,
``report_end_date`` and ``dexcare_conn_id``, template them, refuse Airflow's own ``start_date``/``end_date`` as a
window (a DAG author who meant the report's window would silently reschedule the task), and check a window
written as plain values when the DAG is parsed, not hours later when the task runs. Written three times, the
three had begun to differ; here they cannot.

A mixin, not a base operator, because the sensor is a ``BaseSensorOperator`` and the others are
``BaseOperator``s (the pattern of Amazon's ``AwsBaseOperator``/``aws_template_fields`` and Databricks' mixins).
Each task keeps its own signature, so its documented parameters and Airflow's checks of mapped arguments
(``.partial()``/``.expand_kwargs()``, which read the task's own ``__init__``) are unchanged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from dexcare.report import ReportRequest
from dexcare.task_context import is_literal, refuse_task_dates_as_window

if TYPE_CHECKING:
    import datetime as dt

    from airflow.sdk import BaseOperator

    # What the mixin is mixed into, for the type checker: its ``super().__init__`` is the operator's.
    _Operator = BaseOperator
else:
    _Operator = object

#: The window's template fields, in the order every task lists them (placed among the task's own fields).
REPORT_WINDOW_FIELDS: tuple[str, ...] = ("report_type", "report_start_date", "report_end_date", "dexcare_conn_id")


class ReportWindowMixin(_Operator):
    """Takes the report window's arguments off ``kwargs`` and passes the rest to the operator class after it.

    ``report_type`` may be None where the window can come from XCom instead (download, sensor); the start
    operator requires it, so it always checks a literal window (:meth:`_check_window_when_parsed`).
    """

    report_type: str | None
    report_start_date: str | dt.date | None
    report_end_date: str | dt.date | None
    dexcare_conn_id: str

    def __init__(
        self,
        *,
        report_type: str | None = None,
        report_start_date: str | dt.date | None = None,
        report_end_date: str | dt.date | None = None,
        dexcare_conn_id: str = "dexcare_default",
        **kwargs: Any,
    ) -> None:
        refuse_task_dates_as_window(kwargs)
        super().__init__(**kwargs)
        self.report_type = report_type
        self.report_start_date = report_start_date
        self.report_end_date = report_end_date
        self.dexcare_conn_id = dexcare_conn_id

    def _check_window_when_parsed(self, *, required: bool = False) -> None:
        """A window written as plain values fails when the DAG is parsed, with the message the task would give.

        Without ``required``, no ``report_type`` means "take the window from XCom", checked when the task runs.
        """
        window = (self.report_type, self.report_start_date, self.report_end_date)
        if (required or self.report_type is not None) and all(is_literal(v) for v in window):
            # ``None`` where the type is required is refused by ``build`` with the message the task would give.
            ReportRequest.build(cast("str", self.report_type), self.report_start_date, self.report_end_date)
