"""SQL Server without a SQL Server: what can be proven on a machine that cannot run one.

No SQL Server installs from the registries these machines reach, so the live suite (the same scenarios as
PostgreSQL, ``make test-mssql``) is skipped here. What runs instead, for real: pymssql and the FreeTDS its
wheel bundles; every statement the SQL Server dialect generates for the scenarios, after pymssql's own
parameter substitution, parses as T-SQL with sqlfluff; and against a FAKE connection
(:mod:`tests.load.recording`, which records and never executes) the order of operations and the rollback on
every failure path. None of this shows what SQL Server itself would do with the statements.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
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
from dexcare.load.dialects.mssql_sql import quote
from dexcare.load.loader import LoadOptions, load_reports
from sqlfluff.core import FluffConfig, Linter

from tests.load.conftest import END, report
from tests.load.recording import RecordingConnection

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
    assert any(SECRET in row for rows in conn.staged.values() for row in rows)


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
    assert in_order(conn.steps, ["lock", "history_table", "baseline", "stage", "update", "insert", "audit", "commit"])
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
    first = conn.staged["#dexcare_stage_0"][0]
    assert first == ["v0", "s", "t", "n", 2]  # the values, then the line the record starts on


def test_empty_fields_are_staged_as_null_and_lines_follow_the_file(write_csv) -> None:
    conn = RecordingConnection()
    run(conn, report(write_csv(HEADER + 'v1,,"two\nlines",x\nv2,"",t,\n')))
    assert conn.staged["#dexcare_stage_0"] == [["v1", None, "two\nlines", "x", 2], ["v2", None, "t", None, 4]]


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
    version = "s.[updated_at]"
    instant = (f"CONVERT(datetimeoffset(7), STUFF(CASE WHEN RIGHT({version}, 5) LIKE N'[+-][0-9][0-9][0-9][0-9]' "
               f"THEN STUFF({version}, LEN({version}) - 1, 0, N':') ELSE {version} END, 11, 1, N'T'))")
    assert f"PARTITION BY CONVERT(int, s.[visit_id]) ORDER BY {instant} DESC, s.[_dexcare_line] DESC" in dedupe
    assert "GROUP BY CONVERT(int, d.[visit_id]) HAVING COUNT_BIG(*) > 1" in dedupe
    assert "WHERE dup.[visit_id] = CONVERT(int, s.[visit_id])" in dedupe
    assert [row[2] for row in conn.staged["#dexcare_stage_0"]] == [
        "2026-11-18T10:00:00.500Z", "2026-11-18T10:00:00Z", "2026-11-18 09:00:00-0200"]
    # Declared, the version orders by its type, as before.
    conn = RecordingConnection()
    run(conn, report(write_csv(body)), version_columns={"virtual": "updatedAt"},
        column_types={"virtual": {"updatedAt": "text"}})
    dedupe = next(op.sql for op in conn.ops if op.step == "dedupe")
    assert "ORDER BY s.[updated_at] DESC, s.[_dexcare_line] DESC" in dedupe and "datetimeoffset" not in dedupe


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
