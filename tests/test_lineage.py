"""dexcare.lineage on its own: dataset names, facets from a load summary, and errors that never escape.

The warehouse names are checked against the openlineage provider's own SQL parser fed the same connection
through the postgres and mssql providers' hooks: what ``SQLExecuteQueryOperator`` would report for an
``INSERT INTO <schema>.<table>``. No database is contacted (the hooks only read their connection).
"""

from __future__ import annotations

import json
import logging

import pytest
from airflow.providers.microsoft.mssql.hooks.mssql import MsSqlHook
from airflow.providers.openlineage.sqlparser import SQLParser
from airflow.providers.postgres.hooks.postgres import PostgresHook
from dexcare import lineage
from dexcare.handoff import ReportHandoff
from openlineage.client.serde import Serde

REPORT_ID = "3f2b8c1e-4d5a-4b6c-9e7f-0a1b2c3d4e5f"
DOWNLOAD = {"uri": "file:///x.csv", "bytes": 1234, "sha256": "ab", "rows": 3, "header": ["visitId", "Visit Status"],
            "endpoint": "https://ecvapi.care.example.com", "report_id": REPORT_ID, "report_type": "virtual",
            "start_date": "2026-11-10", "end_date": "2026-11-20"}


def as_json(value) -> dict:
    return json.loads(Serde.to_json(value))


def entry(**extra) -> dict:
    """One report of a load summary, as dexcare.load.loader.load_reports writes it."""
    return {"report_id": REPORT_ID, "report_type": "virtual", "target_table": "avr_virtual", "rows_in_file": 3,
            "duplicates_in_file": 1, "inserted": 1, "updated": 1, "unchanged": 0, "window_start": "2026-11-10",
            "window_end": "2026-11-20", "header": ["visitId", "Visit Status", "Wait"],
            "file_columns": ["visit_id", "visit_status", "wait"], "casts": ["wait"],
            "table_columns": [["visit_id", "text"], ["visit_status", "text"], ["old", "text"], ["wait", "integer"],
                              ["_dexcare_report_id", "text"]],
            "bytes": 99, "endpoint": "https://ecvapi.care.example.com", **extra}


