"""SQL Server without a SQL Server: what can be proven on a machine that cannot run one.

No SQL Server installs from the registries these machines reach, so the live suite (the same scenarios as
PostgreSQL, ``make test-mssql``) is skipped here. What runs instead, for real: pymssql and the FreeTDS its
wheel bundles; every statement the SQL Server dialect generates for the scenarios, after pymssql's own
parameter substitution, parses as T-SQL with sqlfluff; and against a FAKE connection
(:mod:`tests.support.mssql_recording`, which records and never executes) the order of operations and the rollback on
every failure path. None of this shows what SQL Server itself would do with the statements.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import pymssql
import pytest
from dexcare.exceptions import (
    DexCareCastError,
    DexCareCSVError,
    DexCareLoadError,
    DexCareSchemaError,
    DexCareWarehouseError,
)
from dexcare.load.dialects.mssql.sql import quote
from dexcare.load.loader import LoadOptions, load_reports
from sqlfluff.core import FluffConfig, Linter

from tests.load.conftest import END, report
from tests.support.mssql_recording import RecordingConnection

HEADER = "visitId,visitStatus,updatedAt,patientName\n"
SECRET = "SECRET-PATIENT-7"
ORDER = ["lock", "stage", "bulk_copy", "dedupe", "update", "insert", "audit", "commit"]


@pytest.fixture(scope="module")
def tsql() -> Linter:
    logging.getLogger("sqlfluff").setLevel(logging.WARNING)  # its parse trees are not test output
    return Linter(config=FluffConfig(overrides={"dialect": "tsql"}))


def unparsable(linter: Linter, statement: str) -> list[str]:
    parsed = linter.parse_string(statement)
    return [str(v) for v in parsed.violations]


def run(conn: RecordingConnection, *reports: dict[str, Any], **options: Any) -> dict[str, Any]:
    return load_reports(conn, list(reports), options=LoadOptions(schema="dexcare", **options), dialect="mssql")


def virtual_table(*extra: str, missing: tuple[str, ...] = ()) -> dict[str, dict[str, str]]:
    """``dexcare.avr_virtual`` as an earlier load left it."""
    columns = {"visit_id": "nvarchar(450)", "visit_status": "nvarchar(max)", "updated_at": "nvarchar(max)",
               "patient_name": "nvarchar(max)", **dict.fromkeys(extra, "nvarchar(max)"),
               "_dexcare_report_id": "nvarchar(64)", "_dexcare_report_type": "nvarchar(64)",
               "_dexcare_window_start": "date", "_dexcare_window_end": "date",
               "_dexcare_loaded_at": "datetimeoffset(7)"}
    return {"dexcare.avr_virtual": {k: v for k, v in columns.items() if k not in missing}}


def history_table(missing: tuple[str, ...] = ()) -> dict[str, dict[str, str]]:
    """``dexcare.avr_virtual_history`` as an earlier load with history left it."""
    main = virtual_table(missing=missing)["dexcare.avr_virtual"]
    return {"dexcare.avr_virtual_history": {"_dexcare_history_id": "bigint", **main, "_dexcare_change": "nvarchar(64)"}}


# --- The driver --------------------------------------------------------------------------------------------


def test_pymssql_imports_and_its_bundled_freetds_loads() -> None:
    version = tuple(int(p) for p in pymssql.__version__.split(".")[:3])
    assert version >= (2, 4, 6)
    assert pymssql.get_dbversion().lower().startswith("freetds v1.")
    assert Path(pymssql.__file__).parent.parent.joinpath("pymssql.libs").is_dir()  # the bundled libraries


def test_the_installed_bulk_copy_fills_a_temp_table_on_the_same_session() -> None:
    """What the dialect relies on, read from the installed pymssql's own source (the wheel ships the .pyx):
    ``bulk_copy`` runs on the connection's own session (so a ``#temp`` table is visible and the rows are
    inside the open transaction), and for a name starting with ``#`` it finds the columns in tempdb, which
    is how it knows to send text as NVARCHAR (UTF-16) rather than in the client charset."""
    source = Path(pymssql.__file__).with_name("_pymssql.pyx").read_text()
    body = source[source.index("cpdef bulk_copy"):source.index("## Cursor class")]
    assert "cdef _mssql.MSSQLConnection conn = self._conn" in body
    assert "table_name.startswith('#')" in body and "'tempdb..' + table_name" in body
    assert "unicode_column_ids" in body and "batch_size" in body and "column_ids" in body


# --- Every statement parses as T-SQL -------------------------------------------------------------------------

SCENARIOS = {
    "first load": lambda w: ({}, [report(w(HEADER + f"v1,a,t,{SECRET}\nv2,b,t,x\nv1,c,t,y\n"))], {}),
    "re-load": lambda w: (virtual_table(), [report(w(HEADER + f"v1,a,t,{SECRET}\n"))], {}),
    "overlapping window": lambda w: ({}, [report(w(HEADER + f"v1,a,t,{SECRET}\n"), end=END),
                                          report(w(HEADER + "v1,b,t,x\nv2,a,t,x\n"), end=END + dt.timedelta(days=1))],
                                     {}),
    "old window": lambda w: (virtual_table(), [report(w(HEADER + f"v1,a,t,{SECRET}\n"), end=END - dt.timedelta(5))],
                             {}),
    "drift": lambda w: (virtual_table(missing=("patient_name",)),
                        [report(w(HEADER + f"v1,a,t,{SECRET}\n"))], {}),
    "hostile header": lambda w: (
        {}, [report(w('visitId,"x""]; DROP TABLE victim; --","a\'); DROP TABLE y; --","%s %(x)s"\n'
                      f"v1,{SECRET},2,3\n"))], {}),
    "typed and version columns": lambda w: (
        {}, [report(w(HEADER + f"v1,a,2026-11-18T10:00:00Z,{SECRET}\nv1,b,2026-11-18T11:00:00Z,x\n"))],
        {"version_columns": {"virtual": "updatedAt"},
         "column_types": {"virtual": {"updatedAt": "timestamptz", "visitStatus": "nvarchar(40)"}}}),
    "datetime, and a stored datetimeoffset compared with its offset": lambda w: (
        {"dexcare.avr_virtual": {**virtual_table()["dexcare.avr_virtual"], "visit_status": "datetime",
                                 "updated_at": "datetimeoffset(7)"}},
        [report(w(HEADER + f"v1,2026-11-12 10:00,2026-11-18 10:00:00+0000,{SECRET}\n"))], {}),
    "composite key, retail": lambda w: (
        {}, [report(w(f"Visit ID,Line,Status\nr1,1,{SECRET}\nr1,2,b\n"), "retail")],
        {"key_columns": {"retail": ["Visit ID", "line"]}}),
    "key column only": lambda w: ({}, [report(w(f"visitId\nv1\n{SECRET}\nv1\n"))], {}),
    "history, first load": lambda w: ({}, [report(w(HEADER + f"v1,a,t,{SECRET}\nv1,b,t,x\n"))],
                                      {"history": ["virtual"]}),
    "history, next day with drift": lambda w: (
        {**virtual_table(missing=("patient_name",)), **history_table(missing=("patient_name",))},
        [report(w(HEADER + f"v1,a,t,{SECRET}\n"))], {"history": ["virtual"]}),
    "history turned on later": lambda w: (virtual_table(), [report(w(HEADER + f"v1,a,t,{SECRET}\n"))],
                                          {"history": ["virtual"]}),
    "history, key column only": lambda w: ({}, [report(w(f"visitId\nv1\n{SECRET}\n"))], {"history": ["virtual"]}),
    "integer key, undeclared version": lambda w: (
        {}, [report(w(HEADER + f"1,a,2026-11-18T10:00:00.500Z,{SECRET}\n01,b,2026-11-18 10:00:00+0000,x\n"))],
        {"version_columns": {"virtual": "updatedAt"}, "column_types": {"virtual": {"visitId": "integer"}}}),
}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_every_generated_statement_parses_as_tsql(scenario, write_csv, tsql) -> None:
    tables, reports, options = SCENARIOS[scenario](write_csv)
    conn = RecordingConnection(tables=tables)
    run(conn, *reports, **options)
    assert conn.statements
    for statement in conn.statements:
        assert unparsable(tsql, statement) == [], statement
    # Values travel only as bulk-copy data or parameters: never in the statement text.
    assert not any(SECRET in s for s in conn.statements)
    assert any(SECRET in row for rows in conn.staged_text().values() for row in rows)


def test_the_parse_check_can_fail(tsql) -> None:
    """A control: sqlfluff's T-SQL grammar does reject malformed statements (here a MERGE without THEN)."""
    assert unparsable(tsql, "MERGE INTO t USING s ON t.a = s.a WHEN MATCHED UPDATE SET a = 1")
    assert unparsable(tsql, "UPDATE t SET FROM [x] AS t")


