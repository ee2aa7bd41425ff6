"""The same file, the same visits and values on both warehouses: what FreeTDS's bulk copy and SQL Server's own
rules would change (issue 19), run against PostgreSQL in every run and against SQL Server in ``make test-mssql``.

The offline proof of the same items (what the bulk copy is handed, the statements, the retry classes) is in
dialects/mssql/test_offline.py; only these runs show what a real SQL Server does with them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import pytest
from dexcare.exceptions import DexCareLoadError, DexCareSchemaError, DexCareWarehouseError
from dexcare.load.loader import LoadOptions, load_reports

from tests.load.conftest import report

HEADER = "visitId,visitStatus,updatedAt,patientName\n"
SECRET = "SECRET-PATIENT-19"
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def mssql_only(test: Any) -> Any:
    """What only SQL Server has (login languages, sp_getapplock, its type rules, its grants)."""
    return pytest.mark.parametrize("warehouse", ["mssql"], indirect=True)(test)


def seconds(text: str) -> float:
    return (dt.datetime.fromisoformat(text) - EPOCH).total_seconds()


# --- 1. Trailing spaces -----------------------------------------------------------------------------------


def test_trailing_spaces_in_values_are_kept_and_compared(load, write_csv, warehouse, schema) -> None:
    """FreeTDS's bulk copy trims trailing spaces from character columns; the load stages bytes it cannot trim,
    so the values, and whether they changed, are the same as on PostgreSQL."""
    first = load(report(write_csv(HEADER + 'v1,"abc ","   ","x "\nv2,abc,t,x\n')))
    assert first["tables"]["avr_virtual"]["inserted"] == 2
    assert warehouse.rows(schema, "avr_virtual") == [
        {"visit_id": "v1", "visit_status": "abc ", "updated_at": "   ", "patient_name": "x "},
        {"visit_id": "v2", "visit_status": "abc", "updated_at": "t", "patient_name": "x"},
    ]
    again = load(report(write_csv(HEADER + 'v1,"abc ","   ","x "\nv2,"abc ",t,x\n')))
    table = again["tables"]["avr_virtual"]
    assert (table["updated"], table["unchanged"]) == (1, 1)  # only v2, whose value gained a space
    assert warehouse.rows(schema, "avr_virtual")[1]["visit_status"] == "abc "


@pytest.mark.parametrize("key", ["v1 ", "  "])
def test_a_key_ending_in_a_space_is_refused_and_nothing_is_written(key, load, write_csv, warehouse, schema) -> None:
    """SQL Server's ``=`` and unique indexes ignore trailing spaces, so ``v1`` and ``v1 `` would be one visit
    there and two on PostgreSQL: both refuse such a key, naming the line and the column."""
    with pytest.raises(DexCareSchemaError, match=r"line 3, column 'visitId': the key ends in a space") as err:
        load(report(write_csv(HEADER + f"v1,a,t,x\n{key},b,t,{SECRET}\n")))
    assert SECRET not in str(err.value) and repr(key) not in str(err.value)
    assert "avr_virtual" not in warehouse.tables(schema)


# --- 2. Dates and timestamps ------------------------------------------------------------------------------


def test_timestamp_forms_postgresql_reads_load_as_the_same_instants(load, write_csv, warehouse, schema) -> None:
    values = {"v1": "2026-11-18T10:00:00Z", "v2": "2026-11-18 10:00:00+0000", "v3": "2026-11-18 10:00:00+00",
              "v4": "2026-11-18T11:00:00+01:00", "v5": "2026-11-18 04:30-0530", "v6": "2026-11-18T10:00:00.25+00:00"}
    body = "".join(f"{k},a,{v},x\n" for k, v in values.items())
    load(report(write_csv(HEADER + body)), column_types={"virtual": {"updatedAt": "timestamptz"}})
    found = warehouse.instants(schema, "avr_virtual", "updated_at")
    expected = seconds("2026-11-18T10:00:00+00:00")
    assert {k: epoch for k, (epoch, _) in found.items()} == {
        "v1": expected, "v2": expected, "v3": expected, "v4": expected, "v5": expected, "v6": expected + 0.25}
    if warehouse.name == "mssql":  # datetimeoffset keeps the offset the file gave
        assert {k: offset for k, (_, offset) in found.items()} == {
            "v1": 0, "v2": 0, "v3": 0, "v4": 60, "v5": -330, "v6": 0}


def test_a_change_of_offset_alone(load, write_csv, warehouse, schema) -> None:
    """SQL Server stores the offset, so a new offset for the same instant is a change it writes (EXCEPT alone
    compares instants and would keep the old offset forever); PostgreSQL's timestamptz keeps only the instant,
    so there is nothing different to write."""
    types = {"column_types": {"virtual": {"updatedAt": "timestamptz"}}}
    load(report(write_csv(HEADER + "v1,a,2026-11-18T10:00:00+00:00,x\n")), **types)
    summary = load(report(write_csv(HEADER + "v1,a,2026-11-18T11:00:00+01:00,x\n")), **types)
    epoch, offset = warehouse.instants(schema, "avr_virtual", "updated_at")["v1"]
    assert epoch == seconds("2026-11-18T10:00:00+00:00")
    updated = summary["tables"]["avr_virtual"]["updated"]
    assert (updated, offset) == ((1, 60) if warehouse.name == "mssql" else (0, None))


@mssql_only
def test_dates_do_not_depend_on_the_login_language(write_csv, warehouse, schema) -> None:
    """A British login reads ``2026-11-12 10:00`` into ``datetime`` as year-day-month (December 11th); the
    load pins the session's language and date order."""
    connection = warehouse.connect()
    try:
        cursor = connection.cursor()
        cursor.execute("SET LANGUAGE British")
        load_reports(connection, [report(write_csv(HEADER + "v1,a,2026-11-12 10:00,x\n"))], dialect=warehouse.name,
                     options=LoadOptions(schema=schema, column_types={"virtual": {"updatedAt": "datetime"}}))
    finally:
        connection.close()
    table = warehouse.quote(schema, "avr_virtual")
    stored = warehouse.query(f"SELECT CONVERT(nvarchar(30), updated_at, 126) FROM {table}")
    assert stored == [("2026-11-12T10:00:00",)]


