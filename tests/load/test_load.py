"""Dedupe, upsert, lineage, drift, guard and audit, on every warehouse (see ``warehouse`` in conftest)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging

import pytest
from dexcare.exceptions import DexCareCastError, DexCareCSVError, DexCareLoadError, DexCareSchemaError

from tests.load.conftest import END, postgres_only, report

HEADER = "visitId,visitStatus,updatedAt,patientName\n"
TYPES = {"postgres": {"timestamptz": "timestamp with time zone", "integer": "integer"},
         "mssql": {"timestamptz": "datetimeoffset", "integer": "int"}}


def test_first_load_dedupes_within_file_last_occurrence_wins(load, write_csv, warehouse, schema) -> None:
    path = write_csv(
        HEADER
        + "v1,scheduled,2026-11-18T10:00:00Z,Ana\n"
        + 'v2,completed,2026-11-18T11:00:00Z,"O\'Brien, ""Bud"""\n'
        + "v1,completed,2026-11-18T09:00:00Z,Ana María\n"  # later in the file, older timestamp: still wins
        + 'v3,cancelled,2026-11-19T08:00:00Z,"Line one\nline two"\n'
    )
    rep = report(path, report_id="3f2b8c1e-4d5a-4b6c-9e7f-0a1b2c3d4e5f")
    summary = load(rep)
    assert warehouse.rows(schema, "avr_virtual") == [
        {"visit_id": "v1", "visit_status": "completed", "updated_at": "2026-11-18T09:00:00Z",
         "patient_name": "Ana María"},
        {"visit_id": "v2", "visit_status": "completed", "updated_at": "2026-11-18T11:00:00Z",
         "patient_name": 'O\'Brien, "Bud"'},
        {"visit_id": "v3", "visit_status": "cancelled", "updated_at": "2026-11-19T08:00:00Z",
         "patient_name": "Line one\nline two"},
    ]
    lineage = warehouse.rows(schema, "avr_virtual", lineage=True)[0]
    assert lineage["_dexcare_report_id"] == "3f2b8c1e-4d5a-4b6c-9e7f-0a1b2c3d4e5f"
    assert lineage["_dexcare_report_type"] == "virtual"
    assert lineage["_dexcare_window_start"] == dt.date(2026, 11, 11)
    assert lineage["_dexcare_window_end"] == END
    assert lineage["_dexcare_loaded_at"] is not None
    table = summary["tables"]["avr_virtual"]
    assert (table["rows_in_file"], table["duplicates_in_file"], table["inserted"], table["updated"],
            table["unchanged"]) == (4, 1, 3, 0, 0)
    json.dumps(summary)  # fit for XCom
    assert warehouse.unique_key(schema, "avr_virtual") == ["visit_id"]


def test_version_column_picks_the_newest_row_not_the_last(load, write_csv, warehouse, schema) -> None:
    path = write_csv(
        HEADER
        + "v1,completed,2026-11-18T12:00:00Z,Ana\n"
        + "v1,scheduled,2026-11-18T09:00:00Z,Ana\n"
        + "v1,in_progress,2026-11-18T10:00:00Z,Ana\n"
        + "v2,scheduled,,Bo\n"
        + "v2,completed,2026-11-18T10:00:00Z,Bo\n"
        + "v2,no_show,,Bo\n"  # no version: never beats a row that has one
    )
    summary = load(report(path), version_columns={"virtual": "updatedAt"},
                   column_types={"virtual": {"updatedAt": "timestamptz"}})
    assert [(r["visit_id"], r["visit_status"]) for r in warehouse.rows(schema, "avr_virtual")] == [
        ("v1", "completed"), ("v2", "completed")]
    assert summary["tables"]["avr_virtual"]["duplicates_in_file"] == 4


