"""OpenLineage for the download and the load: which DexCare report fed which warehouse table, column by column.

apache-airflow-providers-openlineage asks an operator for its lineage after it ran
(``get_openlineage_facets_on_complete`` / ``_on_failure``). The operators answer with what this module builds
from what the task already knows (the download result, the load summary, the warehouse hook it connected
with): no request, no query, no file read, so lineage costs the task nothing. Every OpenLineage import is
inside a function here, so the package imports and runs without the provider, and :func:`guarded` turns any
error in building facets into one warning: lineage never fails a task.

Names, so that catalogs join our datasets with everyone else's:

* a DexCare report type: namespace the endpoint (``https://ecvapi.care.<domain>.com``, never credentials),
  name the report path and type (``api/8/reporting/allvisitsreport/virtual``), the same for every run and
  report id (the id is in the run facet);
* a warehouse table: exactly what the postgres and mssql providers' SQL lineage says for that connection
  (their hook's ``get_openlineage_database_info``, the provider's ``SQLParser.create_namespace``), so
  ``postgres://host:5432`` / ``mssql://host:1433`` and ``<database>.<schema>.<table>``.

The load's staging tables and ``load_audit`` are never reported; the history table is, when it is kept.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from dexcare.report import REPORTS_PATH

if TYPE_CHECKING:
    from airflow.providers.openlineage.extractors import OperatorLineage

    from dexcare.compat import TaskLog
    from dexcare.handoff import ReportHandoff

#: Key of our run facet: the DexCare reports (id, type, window) a task worked on.
RUN_FACET = "dexcare"


def guarded(log: TaskLog, task: str,
            build: Callable[[], OperatorLineage | None]) -> OperatorLineage | None:
    """``build()``, or ``None`` (the task's event goes without our facets) with one warning if it fails.

    The message carries the error's type and text: nothing here ever holds a row value, only names, counts
    and ids.
    """
    try:
        return build()
    except ImportError as exc:  # the provider calls us, so only a broken install gets here
        log.warning("OpenLineage facets of %s skipped: %s", task, exc)
    except Exception as exc:
        log.warning("OpenLineage facets of %s could not be built and are left out of its lineage event "
                    "(%s: %s); the task itself is not affected.", task, type(exc).__name__, str(exc)[:300])
        log.debug("OpenLineage facet failure details", exc_info=True)
    return None


# --- Names ------------------------------------------------------------------------------------------------


def report_dataset(endpoint: str, report_type: str) -> tuple[str, str]:
    """``(namespace, name)`` of a DexCare report type: stable across runs, whatever the report id."""
    parts = urlsplit(endpoint)
    host = (parts.hostname or "").lower()
    default = {"https": 443, "http": 80}.get(parts.scheme)
    authority = f"{host}:{parts.port}" if parts.port and parts.port != default else host
    name = f"{parts.path.rstrip('/')}{REPORTS_PATH}/{report_type}".lstrip("/")
    return f"{parts.scheme}://{authority}", name


def warehouse_naming(hook: Any) -> tuple[str, Callable[[str, str], str]]:
    """The warehouse's namespace and a ``(schema, table) -> name`` function, as its provider's SQL lineage has
    them (``SQLParser.from_table_meta``: ``database.schema.table``, upper-cased where the database says so)."""
    from airflow.providers.openlineage.sqlparser import SQLParser

    info = hook.get_openlineage_database_info(hook.connection)

    def name(schema: str, table: str) -> str:
        qualified = ".".join(part for part in (info.database, schema, table) if part)
        return qualified.upper() if info.is_uppercase_names else qualified

    return SQLParser.create_namespace(info), name


# --- Facets -----------------------------------------------------------------------------------------------


@functools.cache
def _reports_facet_class() -> type:
    import attrs
    from openlineage.client.facet_v2 import RunFacet

    @attrs.define
    class DexCareReportsRunFacet(RunFacet):
        """The DexCare reports a task worked on: ``reportId``, ``reportType``, ``windowStart``, ``windowEnd``."""

        reports: list[dict[str, Any]]

    return DexCareReportsRunFacet


def _run_facets(reports: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    described = [
        {"reportId": r.get("report_id"), "reportType": r.get("report_type"),
         "windowStart": r.get("start_date") or r.get("window_start"),
         "windowEnd": r.get("end_date") or r.get("window_end")}
        for r in reports
    ]
    return {RUN_FACET: _reports_facet_class()(reports=described)} if described else {}


def _schema(fields: Iterable[str | tuple[str, str] | list[str]]) -> Any:
    from openlineage.client.facet_v2 import schema_dataset

    out = []
    for position, field in enumerate(fields, 1):
        name, sql_type = (field, None) if isinstance(field, str) else field
        out.append(schema_dataset.SchemaDatasetFacetFields(name=name, type=sql_type, ordinal_position=position))
    return schema_dataset.SchemaDatasetFacet(fields=out)


class _Inputs:
    """The report datasets of a task, one per endpoint and report type, their statistics added up."""

    def __init__(self) -> None:
        self._found: dict[tuple[str, str], dict[str, Any]] = {}

    def add(self, endpoint: str | None, report_type: str, header: list[str] | None, rows: int | None,
            size: int | None) -> tuple[str, str] | None:
        if not endpoint:
            return None  # a download result from before the endpoint was recorded: nothing to name
        key = report_dataset(endpoint, report_type)
        found = self._found.setdefault(key, {"header": None, "rows": None, "bytes": None})
        found["header"] = header or found["header"]
        for name, value in (("rows", rows), ("bytes", size)):
            if value is not None:
                found[name] = (found[name] or 0) + int(value)
        return key

    def datasets(self) -> list[Any]:
        from openlineage.client.event_v2 import InputDataset
        from openlineage.client.facet_v2 import InputDatasetFacet, input_statistics_input_dataset

        out = []
        for (namespace, name), found in self._found.items():
            facets = {"schema": _schema(found["header"])} if found["header"] else {}
            statistics: dict[str, InputDatasetFacet] = {}
            if found["rows"] is not None or found["bytes"] is not None:
                statistics["inputStatistics"] = input_statistics_input_dataset.InputStatisticsInputDatasetFacet(
                    rowCount=found["rows"], size=found["bytes"])
            out.append(InputDataset(namespace=namespace, name=name, facets=facets, inputFacets=statistics))
        return out


def _lineage(inputs: list[Any], outputs: list[Any], run_facets: dict[str, Any]) -> OperatorLineage:
    from airflow.providers.openlineage.extractors import OperatorLineage

    return OperatorLineage(inputs=inputs, outputs=outputs, run_facets=run_facets)


# --- The download -----------------------------------------------------------------------------------------


def download_lineage(facts: Mapping[str, Any]) -> OperatorLineage:
    """The report the download read: its header as the schema, rows and bytes as input statistics.

    ``facts`` is the download result, or on failure what was known by then (``report_id``, ``report_type``,
    the window, ``endpoint``). The CSV the download wrote is not a dataset: it lives for one run.
    """
    from openlineage.client.facet_v2 import external_query_run

    inputs = _Inputs()
    key = None
    if facts.get("report_type"):
        key = inputs.add(facts.get("endpoint"), facts["report_type"], facts.get("header"), facts.get("rows"),
                         facts.get("bytes"))
    run_facets = _run_facets([facts]) if facts.get("report_id") else {}
    if key and facts.get("report_id"):
        run_facets["externalQuery"] = external_query_run.ExternalQueryRunFacet(
            externalQueryId=str(facts["report_id"]), source=key[0])
    return _lineage(inputs.datasets(), [], run_facets)


# --- The load ---------------------------------------------------------------------------------------------


def _column_lineage(entry: Mapping[str, Any], source: tuple[str, str] | None) -> dict[str, Any]:
    """Each table column from the CSV field it was loaded from: as is, or cast to its configured type."""
    from openlineage.client.facet_v2 import column_lineage_dataset as cl

    if source is None:
        return {}
    types = dict(map(tuple, entry["table_columns"]))
    fields = {}
    for header, column in zip(entry["header"], entry["file_columns"], strict=True):
        cast = column in entry["casts"]
        transformation = cl.Transformation(
            type="DIRECT", subtype="TRANSFORMATION" if cast else "IDENTITY",
            description=f"cast to {types.get(column)}" if cast else None)
        fields[column] = cl.Fields(inputFields=[cl.InputField(namespace=source[0], name=source[1], field=header,
                                                              transformations=[transformation])])
    return fields


class _Outputs:
    """The tables a load wrote, one dataset each: schema after drift, column lineage, rows written."""

    def __init__(self, namespace: str, name: Callable[[str, str], str], schema: str) -> None:
        self.namespace, self.name, self.schema = namespace, name, schema
        self._found: dict[str, dict[str, Any]] = {}

    def add(self, table: str, columns: list[Any] | None, written: int | None, lineage: dict[str, Any]) -> None:
        found = self._found.setdefault(table, {"columns": None, "written": None, "lineage": {}})
        found["columns"] = columns or found["columns"]  # the last report's: the table after every load
        if written is not None:
            found["written"] = (found["written"] or 0) + written
        found["lineage"].update(lineage)

    def datasets(self) -> list[Any]:
        from openlineage.client.event_v2 import OutputDataset
        from openlineage.client.facet_v2 import (
            OutputDatasetFacet,
            column_lineage_dataset,
            output_statistics_output_dataset,
        )

        out = []
        for table, found in self._found.items():
            facets: dict[str, Any] = {}
            if found["columns"]:
                facets["schema"] = _schema(found["columns"])
            if found["lineage"]:
                facets["columnLineage"] = column_lineage_dataset.ColumnLineageDatasetFacet(fields=found["lineage"])
            statistics: dict[str, OutputDatasetFacet] = {}
            if found["written"] is not None:
                statistics["outputStatistics"] = output_statistics_output_dataset.OutputStatisticsOutputDatasetFacet(
                    rowCount=found["written"])
            out.append(OutputDataset(namespace=self.namespace, name=self.name(self.schema, table), facets=facets,
                                     outputFacets=statistics))
        return out


def load_lineage(hook: Any, schema: str, reports: Sequence[ReportHandoff],
                 summary: Mapping[str, Any] | None) -> OperatorLineage:
    """The reports the load read and the tables it wrote.

    ``summary`` is what :func:`dexcare.load.loader.load_reports` returned; ``None`` when the load failed, and
    then nothing was written: the datasets are named (from the hand-off records) without schema or counts.
    """
    from dexcare.load.options import table_for

    inputs = _Inputs()
    outputs = _Outputs(*warehouse_naming(hook), schema) if hook is not None else None
    if summary is None:
        for report in reports:
            rtype = report.loadable_type()
            inputs.add(report.endpoint, rtype.value, report.header, None, None)
            if outputs is not None:
                outputs.add(table_for(rtype), None, None, {})
        return _lineage(inputs.datasets(), outputs.datasets() if outputs else [],
                        _run_facets(report.to_xcom() for report in reports))
    for entry in summary["reports"]:
        source = inputs.add(entry.get("endpoint"), entry["report_type"], entry.get("header"), entry["rows_in_file"],
                            entry.get("bytes"))
        lineage = _column_lineage(entry, source) if "table_columns" in entry else {}
        if outputs is None:
            continue
        outputs.add(entry["target_table"], entry.get("table_columns"), entry["inserted"] + entry["updated"], lineage)
        if entry.get("history_table"):
            outputs.add(entry["history_table"], entry["history_columns"], entry["history_rows"], lineage)
    return _lineage(inputs.datasets(), outputs.datasets() if outputs else [], _run_facets(summary["reports"]))