# --- Order of operations -------------------------------------------------------------------------------------


def in_order(steps: list[str], wanted: list[str]) -> bool:
    """``wanted`` is a subsequence of ``steps``."""
    remaining = iter(steps)
    return all(step in remaining for step in wanted)


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_lock_stage_dedupe_update_insert_audit_commit(scenario, write_csv) -> None:
    tables, reports, options = SCENARIOS[scenario](write_csv)
    conn = RecordingConnection(tables=tables)
    run(conn, *reports, **options)
    steps = conn.steps
    assert steps[:2] == ["session", "lock"]  # nothing happens before the lock
    assert steps[-1] == "commit" and "rollback" not in steps
    for start in [i for i, s in enumerate(steps) if s == "stage"]:  # each report, in order
        per_report = ORDER[1:-1] if "key column only" not in scenario else [s for s in ORDER[1:-1] if s != "update"]
        assert in_order(steps[start:], per_report), steps[start:]
    assert steps.count("audit") == len(reports) and steps.count("stage") == len(reports)
    lock = next(op.sql for op in conn.ops if op.step == "lock")
    assert "@LockOwner = 'Transaction'" in lock and "@LockMode = 'Exclusive'" in lock
    assert conn.statements[-1].startswith("INSERT INTO [dexcare].[load_audit]")
    drops = [op for op in conn.ops if op.step == "drop_stage"]
    assert len(drops) == len(reports)  # the stage never outlives the transaction


def test_history_rows_come_from_the_update_and_insert_themselves(write_csv) -> None:
    """``OUTPUT inserted.* INTO`` the history on both statements that write: each row as it became, in the
    same statement, so nothing compares tables afterwards. A new history table mirrors the main one."""
    conn = RecordingConnection()
    run(conn, report(write_csv(HEADER + "v1,a,t,x\n")), history=["virtual"])
    columns = list(conn.tables["dexcare.avr_virtual"])
    assert list(conn.tables["dexcare.avr_virtual_history"]) == ["_dexcare_history_id", *columns, "_dexcare_change"]
    create = next(s for s in conn.statements if s.startswith("CREATE TABLE [dexcare].[avr_virtual_history]"))
    assert "[_dexcare_history_id] bigint IDENTITY(1, 1) NOT NULL" in create
    assert "[visit_id] nvarchar(450) COLLATE Latin1_General_100_BIN2 NULL" in create  # the key: not unique here
    output = (" OUTPUT " + ", ".join(f"inserted.[{c}]" for c in columns)
              + ", N'{}' INTO [dexcare].[avr_virtual_history] (" + ", ".join(f"[{c}]" for c in columns)
              + ", [_dexcare_change]) ")
    update = next(op.sql for op in conn.ops if op.step == "update")
    insert = next(op.sql for op in conn.ops if op.step == "insert")
    assert output.format("update") in update and update.index("OUTPUT") < update.index(" FROM ")
    assert output.format("insert") in insert and insert.index("OUTPUT") < insert.index(" SELECT ")
    assert "baseline" not in conn.steps  # a new table: nothing to start from
    assert not any(s.startswith(("UPDATE [dexcare].[avr_virtual_history]", "DELETE")) for s in conn.statements)


def test_turning_history_on_copies_the_table_first_then_appends(write_csv) -> None:
    conn = RecordingConnection(tables=virtual_table())
    run(conn, report(write_csv(HEADER + "v1,a,t,x\n")), history=["virtual"])
    # The history table and its baseline come after the upload, just before the statements that write.
    assert in_order(conn.steps, ["lock", "stage", "bulk_copy", "history_table", "baseline", "update", "insert", "audit",
                                 "commit"])
    baseline = next(op.sql for op in conn.ops if op.step == "baseline")
    assert baseline.endswith("N'baseline' FROM [dexcare].[avr_virtual]")


def test_drift_adds_the_new_column_to_the_history_too(write_csv) -> None:
    conn = RecordingConnection(tables={**virtual_table(missing=("patient_name",)),
                                       **history_table(missing=("patient_name",))})
    run(conn, report(write_csv(HEADER + "v1,a,t,x\n")), history=["virtual"])
    alters = [op.sql for op in conn.ops if op.step in ("add_columns", "history_columns")]
    assert alters == ["ALTER TABLE [dexcare].[avr_virtual] ADD [patient_name] nvarchar(max) NULL",
                      "ALTER TABLE [dexcare].[avr_virtual_history] ADD [patient_name] nvarchar(max) NULL"]
    assert "history_table" not in conn.steps and "baseline" not in conn.steps