# --- 3. Configured types -----------------------------------------------------------------------------------


@mssql_only
@pytest.mark.parametrize("configured", ["char(5)", "varchar(40)", "xml", "nvarchar(5000)", "datetime2(8)",
                                        "decimal(50,2)"])
def test_a_type_the_load_cannot_fill_and_compare_fails_before_the_load(configured, load, write_csv, warehouse,
                                                                       schema) -> None:
    with pytest.raises(DexCareSchemaError, match=r"column_types\['virtual'\]\['visitstatus'\]"):
        load(report(write_csv(HEADER + "v1,a,t,x\n")), column_types={"virtual": {"visitStatus": configured}})
    assert "avr_virtual" not in warehouse.tables(schema)


@mssql_only
def test_a_value_too_long_for_its_nvarchar_names_line_and_column(load, write_csv, warehouse, schema) -> None:
    with pytest.raises(DexCareSchemaError, match=r"line 3, column 'visitStatus'.*nvarchar\(5\)") as err:
        load(report(write_csv(HEADER + f"v1,abcde,t,x\nv2,{SECRET},t,x\n")),
             column_types={"virtual": {"visitStatus": "nvarchar(5)"}})
    assert SECRET not in str(err.value) and "avr_virtual" not in warehouse.tables(schema)


# --- 4. Schema changes after the upload ---------------------------------------------------------------------


class _Probing:
    """The report file, read by the load; on its third read (the first takes 64 KiB for the header), another
    session reads the target table."""

    def __init__(self, raw: BinaryIO, probe: Callable[[], str | None], seen: list[str | None]) -> None:
        self._raw, self._probe, self._seen, self._reads = raw, probe, seen, 0

    def read(self, size: int = -1) -> bytes:
        self._reads += 1
        if self._reads == 3:
            self._seen.append(self._probe())
        return self._raw.read(size)

    def __enter__(self) -> _Probing:
        return self

    def __exit__(self, *exc: object) -> None:
        self._raw.close()


def test_readers_are_not_blocked_while_the_file_uploads(load, write_csv, warehouse, schema) -> None:
    """A new column is added just before the merge, not before the upload: ALTER TABLE's schema lock blocks
    every reader (NOLOCK too on SQL Server) until the commit."""
    load(report(write_csv("visitId,visitStatus\nv0,a\n")))
    body = HEADER + "".join(f"v{i},status-{i},t,name-{i}\n" for i in range(4000))  # well past 64 KiB
    seen: list[str | None] = []

    def opener(uri: str) -> _Probing:
        return _Probing(Path(uri).open("rb"), lambda: warehouse.probe(schema, "avr_virtual"), seen)

    summary = load(report(write_csv(body)), opener=opener, block_size=512, batch_rows=500)
    assert seen == [None]  # the reader got its answer during the upload
    assert summary["tables"]["avr_virtual"]["new_columns"] == ["updated_at", "patient_name"]


# --- 5. The load lock --------------------------------------------------------------------------------------


