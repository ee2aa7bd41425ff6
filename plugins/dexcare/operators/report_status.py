"""DexCareReportStatusOperator: one status check, for ad hoc runs and for branching on a report's state.

It does not wait and does not fail on FAILED or CANCELLED: deciding what those mean is the caller's job
(a branch, or the sensor with its grace period).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from dexcare.report import validate_report_id
from dexcare.task_context import is_literal

if TYPE_CHECKING:
    from airflow.sdk import Context


class DexCareReportStatusOperator(BaseOperator):
    """Return the report's current status as a string: QUEUED, RUNNING, SUCCEEDED, FAILED or CANCELLED.

    :param report_id: the report GUID (templated; ``start.output`` works).
    :param dexcare_conn_id: the DexCare connection.
    """

    template_fields: Sequence[str] = ("report_id", "dexcare_conn_id")
    ui_color = "#d9ecf7"

    def __init__(self, *, report_id: str, dexcare_conn_id: str = "dexcare_default", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.report_id = report_id
        self.dexcare_conn_id = dexcare_conn_id
        if is_literal(report_id):
            validate_report_id(report_id)

    def execute(self, context: Context) -> str:
        from dexcare.hooks.dexcare import DexCareHook

        report_id = validate_report_id(self.report_id)
        status = DexCareHook(self.dexcare_conn_id).get_report_status(report_id)
        self.log.info("DexCare report %s is %s.", report_id, status.value)
        return status.value