def test_without_history_nothing_of_it_is_sent(write_csv) -> None:
    conn = RecordingConnection(tables=virtual_table())
    run(conn, report(write_csv(HEADER + "v1,a,t,x\n")))
    assert [s for s in conn.statements if "_history]" in s or " OUTPUT " in s] == []


def test_batches_are_bulk_copied_with_flat_memory(write_csv) -> None:
    """Rows go in batches of ``batch_rows``: the worker never holds more than one batch."""
    body = HEADER + "".join(f"v{i},s,t,n\n" for i in range(2500))
    conn = RecordingConnection()
    summary = run(conn, report(write_csv(body)), batch_rows=1000)
    assert [op.rows for op in conn.ops if op.kind == "bulk_copy"] == [1000, 1000, 500]
    assert summary["reports"][0]["rows_in_file"] == 2500
    first = conn.staged_text()["#dexcare_stage_0"][0]
    assert first == ["v0", "s", "t", "n", 2]  # the values, then the line the record starts on


def test_empty_fields_are_staged_as_null_and_lines_follow_the_file(write_csv) -> None:
    conn = RecordingConnection()
    run(conn, report(write_csv(HEADER + 'v1,,"two\nlines",x\nv2,"",t,\n')))
    assert conn.staged_text()["#dexcare_stage_0"] == [["v1", None, "two\nlines", "x", 2], ["v2", None, "t", None, 4]]


# --- Rollback on every failure path --------------------------------------------------------------------------

LOST = pymssql.OperationalError((20047, b"DB-Lib error message 20047, severity 9:\nDBPROCESS is dead or not enabled\n"))
KILLED = pymssql.OperationalError((596, b"Cannot continue the execution because the session is in the kill state."))
REFUSED = pymssql.IntegrityError(
    (547, f"The INSERT statement conflicted with the CHECK constraint. The value is '{SECRET}'.".encode()))
FAILING_STEPS = ["lock", "schema", "audit_table", "create_table", "history_table", "baseline", "stage", "bulk_copy",
                 "cast_check", "dedupe", "update", "insert", "key_index", "drop_stage", "audit", "commit"]


@pytest.mark.parametrize("step", FAILING_STEPS)
@pytest.mark.parametrize("error", [LOST, REFUSED], ids=["connection-lost", "refused"])
def test_every_failure_rolls_back_and_never_commits(step, error, write_csv) -> None:
    """With the history kept: its steps fail like any other. The baseline needs a table that exists already."""
    conn = RecordingConnection(fail_step=step, fail_with=error, tables=virtual_table() if step == "baseline" else {})
    path = write_csv(HEADER + f"v1,a,2026-11-18T10:00:00Z,{SECRET}\nv1,b,2026-11-18T11:00:00Z,x\n")
    with pytest.raises(DexCareLoadError) as err:
        run(conn, report(path), column_types={"virtual": {"updatedAt": "timestamptz"}}, history=["virtual"])
    steps = conn.steps
    failed = next(i for i, op in enumerate(conn.ops) if op.kind.startswith("failed"))
    assert steps[failed + 1:] == ["rollback"], steps  # nothing after the failure but the rollback
    assert not any(op.kind == "commit" for op in conn.ops)
    message = str(err.value)
    assert SECRET not in message and "b'" not in message
    if error is LOST:
        assert isinstance(err.value, DexCareWarehouseError) and err.value.retryable
        assert ("committing" if step == "commit" else "nothing was written") in message
    else:
        assert not err.value.retryable and "error 547" in message and "rolled back" in message
        assert err.value.__cause__ is None  # the driver's text (which quotes the value) is not chained


def test_a_failed_rollback_closes_the_connection(write_csv) -> None:
    """If even the rollback fails, the session is closed: SQL Server rolls back what a closed session held."""

    class BrokenRollback(RecordingConnection):
        def rollback(self) -> None:
            super().rollback()
            raise LOST

    conn = BrokenRollback(fail_step="insert", fail_with=LOST)
    with pytest.raises(DexCareWarehouseError):
        run(conn, report(write_csv(HEADER + "v1,a,t,x\n")))
    assert conn.steps[-2:] == ["rollback", "close"] and "commit" not in conn.steps


def test_a_killed_session_is_a_lost_connection_worth_a_retry(write_csv) -> None:
    conn = RecordingConnection(fail_step="dedupe", fail_with=KILLED)
    with pytest.raises(DexCareWarehouseError, match="lost the warehouse connection") as err:
        run(conn, report(write_csv(HEADER + "v1,a,t,x\n")))
    assert err.value.retryable and "error 596" in str(err.value)


@pytest.mark.parametrize(
    ("body", "error", "match"),
    [
        ("v{i},a,t,x\n", None, None),
        ("v{i},a,t,x,EXTRA\n", DexCareCSVError, r"line 1502: more fields than the header"),
        ("{i},a,t,x\n", None, None),
        (",a,t,x\n", DexCareSchemaError, r"line 1502: empty key \(visit_id\)"),
    ],
    ids=["clean", "ragged", "numeric-key", "empty-key"],
)
def test_a_bad_record_stops_the_load_between_two_bulk_copies(body, error, match, write_csv) -> None:
    """Python checks every record of a batch before sending it, so the connection is never left mid-copy."""
    rows = "".join(f"v{i},a,t,x\n" for i in range(1500)) + body.format(i=1500) + "v9999,a,t,x\n"
    conn = RecordingConnection()
    if error is None:
        run(conn, report(write_csv(HEADER + rows)), batch_rows=1000)
        assert conn.steps[-1] == "commit"
        return
    with pytest.raises(error, match=match):
        run(conn, report(write_csv(HEADER + rows)), batch_rows=1000)
    assert [op.rows for op in conn.ops if op.kind == "bulk_copy"] == [1000]  # the first batch only
    assert conn.steps[-1] == "rollback" and "commit" not in conn.steps


