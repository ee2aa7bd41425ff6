"""The visit history (``avr_<type>_history``), on every warehouse (see ``warehouse`` in conftest).

Each scenario reads the history back with plain SQL and checks it against what the loads wrote: one row per
insert and per changed row, in order, nothing for an unchanged row or a row the old-window guard kept, the
same columns as the main table after drift, and earlier rows never touched again.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from dexcare.exceptions import DexCareCastError, DexCareSchemaError

from tests.load.conftest import END, postgres_only, report

HEADER = "visitId,visitStatus,updatedAt,patientName\n"
HISTORY = "avr_virtual_history"


def history(warehouse, schema: str) -> list[tuple]:
    """(visit, status, change, window end) per history row, in the order they were appended; within one load
    (one ``_dexcare_loaded_at``) the order is the warehouse's, so those rows are sorted."""
    rows = warehouse.dict_query(f"SELECT * FROM {warehouse.quote(schema, HISTORY)} ORDER BY _dexcare_history_id")
    loads = list(dict.fromkeys(r["_dexcare_loaded_at"] for r in rows))  # in the order they appended
    keyed = [(loads.index(r["_dexcare_loaded_at"]),
              (r["visit_id"], r["visit_status"], r["_dexcare_change"], r["_dexcare_window_end"])) for r in rows]
    return [row for _, row in sorted(keyed)]


def day(n: int) -> dt.date:
    return END + dt.timedelta(days=n)


def test_every_insert_and_change_is_appended_and_nothing_else(load, write_csv, warehouse, schema) -> None:
    first = load(report(write_csv(HEADER + "v1,scheduled,t1,Ana\nv2,scheduled,t1,Bo\nv1,in_progress,t1,Ana\n"),
                        end=day(0)), history=["virtual"])
    assert history(warehouse, schema) == [
        ("v1", "in_progress", "insert", day(0)), ("v2", "scheduled", "insert", day(0))]
    assert first["tables"]["avr_virtual"]["history_rows"] == 2
    # v1 completes, v2 is unchanged, v3 is new.
    second = load(report(write_csv(HEADER + "v1,completed,t2,Ana\nv2,scheduled,t1,Bo\nv3,scheduled,t2,Cy\n"),
                         end=day(1)), history=["virtual"])
    assert history(warehouse, schema)[2:] == [
        ("v1", "completed", "update", day(1)), ("v3", "scheduled", "insert", day(1))]
    totals = second["tables"]["avr_virtual"]
    assert (totals["inserted"], totals["updated"], totals["history_rows"]) == (1, 1, 2)
    assert totals["history_table"] == HISTORY


def test_the_history_row_is_the_row_as_it_became(load, write_csv, warehouse, schema) -> None:
    """Every column of the main table, lineage included, exactly as the load left it."""
    load(report(write_csv(HEADER + "v1,scheduled,t1,Ana\n"), end=day(0)), history=["virtual"])
    load(report(write_csv(HEADER + "v1,completed,t2,Ana María\n"), end=day(1),
                report_id="3f2b8c1e-4d5a-4b6c-9e7f-0a1b2c3d4e5f"), history=["virtual"])
    table = warehouse.rows(schema, "avr_virtual", lineage=True)[0]
    rows = warehouse.dict_query(f"SELECT * FROM {warehouse.quote(schema, HISTORY)} ORDER BY _dexcare_history_id")
    last = rows[-1]
    assert {k: last[k] for k in table} == table
    assert last["_dexcare_report_id"] == "3f2b8c1e-4d5a-4b6c-9e7f-0a1b2c3d4e5f"
    assert last["_dexcare_window_start"] == day(1) - dt.timedelta(days=9) and last["_dexcare_loaded_at"] is not None
    assert list(warehouse.columns(schema, HISTORY)) == [
        "_dexcare_history_id", *warehouse.columns(schema, "avr_virtual"), "_dexcare_change"]


def test_an_unchanged_reload_and_an_old_window_append_nothing(load, write_csv, warehouse, schema) -> None:
    path = write_csv(HEADER + "v1,completed,t2,Ana\nv2,scheduled,t1,Bo\n")
    load(report(path, end=day(1)), history=["virtual"])
    before = warehouse.snapshot(schema)[HISTORY]
    for _ in range(2):
        summary = load(report(path, end=day(1)), history=["virtual"])
        assert summary["tables"]["avr_virtual"]["history_rows"] == 0
    # A backfill of an older day: the guard keeps both visits, so the history keeps nothing of it either.
    old = load(report(write_csv(HEADER + "v1,scheduled,t1,Ana\nv2,cancelled,t0,Bo\n"), end=day(-3)),
               history=["virtual"])
    assert (old["reports"][0]["updated"], old["reports"][0]["history_rows"]) == (0, 0)
    assert warehouse.snapshot(schema)[HISTORY] == before  # untouched: same rows, same physical versions


def test_an_old_window_still_records_the_visits_it_inserts(load, write_csv, warehouse, schema) -> None:
    load(report(write_csv(HEADER + "v1,completed,t2,Ana\n"), end=day(1)), history=["virtual"])
    load(report(write_csv(HEADER + "v1,scheduled,t1,Ana\nv0,completed,t0,Zed\n"), end=day(-3)), history=["virtual"])
    assert history(warehouse, schema) == [("v1", "completed", "insert", day(1)), ("v0", "completed", "insert", day(-3))]