@pytest.mark.parametrize(
    ("endpoint", "namespace", "name"),
    [
        ("https://ecvapi.care.example.com", "https://ecvapi.care.example.com",
         "api/8/reporting/allvisitsreport/virtual"),
        ("https://ECVAPI.care.example.com:443/", "https://ecvapi.care.example.com",
         "api/8/reporting/allvisitsreport/virtual"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080", "api/8/reporting/allvisitsreport/virtual"),
        ("https://user:secret@gw.example.com:8443/dexcare", "https://gw.example.com:8443",
         "dexcare/api/8/reporting/allvisitsreport/virtual"),
    ],
)
def test_a_report_type_is_named_by_its_endpoint_and_type_never_credentials(endpoint, namespace, name) -> None:
    assert lineage.report_dataset(endpoint, "virtual") == (namespace, name)


@pytest.mark.parametrize(
    ("hook_class", "conn", "namespace"),
    [
        (PostgresHook, {"conn_type": "postgres", "host": "db.example.com", "schema": "warehouse"},
         "postgres://db.example.com:5432"),
        (PostgresHook, {"conn_type": "postgres", "host": "db.example.com", "port": 6432, "schema": "warehouse"},
         "postgres://db.example.com:6432"),
        (MsSqlHook, {"conn_type": "mssql", "host": "sql.example.com", "schema": "warehouse"},
         "mssql://sql.example.com:1433"),
    ],
)
def test_tables_are_named_exactly_as_the_sql_providers_name_them(hook_class, conn, namespace, monkeypatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_WH", json.dumps({**conn, "login": "u", "password": "p"}))
    hook = hook_class("wh")
    ours = lineage.load_lineage(hook, "dexcare", [], {"reports": [entry()]}).outputs
    info = hook.get_openlineage_database_info(hook.connection)
    parser = SQLParser(dialect=hook.get_openlineage_database_dialect(hook.connection))
    theirs = parser.generate_openlineage_metadata_from_sql(
        "INSERT INTO dexcare.avr_virtual (visit_id) VALUES ('v1')", hook, info, use_connection=False).outputs
    assert [(d.namespace, d.name) for d in ours] == [(d.namespace, d.name) for d in theirs]
    assert [(d.namespace, d.name) for d in ours] == [(namespace, "warehouse.dexcare.avr_virtual")]


def test_the_download_reports_the_report_it_read() -> None:
    result = lineage.download_lineage(DOWNLOAD)
    (read,) = [as_json(d) for d in result.inputs]
    assert (read["namespace"], read["name"]) == ("https://ecvapi.care.example.com",
                                                 "api/8/reporting/allvisitsreport/virtual")
    assert [f["name"] for f in read["facets"]["schema"]["fields"]] == ["visitId", "Visit Status"]
    assert {k: v for k, v in read["inputFacets"]["inputStatistics"].items() if not k.startswith("_")} == {
        "rowCount": 3, "size": 1234}
    assert result.outputs == []
    facets = {k: as_json(v) for k, v in result.run_facets.items()}
    assert facets["externalQuery"]["externalQueryId"] == REPORT_ID
    assert facets["dexcare"]["reports"] == [{"reportId": REPORT_ID, "reportType": "virtual",
                                             "windowStart": "2026-11-10", "windowEnd": "2026-11-20"}]


def test_a_download_that_failed_early_names_what_it_knew() -> None:
    known = {"report_id": REPORT_ID, "report_type": "retail", "start_date": None, "end_date": None}
    assert lineage.download_lineage(known).inputs == []  # no endpoint yet: nothing to name
    (read,) = lineage.download_lineage({**known, "endpoint": "https://e.example.com"}).inputs
    assert read.name.endswith("/retail") and read.facets == {} and read.inputFacets == {}


def test_the_load_gives_schema_after_drift_column_lineage_and_rows_written(monkeypatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_WH", json.dumps({"conn_type": "postgres", "host": "db", "schema": "wh"}))
    second = entry(report_id="8c1d0e2f-1111-4222-8333-444455556666", inserted=0, updated=2, rows_in_file=2,
                   bytes=50, history_table="avr_virtual_history", history_rows=2,
                   history_columns=[["_dexcare_history_id", "bigint"], ["visit_id", "text"],
                                    ["_dexcare_change", "text"]])
    result = lineage.load_lineage(PostgresHook("wh"), "dexcare", [], {"reports": [entry(), second]})
    (read,) = [as_json(d) for d in result.inputs]  # two reports of one type: one dataset, statistics added up
    statistics = read["inputFacets"]["inputStatistics"]
    assert (statistics["rowCount"], statistics["size"]) == (5, 149)
    table, history = (as_json(d) for d in result.outputs)
    assert table["name"] == "wh.dexcare.avr_virtual" and history["name"] == "wh.dexcare.avr_virtual_history"
    assert [(f["name"], f["type"]) for f in table["facets"]["schema"]["fields"]] == [
        ("visit_id", "text"), ("visit_status", "text"), ("old", "text"), ("wait", "integer"),
        ("_dexcare_report_id", "text")]
    assert table["outputFacets"]["outputStatistics"]["rowCount"] == 4  # inserted + updated, both reports
    assert history["outputFacets"]["outputStatistics"]["rowCount"] == 2
    columns = table["facets"]["columnLineage"]["fields"]
    assert set(columns) == {"visit_id", "visit_status", "wait"}  # a kept column and lineage come from no field
    assert columns["visit_status"]["inputFields"] == [{
        "namespace": "https://ecvapi.care.example.com", "name": "api/8/reporting/allvisitsreport/virtual",
        "field": "Visit Status", "transformations": [{"type": "DIRECT", "subtype": "IDENTITY"}]}]
    assert columns["wait"]["inputFields"][0]["transformations"] == [
        {"type": "DIRECT", "subtype": "TRANSFORMATION", "description": "cast to integer"}]
    assert [r["reportId"] for r in as_json(result.run_facets["dexcare"])["reports"]] == [REPORT_ID, second["report_id"]]


def test_a_failed_load_names_its_datasets_without_claiming_any_write(monkeypatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_WH", json.dumps({"conn_type": "postgres", "host": "db", "schema": "wh"}))
    result = lineage.load_lineage(PostgresHook("wh"), "dexcare", [ReportHandoff.from_xcom(DOWNLOAD)], None)
    (read,) = [as_json(d) for d in result.inputs]
    assert [f["name"] for f in read["facets"]["schema"]["fields"]] == DOWNLOAD["header"]
    assert read["inputFacets"] == {}
    (table,) = [as_json(d) for d in result.outputs]
    assert table["name"] == "wh.dexcare.avr_virtual" and table["facets"] == {} and table["outputFacets"] == {}


def test_an_error_while_building_is_one_warning_and_no_lineage(caplog) -> None:
    log = logging.getLogger("test.lineage")

    def broken():
        raise KeyError("table_columns")

    with caplog.at_level(logging.DEBUG, logger="test.lineage"):
        assert lineage.guarded(log, "load_reports", broken) is None
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.getMessage() for r in warnings] == [
        "OpenLineage facets of load_reports could not be built and are left out of its lineage event "
        "(KeyError: 'table_columns'); the task itself is not affected."]
    assert warnings[0].exc_info is None  # the traceback only at debug level