@pytest.mark.parametrize(
    ("keys", "value", "ok"),
    [
        (["visitId"], "k" * 450, True),
        (["visitId"], "k" * 451, False),
        (["visitId"], "\U0001f600" * 225, True),  # outside the BMP: two UTF-16 code units each
        (["visitId"], "\U0001f600" * 226, False),
        (["visitId", "visitStatus"], "k" * 225, True),  # a composite key shares the 450
        (["visitId", "visitStatus"], "k" * 226, False),
    ],
)
def test_a_key_longer_than_its_indexable_type_names_line_and_column(keys, value, ok, write_csv) -> None:
    path = write_csv(HEADER + "v0,s,t,x\n" + f"{value},s,t,x\n")
    conn = RecordingConnection()
    if ok:
        run(conn, report(path), key_columns={"virtual": keys})
        return
    with pytest.raises(DexCareSchemaError) as err:
        run(conn, report(path), key_columns={"virtual": keys})
    units = 450 // len(keys)
    assert "line 3, column 'visitId'" in str(err.value) and f"nvarchar({units})" in str(err.value)
    assert value not in str(err.value)
    assert conn.steps[-1] == "rollback"


def test_an_existing_unbounded_key_column_is_refused_before_staging(write_csv) -> None:
    tables = virtual_table()
    tables["dexcare.avr_virtual"]["visit_id"] = "nvarchar(max)"
    conn = RecordingConnection(tables=tables)
    with pytest.raises(DexCareSchemaError, match=r"visit_id.*nvarchar\(max\), which SQL Server cannot index"):
        run(conn, report(write_csv(HEADER + "v1,a,t,x\n")))
    assert "stage" not in conn.steps and conn.steps[-1] == "rollback"


def test_repeats_are_ranked_by_the_converted_key_and_an_undeclared_version_by_its_instant(write_csv, tsql) -> None:
    """Issue 18 (14, 16): ``1`` and ``01`` in an int key are one visit, and ``10:00:00.500Z`` is newer than
    ``10:00:00Z``. The ranking partitions by the key as the upsert matches it and orders by the instant; the
    version is staged (and stored) as the file spelled it."""
    conn = RecordingConnection(tables=virtual_table())
    conn.tables["dexcare.avr_virtual"]["visit_id"] = "int"
    body = HEADER + "1,a,2026-11-18T10:00:00.500Z,x\n01,b,2026-11-18T10:00:00Z,x\n2,c,2026-11-18 09:00:00-0200,y\n"
    run(conn, report(write_csv(body)), version_columns={"virtual": "updatedAt"})
    dedupe = next(op.sql for op in conn.ops if op.step == "dedupe")
    assert unparsable(tsql, dedupe) == []
    version = "CONVERT(nvarchar(max), s.[updated_at])"  # values are staged as UTF-16 bytes
    instant = (f"CONVERT(datetimeoffset(7), STUFF(CASE WHEN RIGHT({version}, 5) LIKE N'[+-][0-9][0-9][0-9][0-9]' "
               f"THEN STUFF({version}, LEN({version}) - 1, 0, N':') ELSE {version} END, 11, 1, N'T'))")
    assert f"PARTITION BY CONVERT(int, s.[visit_id]) ORDER BY {instant} DESC, s.[_dexcare_line] DESC" in dedupe
    assert "GROUP BY CONVERT(int, d.[visit_id]) HAVING COUNT_BIG(*) > 1" in dedupe
    assert "WHERE dup.[visit_id] = CONVERT(int, s.[visit_id])" in dedupe
    assert [row[2] for row in conn.staged_text()["#dexcare_stage_0"]] == [
        "2026-11-18T10:00:00.500Z", "2026-11-18T10:00:00Z", "2026-11-18 09:00:00-0200"]
    # Declared, the version orders by its type, as before.
    conn = RecordingConnection()
    run(conn, report(write_csv(body)), version_columns={"virtual": "updatedAt"},
        column_types={"virtual": {"updatedAt": "text"}})
    dedupe = next(op.sql for op in conn.ops if op.step == "dedupe")
    assert "ORDER BY CONVERT(nvarchar(max), s.[updated_at]) DESC, s.[_dexcare_line] DESC" in dedupe
    assert "datetimeoffset" not in dedupe


@pytest.mark.parametrize("bad", ["2026-11-18T10:30:00", "2026-02-30T10:30:00Z", "yesterday-ish"])
def test_a_version_that_names_no_instant_stops_the_load_at_its_line(bad, write_csv) -> None:
    """Checked in Python as the file is parsed, so the batch holding it is never sent and the line is exact."""
    rows = "".join(f"v{i},a,2026-11-18T10:00:00Z,x\n" for i in range(1500)) + f"v1500,a,{bad},x\n"
    conn = RecordingConnection()
    with pytest.raises(DexCareCastError) as err:
        run(conn, report(write_csv(HEADER + rows)), batch_rows=1000, version_columns={"virtual": "updatedAt"})
    message = str(err.value)
    assert "line 1502, column 'updatedAt'" in message and bad not in message
    assert "declare its type in column_types (e.g. integer) if it is not a timestamp" in message
    assert [op.rows for op in conn.ops if op.kind == "bulk_copy"] == [1000]  # the first batch only
    assert conn.steps[-1] == "rollback" and "commit" not in conn.steps


def test_a_value_that_will_not_cast_names_line_and_column(write_csv) -> None:
    """The cast check runs before anything is written; its answer (the first bad line) is the server's."""
    conn = RecordingConnection(bad_casts=(7,))
    with pytest.raises(DexCareCastError, match=r"line 7, column 'updatedAt': the value is not a valid datetimeoffset"):
        run(conn, report(write_csv(HEADER + "v1,a,t,x\n")), column_types={"virtual": {"updatedAt": "timestamptz"}})
    assert "dedupe" not in conn.steps and conn.steps[-1] == "rollback"


def test_an_autocommit_connection_loads_in_one_transaction_and_gets_autocommit_back(write_csv) -> None:
    conn = RecordingConnection(autocommit_state=True)
    run(conn, report(write_csv(HEADER + "v1,a,t,x\n")))
    autocommit = [op.sql for op in conn.ops if op.step == "autocommit"]
    assert autocommit == ["autocommit(False)", "autocommit(True)"]
    assert conn.steps.index("commit") < len(conn.steps) - 1 and conn.autocommit_state is True


# --- Names and types -----------------------------------------------------------------------------------------


def test_quote_doubles_closing_brackets_and_refuses_what_it_cannot_quote() -> None:
    assert quote("dexcare", "avr_virtual") == "[dexcare].[avr_virtual]"
    assert quote("a]b") == "[a]]b]"
    assert quote('x"]; DROP TABLE y; --') == '[x"]]; DROP TABLE y; --]'
    assert quote("é" * 128) == "[" + "é" * 128 + "]"
    with pytest.raises(DexCareSchemaError, match="128 characters"):
        quote("x" * 129)
    with pytest.raises(DexCareSchemaError, match="128 characters"):
        quote("\U0001f600" * 65)  # 130 UTF-16 code units
    with pytest.raises(DexCareSchemaError, match="'%'"):
        quote("dexcare_%s")
    with pytest.raises(DexCareSchemaError):
        quote("")