def test_history_is_append_only(load, write_csv, warehouse, schema) -> None:
    """Earlier history rows are never rewritten, whatever later loads do to the main table."""
    load(report(write_csv(HEADER + "v1,scheduled,t1,Ana\n"), end=day(0)), history=["virtual"])
    warehouse.watch_rewrites(schema, HISTORY)
    first = warehouse.snapshot(schema)[HISTORY]
    load(report(write_csv(HEADER + "v1,completed,t2,Ana\n"), end=day(1)), history=["virtual"])
    load(report(write_csv(HEADER + "v1,no_show,t3,Ana\n"), end=day(1)), history=["virtual"])  # the same day corrects
    columns, rows = warehouse.snapshot(schema)[HISTORY]
    assert columns == first[0] and len(rows) == 3 and all(r in rows for r in first[1])
    assert [s for _, s, _, _ in history(warehouse, schema)] == ["scheduled", "completed", "no_show"]


def test_schema_drift_reaches_the_history(load, write_csv, warehouse, schema) -> None:
    load(report(write_csv(HEADER + "v1,scheduled,t1,Ana\n"), end=day(0)), history=["virtual"])
    load(report(write_csv("visitId,visitStatus,updatedAt,waitMinutes\nv1,completed,t2,5\n"), end=day(1)),
         history=["virtual"])
    assert list(warehouse.columns(schema, HISTORY))[-1] == "wait_minutes"
    rows = warehouse.dict_query(f"SELECT * FROM {warehouse.quote(schema, HISTORY)} ORDER BY _dexcare_history_id")
    assert [(r["visit_status"], r["patient_name"], r["wait_minutes"]) for r in rows] == [
        ("scheduled", "Ana", None), ("completed", "Ana", "5")]  # the kept column is part of the row it became


def test_turning_history_on_later_starts_from_the_rows_the_table_holds(load, write_csv, warehouse, schema) -> None:
    load(report(write_csv(HEADER + "v1,scheduled,t1,Ana\nv2,scheduled,t1,Bo\n"), end=day(0)))
    assert HISTORY not in warehouse.tables(schema)
    summary = load(report(write_csv(HEADER + "v1,completed,t2,Ana\nv2,scheduled,t1,Bo\n"), end=day(1)),
                   history=["virtual"])
    assert history(warehouse, schema)[:2] == [("v1", "scheduled", "baseline", day(0)),
                                                      ("v2", "scheduled", "baseline", day(0))]
    assert history(warehouse, schema)[2:] == [("v1", "completed", "update", day(1))]
    assert summary["tables"]["avr_virtual"]["history_rows"] == 3


def test_only_the_report_types_asked_for_keep_a_history(load, write_csv, warehouse, schema) -> None:
    load(report(write_csv(HEADER + "v1,a,t,x\n")), report(write_csv("Visit ID,Status\nr1,a\n"), "retail"),
         history=["retail"])
    assert "avr_retail_history" in warehouse.tables(schema) and HISTORY not in warehouse.tables(schema)


def test_a_failed_load_appends_nothing(load, write_csv, warehouse, schema) -> None:
    types = {"virtual": {"updatedAt": "timestamptz"}}
    load(report(write_csv(HEADER + "v1,a,2026-11-18T10:00:00Z,x\n"), end=day(0)), history=["virtual"],
         column_types=types)
    before = warehouse.snapshot(schema)
    with pytest.raises(DexCareCastError):
        load(report(write_csv(HEADER + "v1,b,2026-11-19T10:00:00Z,x\nv2,c,not a date,y\n"), end=day(1)),
             history=["virtual"], column_types=types)
    assert warehouse.snapshot(schema) == before


def test_an_unknown_report_type_in_history_is_refused(load, write_csv) -> None:
    with pytest.raises(DexCareSchemaError, match=r"history: 'virtuall' is not a report type"):
        load(report(write_csv(HEADER + "v1,a,t,x\n")), history=["virtuall"])


@postgres_only
def test_the_readme_query_gives_the_days_each_visit_spent_in_each_status(load, write_csv, warehouse, schema) -> None:
    """The query README shows, run as written (only the schema name changed) on three days of history."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme[readme.index("### Visit history"):]
    query = section[section.index("```sql") + len("```sql"):section.index("```", section.index("```sql") + 6)]
    for n, states in enumerate(("v1,scheduled,t1,Ana\nv2,scheduled,t1,Bo\n",
                                "v1,in_progress,t2,Ana\nv2,scheduled,t1,Bo\n",
                                "v1,completed,t3,Ana\nv2,cancelled,t3,Bo\n")):
        load(report(write_csv(HEADER + states), end=day(2 * n)), history=["virtual"])
    rows = warehouse.query(query.replace("dexcare.avr_virtual_history", warehouse.quote(schema, HISTORY)))
    today = dt.date.today()
    assert [(v, s, first, days) for v, s, first, days in rows] == [
        ("v1", "scheduled", day(0), 2), ("v1", "in_progress", day(2), 2),
        ("v1", "completed", day(4), (today - day(4)).days),
        ("v2", "scheduled", day(0), 4), ("v2", "cancelled", day(4), (today - day(4)).days),
    ]