def test_overlapping_windows_dedupe_across_files_and_runs(load, write_csv, warehouse, schema) -> None:
    day1 = write_csv(HEADER + "v1,scheduled,t1,Ana\nv2,scheduled,t1,Bo\n")
    day2 = write_csv(HEADER + "v2,completed,t2,Bo\nv3,scheduled,t2,Cy\n")
    # Two reports of the same type in one run, and then the next day's report in another run.
    summary = load(report(day1, end=END), report(day2, end=END + dt.timedelta(days=1)))
    assert [(r["visit_id"], r["visit_status"]) for r in warehouse.rows(schema, "avr_virtual")] == [
        ("v1", "scheduled"), ("v2", "completed"), ("v3", "scheduled")]
    assert [(r["inserted"], r["updated"], r["unchanged"]) for r in summary["reports"]] == [(2, 0, 0), (1, 1, 0)]
    day3 = write_csv(HEADER + "v3,completed,t3,Cy\nv4,scheduled,t3,Di\n")
    load(report(day3, end=END + dt.timedelta(days=2)))
    data = warehouse.rows(schema, "avr_virtual")
    assert data[2:] == [
        {"visit_id": "v3", "visit_status": "completed", "updated_at": "t3", "patient_name": "Cy"},
        {"visit_id": "v4", "visit_status": "scheduled", "updated_at": "t3", "patient_name": "Di"},
    ]
    assert len(data) == 4


def test_reload_is_idempotent_and_rewrites_nothing(load, write_csv, warehouse, schema) -> None:
    path = write_csv(HEADER + "v1,scheduled,t1,Ana\nv2,completed,t1,Bo\nv1,completed,t2,Ana\n")
    load(report(path))
    warehouse.watch_rewrites(schema, "avr_virtual")
    first = warehouse.snapshot(schema)["avr_virtual"]
    for _ in range(2):
        summary = load(report(path))
        table = summary["tables"]["avr_virtual"]
        assert (table["inserted"], table["updated"], table["unchanged"]) == (0, 0, 2)
    # Same values, same lineage, and the same physical row versions: nothing was rewritten.
    assert warehouse.snapshot(schema)["avr_virtual"] == first


def test_a_change_in_case_or_trailing_space_is_a_change(load, write_csv, warehouse, schema) -> None:
    """Change detection is exact: not the database's (case-insensitive, space-padding) comparison."""
    load(report(write_csv(HEADER + "v1,scheduled,t1,Ana\nv2,done,t1,Bo\nv3,x,t1,\n")))
    summary = load(report(write_csv(HEADER + "v1,Scheduled,t1,Ana\nv2,done,t1,Bo \nv3,x,t1,\n")))
    assert (summary["reports"][0]["updated"], summary["reports"][0]["unchanged"]) == (2, 1)
    data = warehouse.rows(schema, "avr_virtual")
    assert (data[0]["visit_status"], data[1]["patient_name"], data[2]["patient_name"]) == ("Scheduled", "Bo ", None)


def test_old_window_never_rolls_a_visit_back(load, write_csv, warehouse, schema) -> None:
    new = write_csv(HEADER + "v1,completed,t2,Ana\n")
    old = write_csv(HEADER + "v1,scheduled,t1,Ana\nv0,completed,t0,Zed\n")
    load(report(new, end=END))
    summary = load(report(old, end=END - dt.timedelta(days=5)))  # a backfill of an older day
    data = warehouse.rows(schema, "avr_virtual", lineage=True)
    assert [(r["visit_id"], r["visit_status"], r["_dexcare_window_end"]) for r in data] == [
        ("v0", "completed", END - dt.timedelta(days=5)),  # unknown visits still come in
        ("v1", "completed", END),
    ]
    assert summary["reports"][0]["inserted"] == 1
    assert summary["reports"][0]["updated"] == 0
    # v1 is counted as kept because a newer window wrote it, not as unchanged: a refused backfill shows
    table = summary["tables"]["avr_virtual"]
    assert (table["unchanged"], table["kept_newer"]) == (0, 1)
    assert [(a["unchanged"], a["kept_newer"]) for a in warehouse.audit(schema)] == [(0, 0), (0, 1)]
    # The same window may correct itself (a re-download of the same day).
    fix = write_csv(HEADER + "v1,no_show,t3,Ana\n")
    summary = load(report(fix, end=END))
    assert warehouse.rows(schema, "avr_virtual")[1]["visit_status"] == "no_show"
    assert (summary["tables"]["avr_virtual"]["updated"], summary["tables"]["avr_virtual"]["kept_newer"]) == (1, 0)
    # An unchanged row of an older window is kept because newer too (the newer window wrote it); a quiet
    # re-load of the newest window is only unchanged.
    again = load(report(write_csv(HEADER + "v1,no_show,t3,Ana\nv0,completed,t0,Zed\n"), end=END - dt.timedelta(1)))
    assert (again["tables"]["avr_virtual"]["unchanged"], again["tables"]["avr_virtual"]["kept_newer"]) == (1, 1)
    quiet = load(report(fix, end=END))
    assert (quiet["tables"]["avr_virtual"]["unchanged"], quiet["tables"]["avr_virtual"]["kept_newer"]) == (1, 0)