@pytest.mark.parametrize(
    ("configured", "canonical"),
    [
        ("timestamptz", "datetimeoffset(7)"),
        ("timestamp with time zone", "datetimeoffset(7)"),
        ("DateTime2(3)", "datetime2(3)"),
        ("integer", "int"),
        ("bigint", "bigint"),
        ("boolean", "bit"),
        ("text", "nvarchar(max)"),
        ("nvarchar(100)", "nvarchar(100)"),
        ("decimal(10, 2)", "decimal(10,2)"),
        ("numeric", "numeric(18,0)"),
        ("date", "date"),
    ],
)
def test_configured_types_in_either_spelling(configured, canonical, write_csv) -> None:
    conn = RecordingConnection()
    run(conn, report(write_csv("visitId,a\nv1,1\n")), column_types={"virtual": {"a": configured}})
    create = next(s for s in conn.statements if s.startswith("CREATE TABLE [dexcare].[avr_virtual]"))
    assert f"[a] {canonical} NULL" in create


@pytest.mark.parametrize("configured", ["nvarchar", "int; DROP TABLE x", "int(4)", "varchar(1,2)", "datetime2(max)"])
def test_a_type_that_is_not_plain_sql_server_is_refused(configured, write_csv) -> None:
    conn = RecordingConnection()
    with pytest.raises(DexCareSchemaError, match=re.escape("column_types['virtual']")):
        run(conn, report(write_csv("visitId,a\nv1,1\n")), column_types={"virtual": {"a": configured}})
    assert not any("DROP" in s for s in conn.statements)


# --- A retry that finds its load committed -------------------------------------------------------------------


def test_the_already_loaded_query_parses_as_tsql_reads_the_audit_and_leaves_no_transaction(write_csv, tsql) -> None:
    """The operator's question "did an earlier try commit these reports?" on SQL Server: two statements (is
    there a load_audit, then its rows), each valid T-SQL, the ids as parameters, ended by a rollback."""
    from dexcare.handoff import ReportHandoff
    from dexcare.load.audit import committed_entries, committed_summary
    from dexcare.load.dialects.mssql.dialect import MsSqlDialect

    conn = RecordingConnection()
    assert MsSqlDialect.audit_rows(conn, "dexcare", ["a"]) == []  # no load_audit yet: nothing committed
    loaded = report(write_csv(HEADER + f"v1,a,t,{SECRET}\nv1,b,t,x\nv2,c,t,y\n"))
    summary = run(conn, loaded)
    conn.ops.clear()
    other = "6c7d9b0e-1f2a-4b3c-8d4e-5f6a7b8c9d0e"
    rows = MsSqlDialect.audit_rows(conn, "dexcare", [loaded["report_id"], other])
    assert [op.step for op in conn.ops] == ["audit_lookup", "audit_read", "rollback"]
    for statement in conn.statements:
        assert unparsable(tsql, statement) == [], statement
    assert loaded["report_id"] in conn.statements[1] and other in conn.statements[1]
    assert [r["report_id"] for r in rows] == [loaded["report_id"]]
    assert rows[0]["new_columns"] == summary["reports"][0]["new_columns"]  # a list again, from its JSON text
    record = ReportHandoff.from_xcom(loaded)
    entries = committed_entries([record], rows)
    assert entries is not None and committed_entries([record, replace(record, report_id=other)], rows) is None
    again = committed_summary("dexcare", None, None, entries)
    # The volume verdict was the load's own, made against the baseline of that moment: not re-judged.
    assert again["already_loaded"] is True and again["tables"] == {
        table: {k: v for k, v in totals.items() if k != "volume"} for table, totals in summary["tables"].items()}


# --- Issue 19: what FreeTDS and a real server would do -------------------------------------------------------


def test_trailing_spaces_reach_the_bulk_copy_as_bytes_freetds_does_not_trim(write_csv) -> None:
    """FreeTDS's bulk copy strips trailing spaces from every column the server declares as character data
    (``rtrim_bcpcol`` in src/dblib/bcp.c, for ``nvarchar`` too); a binary column is left alone. So value
    columns are staged as ``varbinary(max)`` and handed over as their UTF-16LE bytes, which the installed
    pymssql binds as SQLVARBINARY, and the merge reads them back as text with ``CONVERT(nvarchar(max), ...)``."""
    from pymssql import _mssql

    conn = RecordingConnection(tables=virtual_table())
    run(conn, report(write_csv(HEADER + 'v1,"abc ","   ", x \n')))
    stage = next(op.sql for op in conn.ops if op.step == "stage")
    assert "[visit_status] varbinary(max) NULL" in stage and "[patient_name] varbinary(max) NULL" in stage
    assert "[visit_id] nvarchar(450) COLLATE Latin1_General_100_BIN2 NOT NULL" in stage
    row = conn.staged["#dexcare_stage_0"][0]
    assert row == ["v1", "abc ".encode("utf-16-le"), "   ".encode("utf-16-le"), " x ".encode("utf-16-le"), 2]
    assert all(_mssql.py2db_type(type(v), v) == _mssql.SQLVARBINARY for v in row[1:4])  # the bind type
    update = next(op.sql for op in conn.ops if op.step == "update")
    assert "t.[visit_status] = CONVERT(nvarchar(max), s.[visit_status])" in update
    assert "(CONVERT(nvarchar(max), s.[visit_status]) + N'|') COLLATE Latin1_General_100_BIN2" in update
    # The installed pymssql treats a column as Unicode text only when tempdb says nchar/ntext/nvarchar/xml:
    # bytes for a varbinary column are bound as they are, neither re-encoded nor trimmed.
    source = Path(pymssql.__file__).with_name("_pymssql.pyx").read_text()
    assert "('nchar', 'ntext', 'nvarchar', 'xml')" in source[source.index("cpdef bulk_copy"):]


def test_each_row_reaches_the_bulk_copy_as_the_key_text_then_utf16_values_none_for_empty_and_its_line(
        write_csv) -> None:
    """The exact values one record turns into, for the kinds of field the encoding treats apart: the key as
    text, an empty field as NULL, characters outside the BMP as their surrogate pairs, then the line."""
    conn = RecordingConnection(tables=virtual_table())
    run(conn, report(write_csv(HEADER + 'v1,,2026-11-12,"Zoë \U0001f600"\nv2,done,,\n')))
    assert conn.staged["#dexcare_stage_0"] == [
        ["v1", None, "2026-11-12".encode("utf-16-le"), "Zoë \U0001f600".encode("utf-16-le"), 2],
        ["v2", "done".encode("utf-16-le"), None, None, 3],
    ]


