"""Repeats of a visit within one file, on every warehouse: a typed key is one key however it is spelled, and
an undeclared version column is ordered by the instant it names, not as text (issue 18, items 14 and 16)."""

from __future__ import annotations

import datetime as dt

import pytest
from dexcare.exceptions import DexCareCastError

from tests.load.conftest import END, report

INTEGER_KEY = {"virtual": {"visitId": "integer"}}
NEXT_DAY = END + dt.timedelta(days=1)


def counts(summary: dict) -> tuple[int, int, int, int]:
    table = summary["reports"][0]
    return table["duplicates_in_file"], table["inserted"], table["updated"], table["unchanged"]


def test_an_integer_key_spelled_two_ways_is_one_visit_and_a_reload_changes_nothing(
        load, write_csv, warehouse, schema) -> None:
    path = write_csv("visitId,visitStatus\n1,scheduled\n2,scheduled\n01,completed\n")
    assert counts(load(report(path), column_types=INTEGER_KEY)) == (1, 2, 0, 0)
    assert [(r["visit_id"], r["visit_status"]) for r in warehouse.rows(schema, "avr_virtual")] == [
        (1, "completed"), (2, "scheduled")]  # the last row of the file wins, whatever its spelling
    before = warehouse.snapshot(schema)["avr_virtual"]
    # The same file again (the temp-stage path): nothing updated, nothing flipped back to "scheduled".
    assert counts(load(report(path), column_types=INTEGER_KEY)) == (1, 0, 0, 2)
    assert warehouse.snapshot(schema)["avr_virtual"] == before


def test_a_new_integer_key_spelled_two_ways_is_inserted_once(load, write_csv, warehouse, schema) -> None:
    load(report(write_csv("visitId,visitStatus\n1,scheduled\n")), column_types=INTEGER_KEY)
    path = write_csv("visitId,visitStatus\n2,scheduled\n002,completed\n1,scheduled\n")
    assert counts(load(report(path, end=NEXT_DAY), column_types=INTEGER_KEY)) == (1, 1, 0, 1)
    assert [(r["visit_id"], r["visit_status"]) for r in warehouse.rows(schema, "avr_virtual")] == [
        (1, "scheduled"), (2, "completed")]


def test_the_newest_version_wins_among_spellings_of_a_typed_key(load, write_csv, warehouse, schema) -> None:
    load(report(write_csv("visitId,visitStatus,updatedAt\n9,x,2026-11-18T08:00:00Z\n")), column_types=INTEGER_KEY)
    path = write_csv("visitId,visitStatus,updatedAt\n7,newer,2026-11-18T10:00:00Z\n07,older,2026-11-18T09:00:00Z\n")
    summary = load(report(path, end=NEXT_DAY), column_types=INTEGER_KEY, version_columns={"virtual": "updatedAt"})
    assert counts(summary) == (1, 1, 0, 0)
    assert [(r["visit_id"], r["visit_status"]) for r in warehouse.rows(schema, "avr_virtual")] == [
        (7, "newer"), (9, "x")]


# Each pair: the later instant first in the file (so "last row wins" would pick the other), and as text the
# other one sorts higher (so ordering the text would pick it too).
VERSIONS = (
    "visitId,visitStatus,updatedAt\n"
    "v1,half-second-later,2026-11-18T10:00:00.500Z\n"
    "v1,on-the-second,2026-11-18T10:00:00Z\n"
    "v2,14:30Z,2026-11-18T14:30:00Z\n"
    "v2,15:00+01:00,2026-11-18T15:00:00+01:00\n"
    "v3,10:00Z-as--0200,2026-11-18 08:00:00-0200\n"
    "v3,09:00Z-as-+0000,2026-11-18T09:00:00+0000\n"
    "v4,has-a-version,2026-11-18T01:00:00Z\n"
    "v4,no-version,\n"
)
NEWEST = [("v1", "half-second-later"), ("v2", "14:30Z"), ("v3", "10:00Z-as--0200"), ("v4", "has-a-version")]


@pytest.mark.parametrize("existing", [False, True], ids=["new-table", "existing-table"])
def test_an_undeclared_version_column_is_ordered_by_instant(existing, load, write_csv, warehouse, schema) -> None:
    """PostgreSQL dedupes a new table in place and an existing one in a temp stage: both paths."""
    if existing:
        load(report(write_csv("visitId,visitStatus,updatedAt\nv0,x,2026-11-01T00:00:00Z\n")))
    options = {"version_columns": {"virtual": "updatedAt"}}
    summary = load(report(write_csv(VERSIONS), end=NEXT_DAY), **options)
    assert counts(summary)[:2] == (4, 4)
    rows = warehouse.rows(schema, "avr_virtual")
    assert [(r["visit_id"], r["visit_status"]) for r in rows if r["visit_id"] != "v0"] == NEWEST
    # Stored as the file spelled it: the instant is only how repeats are ordered.
    assert {r["visit_id"]: r["updated_at"] for r in rows}["v3"] == "2026-11-18 08:00:00-0200"
    assert warehouse.is_text(warehouse.columns(schema, "avr_virtual")["updated_at"])
    assert counts(load(report(write_csv(VERSIONS), end=NEXT_DAY), **options))[2] == 0  # re-load: none updated


@pytest.mark.parametrize(
    "bad",
    ["2026-11-18T10:30:00", "yesterday-ish", "2026-02-30T10:30:00Z", "18/11/2026 10:30 +01:00", "2026-11-18T10:30Z"],
    ids=["no-offset", "not-a-time", "no-such-date", "not-iso", "no-seconds"],
)
@pytest.mark.parametrize("existing", [False, True], ids=["new-table", "existing-table"])
def test_a_version_that_names_no_instant_fails_naming_line_and_column(
        bad, existing, load, write_csv, warehouse, schema) -> None:
    if existing:
        load(report(write_csv("visitId,updatedAt\nv0,2026-11-01T00:00:00Z\n")))
    before = warehouse.snapshot(schema)
    # The bad value is on a visit that does not repeat: every value is checked, not only the repeats'.
    path = write_csv(f'visitId,note,updatedAt\nv1,"two\nlines",2026-11-18T10:00:00Z\nv2,x,{bad}\n'
                     "v1,y,2026-11-18T11:00:00Z\n")
    with pytest.raises(DexCareCastError) as err:
        load(report(path, end=NEXT_DAY), version_columns={"virtual": "updatedAt"})
    message = str(err.value)
    assert f"{path}: line 4, column 'updatedAt'" in message
    assert "declare its type in column_types (e.g. integer) if it is not a timestamp" in message
    assert bad not in message  # never the value
    assert warehouse.snapshot(schema) == before


def test_a_version_that_is_not_a_timestamp_loads_once_its_type_is_declared(load, write_csv, warehouse, schema) -> None:
    """The way out the message names: declared, a version orders by its type (text included), as before."""
    revisions = write_csv("visitId,visitStatus,rev\nv1,b,rev-b\nv1,a,rev-a\n")
    with pytest.raises(DexCareCastError, match="line 2, column 'rev'"):
        load(report(revisions), version_columns={"virtual": "rev"})
    load(report(revisions), version_columns={"virtual": "rev"}, column_types={"virtual": {"rev": "text"}})
    load(report(write_csv("visitId,visitStatus,seq\nv2,ten,10\nv2,nine,9\n"), "retail"),
         version_columns={"retail": "seq"}, column_types={"retail": {"seq": "integer"}})
    assert [r["visit_status"] for r in warehouse.rows(schema, "avr_virtual")] == ["b"]
    assert [r["visit_status"] for r in warehouse.rows(schema, "avr_retail")] == ["ten"]