def test_a_backfill_counts_a_repeated_visit_it_kept_once(load, write_csv, warehouse, schema) -> None:
    """kept_newer counts visits, not the file's rows: the repeats are gone before it counts."""
    load(report(write_csv(HEADER + "v1,completed,t2,Ana\nv2,completed,t2,Bo\n"), end=END))
    old = write_csv(HEADER + "v1,scheduled,t1,Ana\nv2,scheduled,t1,Bo\nv1,checked_in,t1,Ana\nv1,x,t1,Ana\n")
    summary = load(report(old, end=END - dt.timedelta(days=3)))
    table = summary["tables"]["avr_virtual"]
    assert (table["rows_in_file"], table["duplicates_in_file"], table["kept_newer"]) == (4, 2, 2)
    assert (table["inserted"], table["updated"], table["unchanged"]) == (0, 0, 0)
    assert [r["visit_status"] for r in warehouse.rows(schema, "avr_virtual")] == ["completed", "completed"]


@postgres_only
def test_an_audit_table_from_before_kept_newer_is_upgraded_in_the_load(load, write_csv, warehouse, schema) -> None:
    """A load_audit made by an earlier release gets the column in the load's own transaction; its rows say 0.
    A load that fails leaves the table as it was."""
    from dexcare.load.audit import summary_line
    from dexcare.load.dialects.postgres.dialect import AUDIT_DDL

    old_ddl = AUDIT_DDL.replace(",\n    kept_newer         bigint NOT NULL DEFAULT 0", "")
    assert "kept_newer" not in old_ddl
    table = f'"{schema}".load_audit'
    warehouse.query(f'CREATE SCHEMA "{schema}"')
    warehouse.query(old_ddl.format(table=table))
    warehouse.query(f"INSERT INTO {table} (report_id, report_type, target_table, file_uri, rows_in_file, "
                    "duplicates_in_file, inserted, updated, unchanged, started_at, finished_at) VALUES "
                    "('old', 'virtual', 'avr_virtual', 'file:///old.csv', 1, 0, 1, 0, 0, now(), now())")
    with pytest.raises(DexCareLoadError):  # the upgrade rolls back with a load that fails
        load(report(write_csv("visitStatus\nx\n")))
    assert "kept_newer" not in [c for (c,) in warehouse.query(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = %s AND table_name = 'load_audit'",
        (schema,))]
    summary = load(report(write_csv(HEADER + "v1,completed,t2,Ana\n")))
    assert [(a["report_id"], a["kept_newer"]) for a in warehouse.audit(schema)] == [
        ("old", 0), (summary["reports"][0]["report_id"], 0)]
    line = summary_line(schema, "avr_virtual", summary["tables"]["avr_virtual"])  # the task log's line
    assert line.endswith("1 inserted, 0 updated, 0 unchanged, 0 kept because a newer window wrote them")