@pytest.mark.parametrize("key", ["v1 ", "   ", "v 1 "])
def test_a_key_ending_in_a_space_is_refused_naming_line_and_column(key, write_csv) -> None:
    conn = RecordingConnection()
    with pytest.raises(DexCareSchemaError, match=r"line 3, column 'visitId': the key ends in a space") as err:
        run(conn, report(write_csv(HEADER + f"v0,a,t,x\n{key},a,t,{SECRET}\n")))
    assert repr(key) not in str(err.value) and SECRET not in str(err.value)
    assert "bulk_copy" not in conn.steps and conn.steps[-1] == "rollback"
    # A typed key converts the same on both warehouses (surrounding spaces ignored): only text keys are refused.
    typed = RecordingConnection()
    run(typed, report(write_csv(f"visitId,a\n{key.replace('v', '1').replace(' ', '') or 2} ,x\n")),
        column_types={"virtual": {"visitId": "int"}})
    assert typed.steps[-1] == "commit"


def test_the_session_pins_language_then_dateformat() -> None:
    from dexcare.load.dialects.mssql.dialect import SESSION

    settings = [s.strip() for s in SESSION.split(";")]
    # SET LANGUAGE resets the date order, so DATEFORMAT must come after it.
    assert settings.index("SET LANGUAGE us_english") < settings.index("SET DATEFORMAT ymd")


def test_datetime_columns_convert_in_the_iso_style_whatever_the_language(write_csv) -> None:
    conn = RecordingConnection()
    run(conn, report(write_csv(HEADER + "v1,a,2026-11-12 10:00,x\n")),
        column_types={"virtual": {"updatedAt": "datetime"}})
    check = next(op.sql for op in conn.ops if op.step == "cast_check")
    assert "TRY_CONVERT(datetime, CONVERT(nvarchar(max), s.[updated_at]), 126)" in check
    insert = next(op.sql for op in conn.ops if op.step == "insert")
    assert "CONVERT(datetime, CONVERT(nvarchar(max), s.[updated_at]), 126)" in insert
    assert conn.staged_text()["#dexcare_stage_0"][0][2] == "2026-11-12T10:00:00"


@pytest.mark.parametrize(
    ("value", "sql_type", "sent"),
    [
        ("2026-11-18T10:00:00Z", "datetimeoffset(7)", "2026-11-18T10:00:00+00:00"),
        ("2026-11-18 10:00:00+0000", "datetimeoffset(7)", "2026-11-18T10:00:00+00:00"),
        ("2026-11-18 10:00:00+00", "datetimeoffset(7)", "2026-11-18T10:00:00+00:00"),
        ("2026-11-18T10:00:00.123456+01:00", "datetimeoffset(7)", "2026-11-18T10:00:00.123456+01:00"),
        ("2026-11-18 10:00-0530", "datetimeoffset(7)", "2026-11-18T10:00:00-05:30"),
        ("2026-11-18 10:00:00", "datetimeoffset(7)", "2026-11-18T10:00:00"),
        ("2026-11-18 10:00:00+01:00", "datetime2(7)", "2026-11-18T10:00:00"),  # timestamp ignores the offset
        ("18/11/2026", "datetimeoffset(7)", "18/11/2026"),  # not ISO: left for the cast check to name
    ],
)
def test_timestamps_in_postgresql_forms_are_sent_in_the_one_form_sql_server_reads(value, sql_type, sent) -> None:
    from dexcare.load.dialects.mssql.staging import iso_timestamp

    assert iso_timestamp(value, sql_type) == sent


def test_a_change_of_offset_alone_is_a_change(write_csv) -> None:
    """EXCEPT compares datetimeoffset values as instants; the offset is compared too, so the stored offset
    follows the file."""
    tables = virtual_table()
    tables["dexcare.avr_virtual"]["updated_at"] = "datetimeoffset(7)"
    conn = RecordingConnection(tables=tables)
    run(conn, report(write_csv(HEADER + "v1,a,2026-11-18T11:00:00+01:00,x\n")))
    update = next(op.sql for op in conn.ops if op.step == "update")
    assert "DATEPART(TZOFFSET, t.[updated_at])" in update
    assert "DATEPART(TZOFFSET, CONVERT(datetimeoffset(7), CONVERT(nvarchar(max), s.[updated_at])))" in update


@pytest.mark.parametrize(
    ("configured", "reason"),
    [
        ("varchar(40)", "code page"), ("varchar(max)", "code page"), ("char(5)", "pads"), ("nchar(5)", "pads"),
        ("xml", "cannot be compared"), ("ntext", "cannot be compared"), ("image", "cannot be compared"),
        ("geography", "cannot be compared"), ("geometry", "cannot be compared"), ("varbinary(10)", "bytes"),
        ("sql_variant", "not one the load supports"), ("nvarchar(5000)", "1 to 4000"), ("nvarchar(0)", "1 to 4000"),
        ("datetime2(8)", "0 to 7"), ("datetimeoffset(9)", "0 to 7"), ("decimal(50,2)", "1 to 38"),
        ("decimal(5,6)", "scale no larger"),
    ],
)
def test_a_type_the_load_cannot_fill_and_compare_is_refused_before_the_load(configured, reason, write_csv) -> None:
    conn = RecordingConnection()
    with pytest.raises(DexCareSchemaError) as err:
        run(conn, report(write_csv("visitId,Amount\nv1,1\n")), column_types={"virtual": {"Amount": configured}})
    assert "column_types['virtual']['amount']" in str(err.value) and reason in str(err.value)
    assert not ({"create_table", "stage", "bulk_copy"} & set(conn.steps)) and conn.steps[-1] == "rollback"


@pytest.mark.parametrize("existing", ["char(10)", "varchar(100)", "xml", "ntext"])
def test_an_existing_column_of_such_a_type_is_refused_before_staging(existing, write_csv) -> None:
    tables = virtual_table()
    tables["dexcare.avr_virtual"]["visit_status"] = existing
    conn = RecordingConnection(tables=tables)
    with pytest.raises(DexCareSchemaError, match=re.escape(f"dexcare.avr_virtual: column 'visitStatus' is {existing}")):
        run(conn, report(write_csv(HEADER + "v1,a,t,x\n")))
    assert "stage" not in conn.steps and conn.steps[-1] == "rollback"


