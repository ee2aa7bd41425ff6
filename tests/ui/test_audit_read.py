"""The page's one read of ``load_audit``: on a real PostgreSQL after real loads, and the SQL Server text offline."""

from __future__ import annotations

import datetime as dt
import logging
import re
from typing import Any

import psycopg
import pytest
from dexcare.load.loader import LoadOptions, load_reports
from dexcare.ui.audit import KEPT_COLUMN, read_loads
from psycopg import sql
from sqlfluff.core import FluffConfig, Linter

from tests.load.conftest import END, report
from tests.support.mssql_recording import RecordingConnection, RecordingCursor
from tests.support.warehouse import scratch_schema

HEADER = "visitId,visitStatus,updatedAt\n"
OLD, FIRST, AGAIN = (f"00000000-0000-4000-8000-00000000000{n}" for n in (1, 2, 3))


@pytest.fixture
def write_csv(tmp_path):
    counter = iter(range(100))

    def write(content: str):
        path = tmp_path / f"report_{next(counter)}.csv"
        path.write_text(content)
        return path

    return write


@pytest.fixture
def schema(pg_uri: str):
    with scratch_schema(pg_uri, "dexcare_page_audit") as name:
        yield name


def test_postgres_reads_the_committed_loads_of_the_period(pg_uri, schema, write_csv) -> None:
    with psycopg.connect(pg_uri) as conn:
        assert read_loads(conn, "postgres", schema, END) == []  # no load_audit yet
        old = report(write_csv(HEADER + "v1,a,t\n"), end=END - dt.timedelta(days=5), report_id=OLD)
        first = report(write_csv(HEADER + "v1,a,t\nv2,b,t\n"), end=END, report_id=FIRST)
        again = report(write_csv(HEADER + "v1,a,t\nv2,c,t\nv3,d,t\n"), "retail", end=END, report_id=AGAIN)
        for reports in ([old], [first, again]):
            load_reports(conn, reports, dialect="postgres", options=LoadOptions(schema=schema), dag_id="d", run_id="r")
        loads = read_loads(conn, "postgres", schema, END - dt.timedelta(days=1))
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE  # nothing left open
    assert [(x.report_id, x.table, x.window_end, x.inserted, x.run_id, x.kept) for x in loads] == [
        (FIRST, "avr_virtual", END, 1, "r", 0), (AGAIN, "avr_retail", END, 3, "r", 0)]
    assert loads[0].window_start < loads[0].window_end and loads[0].finished_at.tzinfo is not None


def test_the_kept_count_shows_once_load_audit_has_its_column(pg_uri, schema, write_csv) -> None:
    """A load_audit no load has upgraded yet (no kept_newer column) reads as "no count", not as 0."""
    audit = sql.Identifier(schema, "load_audit")
    with psycopg.connect(pg_uri) as conn:
        load_reports(conn, [report(write_csv(HEADER + "v1,a,t\n"))], dialect="postgres",
                     options=LoadOptions(schema=schema))
        conn.execute(sql.SQL("ALTER TABLE {} DROP COLUMN {}").format(audit, sql.Identifier(KEPT_COLUMN)))
        conn.commit()
        (before,) = read_loads(conn, "postgres", schema, END)
        conn.execute(sql.SQL("ALTER TABLE {} ADD COLUMN {} bigint NOT NULL DEFAULT 4").format(
            audit, sql.Identifier(KEPT_COLUMN)))
        conn.commit()
        (loaded,) = read_loads(conn, "postgres", schema, END)
    assert before.kept is None
    assert loaded.kept == 4


class AuditReadingCursor(RecordingCursor):
    """Answers the page's two statements from what the SQL Server dialect's own load left in the recording."""

    def _answer(self, step: str, text: str, params: Any) -> list[tuple[Any, ...]]:
        conn = self._conn
        if text.startswith("SELECT COLUMN_NAME FROM INFORMATION_SCHEMA.COLUMNS"):
            schema, table = re.findall(r"N?'([^']*)'", text)
            if f"{schema}.{table}" not in conn.tables:
                return []
            return [(c,) for c in conn.audit_columns]
        if step == "audit_read" and "WHERE window_end >=" in text:
            fields = [f.strip() for f in text.split("SELECT ", 1)[1].split(" FROM ", 1)[0].split(",")]
            since = params[0]
            return [tuple(row[f] for f in fields) for row in conn.audit
                    if dt.date.fromisoformat(str(row["window_end"])) >= since]
        return super()._answer(step, text, params)


class AuditReadingConnection(RecordingConnection):
    #: The columns the dialect's own CREATE TABLE for load_audit declared (one per line of its DDL).
    audit_columns: list[str]

    def cursor(self) -> AuditReadingCursor:
        return AuditReadingCursor(self)

    def _record(self, op: Any) -> None:
        if op.step == "audit_table":
            self.audit_columns = re.findall(r"^\s+(\w+)\s+\w", op.sql, re.M)
        super()._record(op)


def test_sql_server_reads_through_the_dialects_quoting_in_valid_tsql(write_csv) -> None:
    logging.getLogger("sqlfluff").setLevel(logging.WARNING)
    tsql = Linter(config=FluffConfig(overrides={"dialect": "tsql"}))
    conn = AuditReadingConnection()
    assert read_loads(conn, "mssql", "dexcare", END) == []  # no load_audit: one catalog query, then a rollback
    assert [op.step for op in conn.ops] == ["other", "rollback"]
    for end, report_id in ((END - dt.timedelta(days=3), OLD), (END, FIRST)):
        load_reports(conn, [report(write_csv(HEADER + "v1,a,t\n"), end=end, report_id=report_id)],
                     options=LoadOptions(schema="dexcare"), dialect="mssql")
    conn.ops.clear()
    (loaded,) = read_loads(conn, "mssql", "dexcare", END - dt.timedelta(days=1))
    assert [op.step for op in conn.ops] == ["other", "audit_read", "rollback"]
    columns, rows = conn.statements
    assert columns.endswith("WHERE TABLE_SCHEMA = N'dexcare' AND TABLE_NAME = N'load_audit'")
    assert " FROM [dexcare].[load_audit] WHERE window_end >= " in rows and rows.endswith(" ORDER BY id")
    for statement in conn.statements:
        parsed = tsql.parse_string(statement)
        assert [str(v) for v in parsed.violations] == [], statement
    # The fake executes nothing: the values are those the dialect's own audit INSERT sent, read back typed.
    sent = conn.audit[-1]
    assert (loaded.report_id, loaded.table, loaded.window_end, loaded.inserted, loaded.rows_in_file, loaded.kept) == (
        FIRST, "avr_virtual", END, int(sent["inserted"]), 1, int(sent["kept_newer"]))
    assert loaded.window_start == dt.date.fromisoformat(str(sent["window_start"])) < END