def test_missing_window_end_defaults_to_the_run_date(load, write_csv, warehouse, schema) -> None:
    path = write_csv(HEADER + "v1,completed,t2,Ana\n")
    load(report(path, end=None, start=None), run_date=dt.date(2026, 11, 22))
    row = warehouse.rows(schema, "avr_virtual", lineage=True)[0]
    assert row["_dexcare_window_end"] == dt.date(2026, 11, 22)
    assert row["_dexcare_window_start"] == dt.date(2026, 11, 12)


def test_schema_drift_adds_new_columns_and_keeps_vanished_ones(load, write_csv, warehouse, schema, caplog) -> None:
    load(report(write_csv(HEADER + "v1,scheduled,t1,Ana\nv2,scheduled,t1,Bo\n")))
    day2 = write_csv("visitId,visitStatus,updatedAt,waitMinutes\nv1,completed,t2,5\nv3,scheduled,t2,\n")
    with caplog.at_level(logging.WARNING):
        summary = load(report(day2, end=END + dt.timedelta(days=1)))
    assert summary["tables"]["avr_virtual"]["new_columns"] == ["wait_minutes"]
    assert "wait_minutes" in caplog.text and "Schema drift" in caplog.text
    assert warehouse.rows(schema, "avr_virtual") == [
        # patient_name is not in today's file: yesterday's value stays.
        {"visit_id": "v1", "visit_status": "completed", "updated_at": "t2", "patient_name": "Ana",
         "wait_minutes": "5"},
        {"visit_id": "v2", "visit_status": "scheduled", "updated_at": "t1", "patient_name": "Bo",
         "wait_minutes": None},
        {"visit_id": "v3", "visit_status": "scheduled", "updated_at": "t2", "patient_name": None,
         "wait_minutes": None},
    ]
    types = warehouse.columns(schema, "avr_virtual")
    assert warehouse.is_text(types["wait_minutes"]) and warehouse.is_text(types["patient_name"])
    assert [r["new_columns"] for r in warehouse.audit(schema)] == [[], ["wait_minutes"]]


def test_column_types_are_cast_in_sql_and_never_changed_later(load, write_csv, warehouse, schema) -> None:
    path = write_csv("Visit ID,Last Updated,Wait\nv1,2026-11-18T10:00:00Z,5\nv2,,\n")
    load(report(path, "retail"), column_types={"retail": {"Last Updated": "timestamptz", "wait": "integer"}})
    types = warehouse.columns(schema, "avr_retail")
    expected = TYPES[warehouse.name]
    assert (types["last_updated"], types["wait"]) == (expected["timestamptz"], expected["integer"])
    data = warehouse.rows(schema, "avr_retail")
    assert data[0]["last_updated"] == dt.datetime(2026, 11, 18, 10, tzinfo=dt.UTC) and data[0]["wait"] == 5
    assert data[1]["last_updated"] is None and data[1]["wait"] is None
    # Re-run with the type no longer configured: the column keeps its type, values still cast into it.
    load(report(write_csv("Visit ID,Last Updated,Wait\nv1,2026-11-19T10:00:00Z,7\n"), "retail",
                end=END + dt.timedelta(days=1)))
    assert warehouse.rows(schema, "avr_retail")[0]["wait"] == 7


def test_cast_failure_names_line_and_column_and_writes_nothing(load, write_csv, warehouse, schema) -> None:
    load(report(write_csv("visitId,updatedAt\nv0,2026-11-18T10:00:00Z\n")),
         column_types={"virtual": {"updatedAt": "timestamptz"}})
    before = warehouse.snapshot(schema)
    # v2 repeats before the bad row: the row it supersedes is out of the stage when the upsert casts, and
    # back (rolled back with the upsert's savepoint) when the error counts the rows to name the line.
    path = write_csv(
        'visitId,note,updatedAt\nv1,"two\nlines",2026-11-18T10:00:00Z\nv2,x,2026-11-18T11:00:00Z\n'
        "v2,x2,2026-11-18T12:00:00Z\nv3,y,not a date\nv4,z,also bad\n"
    )
    with pytest.raises(DexCareCastError) as err:
        load(report(path), column_types={"virtual": {"updatedAt": "timestamptz"}})
    message = str(err.value)
    assert "line 6" in message and "'updatedAt'" in message and warehouse.type_label("timestamptz") in message
    assert "not a date" not in message  # never the value: rows hold patient data
    assert warehouse.snapshot(schema) == before