def test_a_value_longer_than_its_nvarchar_names_line_and_column(write_csv) -> None:
    """Checked before the bulk copy, in UTF-16 code units as nvarchar counts, instead of a bare error 2628
    in the middle of the merge."""
    body = HEADER + "v1,abcde,t,x\n" + "v2,\U0001f600\U0001f600\U0001f600,t,x\n"
    conn = RecordingConnection()
    with pytest.raises(DexCareSchemaError, match=r"line 3, column 'visitStatus'.*\(nvarchar\(5\)\)") as err:
        run(conn, report(write_csv(body)), column_types={"virtual": {"visitStatus": "nvarchar(5)"}})
    assert "\U0001f600" not in str(err.value) and "bulk_copy" not in conn.steps


def test_new_columns_are_added_after_the_upload_just_before_the_merge(write_csv) -> None:
    """ALTER TABLE takes a schema-modification lock every reader of the table waits for until the commit."""
    conn = RecordingConnection(tables={**virtual_table(missing=("patient_name",)),
                                       **history_table(missing=("patient_name",))})
    run(conn, report(write_csv(HEADER + "v1,a,t,x\n")), history=["virtual"])
    steps = conn.steps
    assert in_order(steps, ["stage", "bulk_copy", "dedupe", "add_columns", "history_columns", "update", "insert"])
    assert steps.index("add_columns") > max(i for i, s in enumerate(steps) if s == "bulk_copy")


@pytest.mark.parametrize(("schema", "timeout", "ms"), [("dexcare", None, 1_800_000), ("Dexcare", 2.5, 2500)])
def test_the_lock_is_named_as_the_catalog_compares_and_its_wait_is_bounded(schema, timeout, ms, write_csv) -> None:
    conn = RecordingConnection()
    options = {} if timeout is None else {"lock_timeout_seconds": timeout}
    load_reports(conn, [report(write_csv(HEADER + "v1,a,t,x\n"))], dialect="mssql",
                 options=LoadOptions(schema=schema, **options))
    lock = next(op.sql for op in conn.ops if op.step == "lock")
    assert f"@LockTimeout = {ms};" in lock and "@LockTimeout = -1" not in lock
    assert (f"CASE WHEN N'a' COLLATE CATALOG_DEFAULT = N'A' COLLATE CATALOG_DEFAULT THEN UPPER(N'{schema}') "
            f"ELSE N'{schema}' END") in lock


@pytest.mark.parametrize(
    ("holder", "named"),
    [((57, "loader", "worker-3", "airflow"), "session 57 (login 'loader', host 'worker-3', program 'airflow')"),
     (None, "grant VIEW SERVER STATE")],
)
def test_a_lock_wait_that_times_out_names_the_holder_and_is_worth_a_retry(holder, named, write_csv, tsql) -> None:
    conn = RecordingConnection(lock_result=-1, lock_holder=holder)
    with pytest.raises(DexCareWarehouseError) as err:
        run(conn, report(write_csv(HEADER + "v1,a,t,x\n")), lock_timeout_seconds=30)
    assert "lock_holder" in conn.steps and all(unparsable(tsql, s) == [] for s in conn.statements)
    assert err.value.retryable and "Waited 30 s for the load lock on schema 'dexcare'" in str(err.value)
    assert named in str(err.value)
    assert "stage" not in conn.steps and conn.steps[-1] == "rollback"


def _db_lib(number: int, severity: int, text: str) -> bytes:
    return f"DB-Lib error message {number}, severity {severity}:\n{text}\n".encode()


class _BulkCopyError(pymssql._mssql.MSSQLDatabaseException):
    """What bulk_copy raises: _mssql's own exception (not wrapped by pymssql's DB-API layer), number set."""

    number = 20049
    severity = 4


@pytest.mark.parametrize(
    ("error", "retryable"),
    [
        (pymssql.OperationalError((20047, _db_lib(20047, 9, "DBPROCESS is dead or not enabled"))), True),
        (pymssql.OperationalError((20003, _db_lib(20003, 6, "Adaptive Server connection timed out"))), True),
        (pymssql.OperationalError((20004, _db_lib(20004, 9, "Read from the server failed"))), True),
        (pymssql.OperationalError((20299, _db_lib(20299, 9, "a communication error FreeTDS may add"))), True),
        (pymssql.OperationalError((1205, b"Transaction was deadlocked ... chosen as the deadlock victim.")), True),
        (pymssql.OperationalError((40613, b"Database is not currently available.")), True),
        (pymssql.OperationalError("Cannot commit transaction: (20006, b'DB-Lib error message 20006, severity 9')"),
         True),
        (pymssql.InterfaceError("Connection is closed."), True),
        (pymssql._mssql.MSSQLDriverException("Not connected to any MS SQL server"), True),
        (_BulkCopyError((20049, _db_lib(20049, 4, f"Data conversion resulted in overflow {SECRET}"))), False),
        (pymssql.OperationalError((20050, _db_lib(20050, 4, "stopped by syntax error in source field"))), False),
        (pymssql._mssql.MSSQLDriverException("Unable to convert value dbtype=39"), False),
        (pymssql.IntegrityError((547, f"conflicted with the CHECK constraint '{SECRET}'".encode())), False),
        (pymssql.OperationalError((2628, f"String or binary data would be truncated '{SECRET}'".encode())), False),
        (pymssql.OperationalError((229, b"The INSERT permission was denied on the object 'avr_virtual'")), False),
        (pymssql.OperationalError((1105, b"Could not allocate space for object in database")), False),
    ],
    ids=lambda v: str(v.args[0])[:40] if isinstance(v, BaseException) else str(v),
)
def test_errors_are_retried_only_when_another_try_can_succeed(error, retryable, write_csv) -> None:
    conn = RecordingConnection(fail_step="bulk_copy", fail_with=error)
    with pytest.raises(DexCareLoadError) as err:
        run(conn, report(write_csv(HEADER + "v1,a,t,x\n")))
    assert err.value.retryable is retryable
    assert isinstance(err.value, DexCareWarehouseError) is retryable
    assert SECRET not in str(err.value) and conn.steps[-1] == "rollback"


# --- The CSV rules: the same files refused, with the same words, as on PostgreSQL (test_csv_rules.py) -----------


