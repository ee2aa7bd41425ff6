"""DexCareLoadReportsOperator: one DAG run's downloaded reports into the warehouse, all or nothing.

A thin wrapper: it resolves the warehouse connection (PostgreSQL or SQL Server, by the connection's type)
and the run's date, and hands over to :func:`dexcare.load.loader.load_reports`, which needs no task
context (tests and benchmarks call it directly). The return value is the load summary, small and
JSON-ready for XCom.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow.exceptions import AirflowProviderDeprecationWarning
from airflow.sdk import BaseOperator

from dexcare import metrics
from dexcare.exceptions import DexCareCleanUpError, DexCareLoadError
from dexcare.handoff import ReportHandoff
from dexcare.load.audit import AUDIT_TABLE, committed_entries, committed_summary, summary_line
from dexcare.load.connection import Warehouse, warehouse
from dexcare.load.loader import DEFAULT_SCHEMA, LoadOptions, load_reports
from dexcare.load.options import table_for
from dexcare.load.volume import configured_min_shares, min_shares
from dexcare.report import ReportType
from dexcare.storage import clean_up_run
from dexcare.task_context import is_literal, run_end_date

if TYPE_CHECKING:
    from airflow.providers.openlineage.extractors import OperatorLineage
    from airflow.sdk import Context


def _flatten(reports: Any) -> list[Mapping[str, Any]]:
    """Accept one result, a list of them, or the lazy sequence of a mapped download task."""
    if reports is None:
        return []
    if isinstance(reports, Mapping):
        return [reports]
    flat: list[Mapping[str, Any]] = []
    for item in reports if isinstance(reports, Iterable) else [reports]:
        if isinstance(item, Mapping):
            flat.append(item)
        elif isinstance(item, Iterable) and not isinstance(item, str | bytes):
            flat.extend(_flatten(item))
        else:
            raise DexCareLoadError(
                f"reports must be download results (dicts with uri, report_type, report_id, ...); got {item!r}."
            )
    return flat


class DexCareLoadReportsOperator(BaseOperator):
    """Load the reports of one DAG run into ``<schema>.avr_<report type>``, deduplicated, in one transaction.

    The warehouse is PostgreSQL or SQL Server, chosen by the connection's type (``postgres`` or ``mssql``).

    :param reports: download results (templated), typically ``download.output`` or the XComArg of a
        mapped download task: the XCom form of :class:`dexcare.handoff.ReportHandoff`, dicts with ``uri``,
        ``report_type``, ``report_id``, ``start_date``, ``end_date`` and optionally ``sha256`` (verified while
        streaming) and ``rows``; each is read once, and the load and the clean-up use that one record.
    :param warehouse_conn_id: the warehouse connection: a ``postgres`` or an ``mssql`` connection.
    :param postgres_conn_id: deprecated name of ``warehouse_conn_id``.
    :param schema: target schema, created if missing; holds the tables and ``load_audit``.
    :param key_columns: per report type, the columns that identify a row (header or normalised names);
        default ``visit_id``.
    :param version_columns: per report type, a column whose newest value wins among repeats of a key
        within one file (default: the last row in the file wins). Without a configured type its values are
        compared as ISO 8601 timestamps with a UTC offset, and one that is not stops the load (README: Version
        column).
    :param column_types: per report type, ``{column: SQL type}`` for columns to cast (e.g.
        ``{"virtual": {"updated_at": "timestamptz"}}``); everything else is text.
    :param work_mem: PostgreSQL ``work_mem``/``maintenance_work_mem`` for this load's transaction (not used
        on SQL Server).
    :param verify_sha256: compare each file with the sha256 recorded at download while streaming it.
    :param delete_files: delete the downloaded files once the load has committed (templated), with whatever
        else of the run the provider left beside them (:func:`dexcare.storage.clean_up_run`). The CSVs hold
        patient data; they are kept only when the load fails, so a cleared task can load them again. With it
        on, a try that finds every report already in ``load_audit`` (an earlier try committed, then its
        clean-up failed) loads nothing again: it finishes the clean-up and returns that load's summary,
        marked ``already_loaded``.
    :param history: report types (templated) whose every change is also appended, in the same transaction,
        to ``<schema>.avr_<type>_history``: each inserted or changed row as it became, with the report and
        window that brought it. Default: none.

    Every outlet Asset named ``<anything>.avr_<type>`` whose table this load wrote gets an asset event whose
    extra is that table's summary, so downstream DAGs scheduled on it see what changed; the outlets of tables
    the load did not write get no event (:meth:`_publish_asset_events`). With apache-airflow-providers-openlineage
    installed, the task's lineage names the reports it read and the tables it wrote (:mod:`dexcare.lineage`).
    """

    template_fields: Sequence[str] = (
        "reports", "warehouse_conn_id", "schema", "key_columns", "delete_files", "history", "volume_min_share",
        "accept_volume",
    )
    ui_color = "#e3f1e0"

    def __init__(
        self,
        *,
        reports: Any,
        warehouse_conn_id: str = "dexcare_warehouse",
        postgres_conn_id: str | None = None,
        schema: str = DEFAULT_SCHEMA,
        key_columns: Mapping[str, Sequence[str] | str] | str | None = None,
        version_columns: Mapping[str, str] | None = None,
        column_types: Mapping[str, Mapping[str, str]] | None = None,
        work_mem: str | None = "256MB",
        verify_sha256: bool = True,
        delete_files: bool | str = False,
        history: Sequence[str] | str | None = None,
        volume_min_share: float | Mapping[str, float] | str | None = None,
        accept_volume: bool | Sequence[str] | str = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.reports = reports
        if postgres_conn_id is not None:
            warnings.warn(
                "DexCareLoadReportsOperator: postgres_conn_id is deprecated (the warehouse may be SQL Server "
                "too); use warehouse_conn_id.",
                AirflowProviderDeprecationWarning,
                stacklevel=2,
            )
            warehouse_conn_id = postgres_conn_id
        self.warehouse_conn_id = warehouse_conn_id
        self.schema = schema
        # A template (e.g. "{{ params.key_columns }}") is kept as is and checked once rendered.
        self.key_columns = key_columns if isinstance(key_columns, str) else dict(key_columns or {})
        self.delete_files = delete_files
        self.version_columns = dict(version_columns or {})
        self.column_types = {k: dict(v) for k, v in (column_types or {}).items()}
        self.work_mem = work_mem
        self.verify_sha256 = verify_sha256
        # One report type, a list of them, or a template ("{{ params.history }}") checked once rendered.
        self.history = history
        self.volume_min_share = volume_min_share
        self.accept_volume = accept_volume
        # Fail at parse time on a typo in a report type, not at 3 a.m.
        if is_literal(self.key_columns) or isinstance(self.key_columns, dict):
            self._options()

    def _options(self) -> LoadOptions:
        if not isinstance(self.key_columns, Mapping):
            raise DexCareLoadError(
                f"key_columns must be a mapping of report type to columns, got {self.key_columns!r}."
            )
        options = LoadOptions(
            schema=self.schema,
            key_columns=dict(self.key_columns),
            version_columns=self.version_columns,
            column_types=self.column_types,
            work_mem=self.work_mem,
            verify_sha256=self.verify_sha256,
            # Until a template is rendered there is nothing to check; history_types() refuses a bad name.
            history=() if isinstance(self.history, str) and not is_literal(self.history) else self.history or (),
            volume_min_share=None if _template(self.volume_min_share) else self.volume_min_share,
            accept_volume=False if _template(self.accept_volume) else self.accept_volume,
        )
        for rtype in ReportType:
            options.keys_for(rtype)
            options.version_for(rtype)
            options.types_for(rtype)
            options.history_for(rtype)
            options.min_share_for(rtype)
            options.accepts_volume(rtype)
        return options

    def _run_options(self) -> LoadOptions:
        """The rendered options, the volume thresholds on top of ``[dexcare] volume_min_share``."""
        options = self._options()
        given = min_shares(self.volume_min_share, where="volume_min_share")
        configured = LoadOptions(volume_min_share=configured_min_shares())
        # The task's own setting wins, per type and then for every type; the deployment's only after it.
        shares = {t.value: given.get(t.value, given.get("*", configured.min_share_for(t))) for t in ReportType}
        return dataclasses.replace(options, volume_min_share=shares)

    def execute(self, context: Context) -> dict[str, Any]:
        reports = [ReportHandoff.from_xcom(report) for report in _flatten(self.reports)]
        if not reports:
            raise DexCareLoadError("No reports to load: the download step returned nothing.")
        self._lineage_reports: list[ReportHandoff] = reports
        dag = context.get("dag")
        dag_id = getattr(dag, "dag_id", None)
        target = warehouse(self.warehouse_conn_id)  # the dialect is chosen here, once, from the conn_type
        self._lineage_hook = target.hook
        run_id = context.get("run_id")
        delete = _truthy(self.delete_files)
        conn = target.connect()
        try:
            summary = self._committed_earlier(target, conn, reports, dag_id, run_id) if delete else None
            if summary is None:
                summary = load_reports(
                    conn,
                    reports,
                    dialect=target.dialect,
                    options=self._run_options(),
                    run_date=run_end_date(context),
                    dag_id=dag_id,
                    run_id=run_id,
                )
        finally:
            conn.close()
        self._lineage_summary: dict[str, Any] | None = summary
        for table, totals in summary["tables"].items():
            self.log.info("%s", summary_line(summary["schema"], table, totals))
        self._publish_asset_events(context, summary)
        if not summary.get("already_loaded"):  # a committed load's figures were sent by the try that made it
            metrics.loaded(summary)
        if delete:
            self._delete_files(reports, dag_id, run_id)
        return summary

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> OperatorLineage | None:
        """The reports read and the tables written, from the load's own summary (no query)."""
        return self._openlineage()

    def get_openlineage_facets_on_failure(self, task_instance: Any) -> OperatorLineage | None:
        """Before the commit nothing was written: the datasets the load was about, named, without schema or
        counts. After it (the clean-up failed), what was written."""
        return self._openlineage()

    def _openlineage(self) -> OperatorLineage | None:
        from dexcare import lineage

        return lineage.guarded(self.log, self.task_id, lambda: lineage.load_lineage(
            getattr(self, "_lineage_hook", None), self.schema, getattr(self, "_lineage_reports", []),
            getattr(self, "_lineage_summary", None)))

    def _committed_earlier(self, target: Warehouse, conn: Any, reports: list[ReportHandoff],
                           dag_id: str | None, run_id: str | None) -> dict[str, Any] | None:
        """The summary of an earlier try's load of exactly these reports, if it committed (``load_audit``
        says so); ``None`` means load them now.

        Only asked with ``delete_files`` on: then the files of a committed load may already be gone, and loading
        again would fail on them. A load that committed is never repeated; only its clean-up is finished.
        """
        schema = self.schema
        rows = target.dialect_class.audit_rows(conn, schema, [r.report_id for r in reports])
        entries = committed_entries(reports, rows)
        if entries is None:
            return None
        summary = committed_summary(schema, dag_id, run_id, entries)
        self.log.warning(
            "Already loaded: %s.%s shows report(s) %s committed by an earlier try (finished %s). Not loading "
            "them again; finishing the clean-up of their files only.",
            schema, AUDIT_TABLE, ", ".join(e["report_id"] for e in entries), summary["finished_at"],
        )
        return summary

    def _delete_files(self, reports: list[ReportHandoff], dag_id: str | None, run_id: str | None) -> None:
        """After the commit, on every storage. A file already gone is reported, not counted as deleted.

        A failure does not undo or repeat the committed load: it fails the task with what was left and what to
        do, and the next try finds the reports in ``load_audit`` (:meth:`_committed_earlier`) and only finishes
        the clean-up.
        """
        done = clean_up_run([report.location for report in reports], dag_id, run_id)
        self.log.info(
            "Deleted %d of %d downloaded file(s) after the committed load.", len(done.deleted), len(reports)
        )
        if done.leftovers:
            self.log.info("Also deleted what earlier or killed tries of this run left: %s", ", ".join(done.leftovers))
        if done.kept:
            self.log.info("Kept for another load task of this run (other report types or windows): %s",
                          ", ".join(done.kept))
        if done.already_gone:
            self.log.warning("Already gone before the clean-up: %s", ", ".join(done.already_gone))
        if done.failed:
            ids = ", ".join(report.report_id for report in reports)
            raise DexCareCleanUpError(
                f"The load committed (the warehouse holds report(s) {ids}; {self.schema}.{AUDIT_TABLE} records "
                f"them), but the clean-up could not delete: {'; '.join(done.failed)}. These files hold patient "
                "data. Fix: let this task retry, or clear it once the storage answers again (a new try finds the "
                "reports in load_audit, loads nothing again and only finishes the clean-up); if the error "
                "persists, fix the storage's permissions or delete the files named here by hand."
            )

    def _publish_asset_events(self, context: Context, summary: dict[str, Any]) -> None:
        """An asset event for each table this load wrote, none for the others.

        Airflow records an event for every outlet the task has when it ends, so the outlets of tables this run
        did not load (report types it did not fetch) are dropped from the running task: a DAG scheduled on
        ``avr_provider_booking`` then runs only after a load of that table. The DAG keeps declaring all three
        (its lineage and the asset graph do not change). An outlet not named for one of our tables keeps
        Airflow's plain event. Works alike on Airflow 3.0 to 3.3, which all read the task's outlets after
        ``execute``; an AssetAlias would not (3.0 cannot take an alias event whose extra holds a list).
        """
        loaded, others = [], []
        for outlet in self.outlets or []:
            table = _table_of(outlet)
            if table is None:
                others.append(outlet)
            elif table in summary["tables"]:
                loaded.append((outlet, table))
        self.outlets = others + [outlet for outlet, _ in loaded]
        events = context.get("outlet_events")
        if events is None:
            return
        for outlet, table in loaded:
            events[outlet].extra = {
                "schema": summary["schema"],
                "table": table,
                "loaded": True,
                **summary["tables"][table],
                "report_ids": [r["report_id"] for r in summary["reports"] if r.get("target_table") == table],
            }


def _table_of(outlet: Any) -> str | None:
    """``avr_<type>`` for an Asset named ``<anything>.avr_<type>``, else ``None``."""
    table = str(getattr(outlet, "name", "") or "").rsplit(".", 1)[-1]
    return table if table in {table_for(t) for t in ReportType} else None


def _template(value: Any) -> bool:
    return isinstance(value, str) and not is_literal(value)


def _truthy(value: bool | str) -> bool:
    return value if isinstance(value, bool) else str(value).strip().lower() in ("1", "true", "yes", "on")
