"""DexCareDownloadReportOperator: puts a finished report's CSV somewhere and returns where, never the data.

XCom holds a location and a checksum, not the payload (the HTTP provider's trigger puts whole bodies in the
metadata database). Where the file goes is decided by :mod:`dexcare.storage`: the ``destination`` given, else
the deployment's ``[dexcare] report_storage`` (s3://, gs://, abfs:// or a shared volume, so a multi-worker
deployment works without editing DAGs), else a private local directory per DAG run, which only works when
the loading task runs on the same machine.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from dexcare import metrics
from dexcare.csv_records import DEFAULT_KEY
from dexcare.exceptions import DexCareDownloadReportError, DexCareValidationError
from dexcare.operators.base import REPORT_WINDOW_FIELDS, ReportWindowMixin
from dexcare.report import ReportRequest, ReportStatus, ReportType, validate_report_id
from dexcare.storage import ReportLocation, file_location, report_file_name, run_directory
from dexcare.task_context import is_literal, resolve_request, upstream_task_id

if TYPE_CHECKING:
    import datetime as dt

    from airflow.providers.openlineage.extractors import OperatorLineage
    from airflow.sdk import Context, XComArg


class DexCareDownloadReportOperator(ReportWindowMixin, BaseOperator):
    """Stream a SUCCEEDED report's CSV to ``destination`` and return what the load step needs.

    Returns the XCom form of the hand-off record (:meth:`dexcare.handoff.ReportHandoff.to_xcom`): ``{"version",
    "uri", "bytes", "sha256", "rows", "header", "endpoint", "report_id", "report_type", "start_date",
    "end_date"}``: ``header`` is the CSV's header fields and ``endpoint`` the DexCare base URL, which the load's
    OpenLineage facets name the report by (:mod:`dexcare.lineage`).

    :param report_id: the report GUID (templated; ``sensor.output`` is the id that succeeded).
    :param destination: a path or URI (templated): ``s3://conn_id@bucket/prefix/``, ``file:///shared/dir/``
        (percent-decoded), a bare path (literal). Ending in ``/`` means a directory, and the file is named after
        the report; otherwise it is the file itself. Default: ``<[dexcare] report_storage>/<dag_id>/<run_id>/``,
        or without that setting ``$AIRFLOW_HOME/dexcare-reports/<dag_id>/<run_id>/`` (private, local to this
        worker).
    :param report_type: the report's type; with ``report_start_date``/``report_end_date`` it overrides the request
        pulled from XCom.
    :param report_start_date: first day of the window.
    :param report_end_date: last day of the window.
    :param request_task_id: task whose XCom ``request`` describes the report; defaults to the task behind
        ``report_id`` when that is ``some_task.output``.
    :param dexcare_conn_id: the DexCare connection.
    :param key_columns: the load's key columns (templated), header or normalised names: a list, or the load's
        mapping of report type to columns (``DexCareLoadReportsOperator(key_columns=...)``, default
        ``visit_id``), of which this report's type is used. A body whose first line lacks them is not a DexCare
        header (a headerless file, another report): it is refused, nothing is kept, and none of its fields
        reaches XCom, lineage or the log.
    """

    template_fields: Sequence[str] = ("report_id", "destination", *REPORT_WINDOW_FIELDS, "key_columns")
    ui_color = "#d9ecf7"

    def __init__(
        self,
        *,
        report_id: str | XComArg,
        destination: str | None = None,
        report_type: str | None = None,
        report_start_date: str | dt.date | None = None,
        report_end_date: str | dt.date | None = None,
        request_task_id: str | None = None,
        dexcare_conn_id: str = "dexcare_default",
        key_columns: Mapping[str, Sequence[str] | str] | Sequence[str] | str = DEFAULT_KEY,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            report_type=report_type,
            report_start_date=report_start_date,
            report_end_date=report_end_date,
            dexcare_conn_id=dexcare_conn_id,
            **kwargs,
        )
        self.report_id = report_id
        self.destination = destination
        self.request_task_id = request_task_id or upstream_task_id(report_id)
        self.key_columns = key_columns
        if is_literal(report_id):
            validate_report_id(report_id)
        self._check_window_when_parsed()

    def execute(self, context: Context) -> dict[str, Any]:
        from dexcare.hooks.dexcare import DexCareHook

        report_id = validate_report_id(self.report_id)
        request = resolve_request(
            context,
            report_type=self.report_type,
            start_date=self.report_start_date,
            end_date=self.report_end_date,
            request_task_id=self.request_task_id,
        )
        if request is None:
            raise DexCareValidationError(
                f"Cannot tell what report {report_id} covers: pass report_id=<start or sensor task>.output, "
                "request_task_id=<task that pushed the 'request' XCom>, or "
                "report_type/report_start_date/report_end_date."
            )
        facts: dict[str, Any] = {"report_id": report_id, **request.to_dict()}
        self._lineage_facts = facts  # what failure lineage can name at each step
        hook = DexCareHook(self.dexcare_conn_id)
        status = hook.get_report_status(report_id)
        facts["endpoint"] = hook.transport.base_url
        if status != ReportStatus.SUCCEEDED:
            raise DexCareDownloadReportError(
                f"Refusing to download DexCare report {report_id}: it is {status.value}, not SUCCEEDED. "
                + (
                    "Wait for it with DexCareReportSensor upstream of this task."
                    if status.in_progress
                    else "It will not deliver data: start a new report (DexCareStartReportOperator)."
                )
            )
        target = self._target(context, report_id, request)
        began = time.monotonic()
        result = hook.download_report(report_id, target, key_columns=self._keys(request.report_type), request=request)
        metrics.downloaded(request.report_type.value, result.bytes or 0, time.monotonic() - began)
        self._lineage_facts = handed_over = result.to_xcom()
        self.log.info(
            "Report %s (%s) is at %s: %d rows, %d bytes, sha256 %s.",
            report_id,
            request.report_type.value,
            result.uri,
            result.rows,
            result.bytes,
            result.sha256,
        )
        return handed_over

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> OperatorLineage | None:
        """The report read (its header and size are in the result already: no extra request)."""
        return self._openlineage()

    def get_openlineage_facets_on_failure(self, task_instance: Any) -> OperatorLineage | None:
        """The report the task was about, as far as it got."""
        return self._openlineage()

    def _openlineage(self) -> OperatorLineage | None:
        from dexcare import lineage

        facts = getattr(self, "_lineage_facts", None)
        if facts is None:  # failed before it knew which report
            return None
        return lineage.guarded(self.log, self.task_id, lambda: lineage.download_lineage(facts))

    def _keys(self, report_type: ReportType) -> list[str]:
        """This report type's key columns, from a list or from the load's per-type mapping."""
        keys = self.key_columns
        if isinstance(keys, Mapping):
            from dexcare.load.options import LoadOptions

            return list(LoadOptions(key_columns=keys).keys_for(report_type))
        return [keys] if isinstance(keys, str) else list(keys)

    def _target(self, context: Context, report_id: str, request: ReportRequest) -> ReportLocation:
        filename = report_file_name(request.report_type.value, request.start_date, request.end_date, report_id)
        destination = self.destination or run_directory(None, context["dag"].dag_id, context["run_id"])
        return file_location(destination, filename)