def test_cast_failure_on_a_first_load_names_line_and_column(load, write_csv, warehouse, schema) -> None:
    # On PostgreSQL a new table is filled by COPY directly, so there COPY itself does the cast.
    path = write_csv('visitId,note,Wait Minutes\nv1,"a\nb",5\nv2,x,""\nv3,y,five\n')
    with pytest.raises(DexCareCastError) as err:
        load(report(path), column_types={"virtual": {"waitMinutes": "integer"}})
    message = str(err.value)
    assert "line 5" in message and "'Wait Minutes'" in message and warehouse.type_label("integer") in message
    assert "five" not in message
    assert warehouse.snapshot(schema) == {}


def test_version_that_will_not_cast_names_line_and_column(load, write_csv, warehouse, schema) -> None:
    types = {"virtual": {"updatedAt": "timestamptz"}}
    load(report(write_csv("visitId,updatedAt\nv0,2026-11-18T10:00:00Z\n")), column_types=types)  # then: upsert
    before = warehouse.snapshot(schema)
    path = write_csv("visitId,updatedAt\nv1,2026-11-18T10:00:00Z\nv1,yesterday-ish\n")
    with pytest.raises(DexCareCastError, match=r"line 3, column 'updatedAt'"):
        load(report(path), version_columns={"virtual": "updatedAt"}, column_types=types)
    assert warehouse.snapshot(schema) == before


def test_unknown_configured_type_is_refused(load, write_csv, warehouse) -> None:
    label = {"postgres": "not a PostgreSQL type", "mssql": "not a SQL Server type"}[warehouse.name]
    with pytest.raises(DexCareSchemaError, match=label):
        load(report(write_csv("visitId,a\nv1,1\n")), column_types={"virtual": {"a": "no_such_type"}})


def test_hostile_headers_become_harmless_column_names(load, write_csv, warehouse, schema) -> None:
    warehouse.create_schema(schema)
    warehouse.query(f"CREATE TABLE {warehouse.quote(schema, 'victim')} (id int)")
    path = write_csv(
        'visitId,"x""; DROP TABLE victim; --","a\'); DROP TABLE victim; --",_dexcare_report_id,"Robert\nTables",'
        '"b]; DROP TABLE victim; --"\nv1,1,2,3,4,5\n'
    )
    load(report(path))
    assert "victim" in warehouse.tables(schema)
    data = warehouse.rows(schema, "avr_virtual", lineage=True)[0]
    assert data["x_drop_table_victim"] == "1"
    assert data["a_drop_table_victim"] == "2"
    assert data["dexcare_report_id"] == "3"  # cannot shadow the lineage column
    assert data["robert_tables"] == "4"
    assert data["b_drop_table_victim"] == "5"
    assert data["_dexcare_report_id"] != "3"


def test_hostile_schema_name_is_only_ever_a_name(write_csv, warehouse) -> None:
    """The one identifier a user configures: quotes and brackets stay inside it."""
    from dexcare.load.loader import LoadOptions, load_reports

    schema = warehouse.new_schema() + '"]x'
    try:
        connection = warehouse.connect()
        try:
            load_reports(connection, [report(write_csv(HEADER + "v1,a,t,x\n"))], dialect=warehouse.name,
                         options=LoadOptions(schema=schema))
        finally:
            connection.close()
        assert [r["visit_id"] for r in warehouse.rows(schema, "avr_virtual")] == ["v1"]
        assert len(warehouse.audit(schema)) == 1
    finally:
        warehouse.drop_schema(schema)