@mssql_only
def test_loads_into_one_schema_spelled_in_two_cases_queue_and_the_wait_is_bounded(write_csv, warehouse,
                                                                                 schema) -> None:
    from dexcare.load.dialects.mssql.dialect import LOCK

    if warehouse.query("SELECT CASE WHEN N'a' COLLATE CATALOG_DEFAULT = N'A' COLLATE CATALOG_DEFAULT "
                       "THEN 1 ELSE 0 END")[0][0] != 1:
        pytest.skip("this database compares names case-sensitively: Dexcare and dexcare are two schemas there")
    holder = warehouse.connect()  # a load of the upper-case spelling, holding its lock
    try:
        cursor = holder.cursor()
        cursor.execute(LOCK, {"schema": schema.upper(), "timeout_ms": 0})
        assert cursor.fetchone()[0] >= 0
        connection = warehouse.connect()
        try:
            with pytest.raises(DexCareWarehouseError, match=r"Waited 1 s for the load lock") as err:
                load_reports(connection, [report(write_csv(HEADER + "v1,a,t,x\n"))], dialect=warehouse.name,
                             options=LoadOptions(schema=schema, lock_timeout_seconds=1))
        finally:
            connection.close()
        assert err.value.retryable and "held by" in str(err.value)
    finally:
        holder.rollback()
        holder.close()
    assert "avr_virtual" not in warehouse.tables(schema)


# --- 6. Errors by cause --------------------------------------------------------------------------------------


@mssql_only
def test_a_schema_the_login_may_not_use_is_refused_not_retried(write_csv, warehouse) -> None:
    """A permission error will fail the same way on every retry (warehouse.create_schema would grant it)."""
    schema = warehouse.new_schema()
    warehouse.query(f"CREATE SCHEMA {warehouse.quote(schema)}")  # owned by dbo, nothing granted to the loader
    try:
        connection = warehouse.connect()
        try:
            with pytest.raises(DexCareLoadError) as err:
                load_reports(connection, [report(write_csv(HEADER + "v1,a,t,x\n"))], dialect=warehouse.name,
                             options=LoadOptions(schema=schema))
        finally:
            connection.close()
        assert not err.value.retryable and "refused the load" in str(err.value)
    finally:
        warehouse.drop_schema(schema)


# --- 7. The grants README gives ----------------------------------------------------------------------------


@mssql_only
def test_loads_run_as_a_login_with_only_the_documented_grants(load, write_csv, warehouse, schema) -> None:
    connection = warehouse.connect()
    try:
        cursor = connection.cursor()
        cursor.execute("SELECT IS_SRVROLEMEMBER('sysadmin'), IS_MEMBER('db_owner'), IS_MEMBER('db_ddladmin'), "
                       "IS_MEMBER('db_datawriter')")
        assert cursor.fetchone() == (0, 0, 0, 0)
        cursor.execute("SELECT permission_name FROM fn_my_permissions(NULL, 'DATABASE')")
        granted = {row[0] for row in cursor.fetchall()}
    finally:
        connection.close()
    assert {"CREATE SCHEMA", "CREATE TABLE"} <= granted
    assert not granted & {"ALTER", "CONTROL", "INSERT", "UPDATE", "DELETE", "SELECT", "ALTER ANY SCHEMA"}
    # ... and every step of a load with history and drift works with them.
    load(report(write_csv("visitId,visitStatus\nv1,a\n")), history=["virtual"])
    summary = load(report(write_csv(HEADER + "v1,b,t,x\nv2,a,t,x\n")), history=["virtual"])
    assert (summary["tables"]["avr_virtual"]["inserted"], summary["tables"]["avr_virtual"]["updated"]) == (1, 1)


@pytest.mark.parametrize(
    ("error", "retryable"),
    [
        ("AdminShutdown", True), ("DeadlockDetected", True), ("SerializationFailure", True),
        ("TooManyConnections", True), ("LockNotAvailable", True), ("ConnectionFailure", True),
        ("DiskFull", False), ("OutOfMemory", False), ("InsufficientPrivilege", False), ("InvalidDatetimeFormat", False),
    ],
)
def test_postgresql_errors_are_retried_only_when_another_try_can_succeed(error, retryable, pg_uri) -> None:
    """The same split by cause on PostgreSQL, by SQLSTATE class: a full disk is not a lost connection."""
    import psycopg
    from dexcare.load.csv_stream import open_report
    from dexcare.load.dialects.postgres.dialect import PostgresDialect

    with psycopg.connect(pg_uri) as conn:
        dialect = PostgresDialect(conn, LoadOptions(), open_report)
        translated = dialect.translate(getattr(psycopg.errors, error)(), current="report.csv", committing=False)
    assert translated is not None and translated.retryable is retryable
    assert isinstance(translated, DexCareWarehouseError) is retryable
