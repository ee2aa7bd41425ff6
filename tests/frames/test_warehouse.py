"""What the load left for a window, as a DataFrame (``dexcare.frames.warehouse.read_table_window``): on the embedded
PostgreSQL for real, through an Airflow connection; on SQL Server offline (the generated SELECT parses as T-SQL
with sqlfluff, and runs through a FAKE recording connection, as in tests/load/dialects/mssql/test_offline.py)."""

from __future__ import annotations

import datetime as dt
import json
import logging
from typing import Any
from urllib.parse import urlsplit

import pandas as pd
import pytest
from dexcare.exceptions import DexCareSchemaError, DexCareValidationError
from dexcare.frames.report import read_report
from dexcare.frames.warehouse import read_table_window
from dexcare.load.loader import LoadOptions, load_reports
from dexcare.sandbox import write_report_csv
from pymssql import _mssql
from sqlfluff.core import FluffConfig, Linter

from tests.load.conftest import report
from tests.support.mssql_recording import RecordingConnection, RecordingCursor
from tests.support.warehouse import scratch_schema

LINEAGE_DTYPES = {
    "_dexcare_report_id": "string",
    "_dexcare_report_type": "string",
    "_dexcare_window_start": "datetime64[ns]",
    "_dexcare_window_end": "datetime64[ns]",
    "_dexcare_loaded_at": "datetime64[ns, UTC]",
}


def airflow_postgres(pg_uri: str) -> str:
    parts = urlsplit(pg_uri)
    query = dict(p.split("=", 1) for p in parts.query.split("&") if p)
    return json.dumps({"conn_type": "postgres", "host": query.get("host", parts.hostname or ""),
                       "port": parts.port, "login": parts.username, "password": parts.password,
                       "schema": parts.path.lstrip("/")})


def test_a_window_read_back_from_postgresql_equals_its_file_deduplicated(pg_uri, tmp_path, monkeypatch):
    import psycopg

    monkeypatch.setenv("AIRFLOW_CONN_FRAMES_WAREHOUSE", airflow_postgres(pg_uri))
    first, second = tmp_path / "first.csv", tmp_path / "second.csv"
    write_report_csv(first, "virtual", dt.date(2026, 11, 1), dt.date(2026, 11, 3), visits_per_day=30,
                     duplicate_rate=0.2)
    write_report_csv(second, "virtual", dt.date(2026, 11, 4), dt.date(2026, 11, 6), visits_per_day=30)
    with scratch_schema(pg_uri, "frames") as schema:
        with psycopg.connect(pg_uri) as conn:
            load_reports(conn, [report(first, start="2026-11-01", end="2026-11-03"),
                                report(second, start="2026-11-04", end="2026-11-06")],
                         dialect="postgres", options=LoadOptions(schema=schema))

        table = read_table_window("frames_warehouse", report_type="virtual", start_date="2026-11-01",
                                  end_date="2026-11-03", schema=schema)

    in_file = read_report(first)
    expected = in_file.drop_duplicates("visit_id", keep="last").sort_values("visit_id").reset_index(drop=True)
    assert len(in_file) > len(expected) > 50  # the file repeats visits; the table holds each once
    pd.testing.assert_frame_equal(table[list(in_file.columns)], expected)
    assert {c: str(table[c].dtype) for c in LINEAGE_DTYPES} == LINEAGE_DTYPES
    assert set(table["_dexcare_window_end"]) == {pd.Timestamp("2026-11-03")}


def test_a_table_that_was_never_loaded_or_a_bad_window_is_refused(pg_uri):
    import psycopg

    with scratch_schema(pg_uri, "frames") as schema, psycopg.connect(pg_uri) as conn:
        with pytest.raises(DexCareSchemaError, match=rf"{schema}.avr_retail does not exist"):
            read_table_window(conn=conn, dialect="postgres", report_type="retail", start_date="2026-11-01",
                              end_date="2026-11-02", schema=schema)
        with pytest.raises(DexCareValidationError, match="needs a window"):
            read_table_window(conn=conn, report_type="retail", start_date="2026-11-03", end_date="2026-11-02")


# --- SQL Server, offline ------------------------------------------------------------------------------------------


class _SelectingCursor(RecordingCursor):
    """The recording cursor, answering the frame's SELECT with the rows of ``conn.answer`` (DB-API fetchmany)."""

    def execute(self, operation: str, params: Any = None) -> None:
        super().execute(operation, params)
        if operation.startswith("SELECT [") and "FROM sys." not in operation:
            self._result = list(self._conn.answer)

    def fetchmany(self, size: int) -> list[tuple[Any, ...]]:
        result, self._result = self._result[:size], self._result[size:]
        return result


class _SelectingConnection(RecordingConnection):
    answer: list[tuple[Any, ...]] = []  # set per test

    def cursor(self) -> _SelectingCursor:
        return _SelectingCursor(self)


def test_the_sql_server_select_parses_as_tsql_and_types_the_rows(caplog):
    caplog.set_level(logging.DEBUG)
    secret = "SECRET-PATIENT-9"
    columns = {"visit_id": "nvarchar(450)", "updated_at": "nvarchar(max)", "patient_name": "nvarchar(max)",
               "wait_minutes": "int", "_dexcare_report_id": "nvarchar(64)", "_dexcare_report_type": "nvarchar(64)",
               "_dexcare_window_start": "date", "_dexcare_window_end": "date",
               "_dexcare_loaded_at": "datetimeoffset(7)"}
    conn = _SelectingConnection(tables={"dex care.avr_virtual": columns})
    loaded = dt.datetime(2026, 11, 21, 6, 0, tzinfo=dt.UTC)
    conn.answer = [
        ("0012", "2026-11-20T10:00:00Z", secret, 7, "r1", "virtual", dt.date(2026, 11, 1), dt.date(2026, 11, 3),
         loaded),
        ("0013", None, "", None, "r1", "virtual", dt.date(2026, 11, 1), dt.date(2026, 11, 3), loaded),
    ]

    frame = read_table_window(conn=conn, dialect="mssql", report_type="virtual", start_date="2026-11-01",
                              end_date="2026-11-03", schema="dex care")

    select = [s for s in conn.statements if s.startswith("SELECT [")]
    assert select == [
        "SELECT [visit_id], [updated_at], [patient_name], [wait_minutes], [_dexcare_report_id], "
        "[_dexcare_report_type], [_dexcare_window_start], [_dexcare_window_end], [_dexcare_loaded_at] "
        "FROM [dex care].[avr_virtual] WHERE [_dexcare_window_start] >= '2026-11-01' AND "
        "[_dexcare_window_end] <= '2026-11-03' ORDER BY [visit_id]"
    ]
    assert select[0] == _mssql.substitute_params(
        select[0].replace("'2026-11-01'", "%s").replace("'2026-11-03'", "%s"),
        (dt.date(2026, 11, 1), dt.date(2026, 11, 3))).decode()
    linter = Linter(config=FluffConfig(overrides={"dialect": "tsql"}))
    assert [str(v) for v in linter.parse_string(select[0]).violations] == []

    assert frame["visit_id"].tolist() == ["0012", "0013"]
    assert {c: str(t) for c, t in frame.dtypes.items()} == {
        "visit_id": "string", "updated_at": "datetime64[ns, UTC]", "patient_name": "string", "wait_minutes": "Int64",
        **LINEAGE_DTYPES,
    }
    assert frame["patient_name"].isna().tolist() == [False, True]
    assert secret not in caplog.text
    assert "close" not in conn.steps  # a connection given is the caller's to close