def test_colliding_headers_fail_naming_both(load, write_csv, warehouse, schema) -> None:
    with pytest.raises(DexCareSchemaError) as err:
        load(report(write_csv("visitId,Visit ID,status\nv1,v1,x\n")))
    assert "'visitId'" in str(err.value) and "'Visit ID'" in str(err.value)
    assert warehouse.snapshot(schema) == {}


def test_empty_header_fails(load, write_csv) -> None:
    with pytest.raises(DexCareSchemaError, match="header column 2"):
        load(report(write_csv("visitId,,status\nv1,a,b\n")))


def test_a_first_line_without_the_key_is_no_header_and_is_not_quoted(load, write_csv) -> None:
    """It may be a patient's record (a file without a header): the key and the field count, never a field."""
    with pytest.raises(DexCareSchemaError) as err:
        load(report(write_csv("Encounter,Status\ne1,x\n")))
    message = str(err.value)
    assert "line 1: the first line is not a DexCare report header" in message
    assert "'visit_id'" in message and "2 field(s)" in message
    assert "ncounter" not in message and "tatus" not in message


def test_configured_key_by_header_name(load, write_csv, warehouse, schema) -> None:
    path = write_csv("Encounter,Visit Line,Status\ne1,1,a\ne1,2,b\ne1,1,c\n")
    load(report(path, "provider_booking"), key_columns={"provider_booking": ["Encounter", "visit_line"]})
    data = warehouse.rows(schema, "avr_provider_booking", order="visit_line")
    assert [(r["encounter"], r["visit_line"], r["status"]) for r in data] == [("e1", "1", "c"), ("e1", "2", "b")]
    assert warehouse.unique_key(schema, "avr_provider_booking") == ["encounter", "visit_line"]


@pytest.mark.parametrize("empty", ["", '""'])
def test_empty_key_fails_naming_its_line(load, write_csv, warehouse, schema, empty) -> None:
    path = write_csv(HEADER + 'v1,a,t,"multi\nline"\nv2,a,t,b\n' + f"{empty},a,t,c\nv4,a,t,d\n")
    with pytest.raises(DexCareSchemaError) as err:
        load(report(path))
    assert "line 5:" in str(err.value) and "empty key" in str(err.value)
    assert warehouse.snapshot(schema) == {}


def test_only_key_column(load, write_csv, warehouse, schema) -> None:
    path = write_csv("visitId\nv1\nv2\nv1\n")
    load(report(path))
    summary = load(report(path))
    assert summary["tables"]["avr_virtual"]["unchanged"] == 2
    assert [r["visit_id"] for r in warehouse.rows(schema, "avr_virtual")] == ["v1", "v2"]


def test_audit_rows(load, write_csv, warehouse, schema) -> None:
    body = HEADER + "v1,a,t,x\nv1,b,t,x\nv2,a,t,y\n"
    path = write_csv(body)
    sha = hashlib.sha256(body.encode()).hexdigest()
    retail = write_csv("Visit ID,Status\nr1,open\n")
    rid = "0b0e7a3c-2d1f-4c5e-8a9b-1c2d3e4f5a6b"
    summary = load(report(path, report_id=rid, sha256=sha), report(retail, "retail"),
                   dag_id="dexcare_daily", run_id="scheduled__2026-11-20T00:00:00+00:00")
    load(report(path, sha256=sha), dag_id="dexcare_daily", run_id="manual__2")
    audit = warehouse.audit(schema)
    assert len(audit) == 3
    first = audit[0]
    assert first["dag_id"] == "dexcare_daily" and first["run_id"] == "scheduled__2026-11-20T00:00:00+00:00"
    assert (first["report_id"], first["report_type"], first["target_table"]) == (rid, "virtual", "avr_virtual")
    assert first["file_uri"] == str(path) and first["file_sha256"] == sha
    assert (first["window_start"], first["window_end"]) == (dt.date(2026, 11, 11), END)
    assert (first["rows_in_file"], first["duplicates_in_file"], first["inserted"], first["updated"],
            first["unchanged"]) == (3, 1, 2, 0, 0)
    assert first["started_at"] <= first["finished_at"]
    assert audit[1]["target_table"] == "avr_retail" and audit[1]["inserted"] == 1
    assert (audit[2]["inserted"], audit[2]["updated"], audit[2]["unchanged"]) == (0, 0, 2)
    # The returned summary carries the same figures as the audit rows.
    assert summary["reports"][0]["duplicates_in_file"] == 1
    assert summary["reports"][0]["window_end"] == "2026-11-20"