@pytest.mark.parametrize(
    ("body", "rows", "error", "match"),
    [
        ((HEADER + f"v1,a,t,{SECRET}\nv2,a,t,x\n").replace("\n", "\r"), 0, DexCareCSVError,
         r"line 1: line endings are CR only \(old Mac style"),
        (HEADER + f"v1,a,t,{SECRET}\nv2,a,t,x\n", 3, DexCareCSVError,
         r"the download counted 3 data row\(s\), the load staged 2; nothing was written"),
        (HEADER + f"v1,a,t,{SECRET}\rv2,a,t,x\n", 1, DexCareCSVError,
         r"line 2: mixed line endings \(a bare carriage return ends a line here\)"),
        (f"v1,a,t,{SECRET}\nv2,a,t,{SECRET}\n", 1, DexCareSchemaError,
         r"line 1: the first line is not a DexCare report header: none of its 4 field\(s\) is the key column"),
        (f"{SECRET},{SECRET}\n", 0, DexCareSchemaError, r"line 1: the first line is not a DexCare report header"),
    ],
    ids=["cr-only", "count-differs", "bare-cr", "headerless", "headerless-collision"],
)
def test_the_csv_rules_fail_before_the_commit_and_quote_no_value(body, rows, error, match, write_csv,
                                                                 caplog) -> None:
    conn = RecordingConnection()
    with pytest.raises(error, match=match) as err:
        run(conn, report(write_csv(body), rows=rows))
    assert "commit" not in conn.steps and conn.steps[-1] == "rollback"
    assert SECRET not in str(err.value) and SECRET not in caplog.text


# --- Issue 21: the volume guard's query ----------------------------------------------------------------------


def test_the_volume_guard_asks_one_tsql_query_per_report_and_refuses_an_empty_day(write_csv, tsql) -> None:
    """Six loads of 10-day windows (and one of 30 days, not counted) recorded by the fake connection, then an
    empty report: the baseline query and the audit index parse as T-SQL, the query names the report type and
    window length as parameters, and the empty day rolls back before any write."""
    from dexcare.exceptions import DexCareVolumeError

    conn = RecordingConnection()
    for day in range(6):
        run(conn, report(write_csv(HEADER + f"v{day},a,t,{SECRET}\nw{day},b,t,x\n"), end=END - dt.timedelta(days=day)))
    run(conn, report(write_csv(HEADER + "x1,a,t,y\n" * 1), start=END - dt.timedelta(days=29)))
    conn.ops.clear()
    judged = run(conn, report(write_csv(HEADER + "z1,a,t,y\n")))["tables"]["avr_virtual"]["volume"]
    assert (judged["verdict"], judged["baseline_loads"], judged["baseline_median"]) == ("ok", 6, 2.0)
    asked = [op.sql for op in conn.ops if op.step == "volume"]
    index = [op.sql for op in conn.ops if op.step == "audit_index"]
    assert len(asked) == 1 and len(index) == 1
    assert "N'virtual'" in asked[0] and "DATEDIFF(day, window_start, window_end) = 9" in asked[0]
    for statement in asked + index:
        assert unparsable(tsql, statement) == [], statement
    conn.ops.clear()
    with pytest.raises(DexCareVolumeError) as raised:
        run(conn, report(write_csv(HEADER)))
    assert raised.value.counts["baseline_loads"] == 7 and raised.value.counts["rows"] == 0
    steps = conn.steps
    assert "volume" in steps and steps[-1] == "rollback"
    assert not {"dedupe", "update", "insert", "audit", "commit"} & set(steps[steps.index("volume"):])


# --- Rows the old-window guard kept, counted apart from unchanged ------------------------------------------------

#: ``load_audit`` as the first release made it on SQL Server: no kept_newer.
OLD_AUDIT = {"id": "bigint", "dag_id": "nvarchar(250)", "run_id": "nvarchar(250)", "report_id": "nvarchar(64)",
             "report_type": "nvarchar(32)", "target_table": "nvarchar(128)", "file_uri": "nvarchar(max)",
             "file_sha256": "nvarchar(64)", "window_start": "date", "window_end": "date",
             "rows_in_file": "bigint", "duplicates_in_file": "bigint", "inserted": "bigint", "updated": "bigint",
             "unchanged": "bigint", "new_columns": "nvarchar(max)", "started_at": "datetimeoffset(7)",
             "finished_at": "datetimeoffset(7)"}


def test_an_old_window_counts_the_rows_a_newer_window_wrote_apart_from_unchanged(write_csv, tsql) -> None:
    conn = RecordingConnection(tables=virtual_table())
    run(conn, report(write_csv(HEADER + "v1,a,t,x\n"), end=END))
    assert "kept_newer" not in conn.steps  # the newest window: no newer one to count against
    conn.ops.clear()
    conn.kept_newer = 2  # what SQL Server would count: two of the file's keys hold a newer window's row
    summary = run(conn, report(write_csv(HEADER + f"v1,a,t,{SECRET}\nv2,b,t,x\nv3,c,t,x\n"),
                               end=END - dt.timedelta(days=5)))
    assert in_order(conn.steps, ["newest_window", "kept_newer", "drop_stage", "audit", "commit"])
    count = next(op.sql for op in conn.ops if op.step == "kept_newer")
    assert unparsable(tsql, count) == [], count
    assert "INNER JOIN [#dexcare_stage" in count and f"[_dexcare_window_end] > N'{END - dt.timedelta(days=5)}'" in count
    table = summary["tables"]["avr_virtual"]
    assert (table["inserted"], table["updated"], table["unchanged"], table["kept_newer"]) == (0, 0, 1, 2)
    assert conn.audit[-1]["kept_newer"] == 2 and conn.audit[-1]["unchanged"] == 1


def test_an_audit_table_from_before_kept_newer_is_upgraded_under_the_lock(write_csv, tsql) -> None:
    from dexcare.load.dialects.mssql.dialect import MsSqlDialect

    conn = RecordingConnection(tables={**virtual_table(), "dexcare.load_audit": dict(OLD_AUDIT)})
    conn.audit.append({f: None for f in OLD_AUDIT if f != "id"} | {
        "report_id": "old", "report_type": "virtual", "target_table": "avr_virtual", "window_start": "2026-11-01",
        "window_end": "2026-11-11", "rows_in_file": 1, "new_columns": "[]"})
    assert [r.get("kept_newer") for r in MsSqlDialect.audit_rows(conn, "dexcare", ["old"])] == [None]
    assert "[kept_newer]" not in conn.statements[-1]  # not asked of a table without it
    conn.ops.clear()
    run(conn, report(write_csv(HEADER + f"v1,a,t,{SECRET}\n")))
    upgrade = [op.sql for op in conn.ops if op.step == "audit_upgrade"]
    assert upgrade == ["ALTER TABLE [dexcare].[load_audit] ADD [kept_newer] bigint NOT NULL DEFAULT 0"]
    assert unparsable(tsql, upgrade[0]) == []
    assert in_order(conn.steps, ["lock", "audit_upgrade", "stage", "audit", "commit"])
    assert "[kept_newer]" in next(op.sql for op in conn.ops if op.step == "audit")
    conn.ops.clear()
    run(conn, report(write_csv(HEADER + "v1,a,t,x\n")))
    assert "audit_upgrade" not in conn.steps  # once