def test_sha256_mismatch_fails(load, write_csv, warehouse, schema) -> None:
    path = write_csv(HEADER + "v1,a,t,x\n")
    with pytest.raises(DexCareCSVError, match="sha256"):
        load(report(path, sha256="0" * 64))
    assert warehouse.snapshot(schema) == {}


def test_other_refusals_never_quote_row_values(load, write_csv, warehouse, schema) -> None:
    load(report(write_csv(HEADER + "v1,a,t,x\n")))
    table = warehouse.quote(schema, "avr_virtual")
    warehouse.query(f"ALTER TABLE {table} ADD CONSTRAINT no_secret CHECK (patient_name <> 'SECRET-9')")
    before = warehouse.snapshot(schema)
    with pytest.raises(DexCareLoadError) as err:
        load(report(write_csv(HEADER + "v2,a,t,SECRET-9\n"), end=END + dt.timedelta(days=1)))
    code = {"postgres": "23514", "mssql": "error 547"}[warehouse.name]
    assert code in str(err.value) and "SECRET-9" not in str(err.value)
    assert err.value.__cause__ is None and err.value.__suppress_context__
    assert warehouse.snapshot(schema) == before


@postgres_only
def test_file_uri_is_opened(load, write_csv, warehouse, schema) -> None:
    path = write_csv(HEADER + "v1,a,t,x\n")
    load(report(path.as_uri()))
    assert len(warehouse.rows(schema, "avr_virtual")) == 1


@postgres_only
def test_object_storage_uri_is_streamed_through_object_storage_path(load, write_csv, warehouse, schema) -> None:
    path = write_csv(HEADER + "v1,a,t,x\nv2,a,t,y\n")
    load(report(f"local://{path}"))  # not a plain path: opened with airflow.sdk.ObjectStoragePath
    assert len(warehouse.rows(schema, "avr_virtual")) == 2


@postgres_only
def test_text_keys_of_new_tables_compare_bytewise(load, write_csv, warehouse, schema) -> None:
    load(report(write_csv(HEADER + "a,x,t,n\nB,x,t,n\n")))
    collation = warehouse.query(
        "SELECT collation_name FROM information_schema.columns WHERE table_schema = %s "
        "AND table_name = 'avr_virtual' AND column_name = 'visit_id'", (schema,))
    assert collation == [("C",)]
    summary = load(report(write_csv(HEADER + "a,y,t,n\nb,x,t,n\n"), end=END + dt.timedelta(days=1)))
    assert (summary["reports"][0]["inserted"], summary["reports"][0]["updated"]) == (1, 1)


def test_text_keys_compare_exactly(load, write_csv, warehouse, schema) -> None:
    """``a`` and ``A`` are two visits, whatever the database's default collation says."""
    load(report(write_csv(HEADER + "a,x,t,n\nB,x,t,n\n")))
    summary = load(report(write_csv(HEADER + "A,y,t,n\nb,x,t,n\n"), end=END + dt.timedelta(days=1)))
    assert (summary["reports"][0]["inserted"], summary["reports"][0]["updated"]) == (2, 0)
    assert [r["visit_id"] for r in warehouse.rows(schema, "avr_virtual")] == ["A", "B", "a", "b"]
