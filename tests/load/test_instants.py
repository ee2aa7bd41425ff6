"""The one rule for an undeclared version column (:mod:`dexcare.load.instants`), checked where it is applied:
in Python (the SQL Server path checks every value while it parses the file) and in PostgreSQL (the load's own
check statements: shapes, characters, ranges, then the ``timestamptz`` cast). Both must accept exactly the
same values, and PostgreSQL must read each as the instant it names whatever the session's time zone."""

from __future__ import annotations

import datetime as dt

import psycopg
import pytest
from dexcare.load.dialects.postgres.dialect import PostgresTypes
from dexcare.load.dialects.postgres.sql import PostgresStatements
from dexcare.load.instants import FORMS, is_instant
from dexcare.load.plan import lineage_values, plan_load
from psycopg import sql

ACCEPTED = {
    "2026-11-18T10:00:00Z": dt.datetime(2026, 11, 18, 10, tzinfo=dt.UTC),
    "2026-11-18T10:00:00.5Z": dt.datetime(2026, 11, 18, 10, 0, 0, 500000, tzinfo=dt.UTC),
    "2026-11-18T10:00:00.123456Z": dt.datetime(2026, 11, 18, 10, 0, 0, 123456, tzinfo=dt.UTC),
    "2026-11-18T10:00:00.1234560+00:00": dt.datetime(2026, 11, 18, 10, 0, 0, 123456, tzinfo=dt.UTC),
    "2026-11-18T15:00:00+01:00": dt.datetime(2026, 11, 18, 14, tzinfo=dt.UTC),
    "2026-11-18 08:00:00-0200": dt.datetime(2026, 11, 18, 10, tzinfo=dt.UTC),
    "2026-11-18T09:00:00+0000": dt.datetime(2026, 11, 18, 9, tzinfo=dt.UTC),
    "2026-11-18T23:59:59+14:00": dt.datetime(2026, 11, 18, 9, 59, 59, tzinfo=dt.UTC),
    "2028-02-29T00:00:00-13:45": dt.datetime(2028, 2, 29, 13, 45, tzinfo=dt.UTC),
    "2026-11-18T10:00:00-1400": dt.datetime(2026, 11, 19, 0, tzinfo=dt.UTC),
    "0001-01-02 00:00:00.0000001Z": dt.datetime(1, 1, 2, tzinfo=dt.UTC),
    "9999-12-30T23:59:59.999999Z": dt.datetime(9999, 12, 30, 23, 59, 59, 999999, tzinfo=dt.UTC),
}
REFUSED = [
    "2026-11-18T10:00:00",  # no offset: PostgreSQL would read it in the session's time zone
    "2026-11-18",
    "2026-11-18T10:00Z",  # no seconds
    "2026-11-18T10:00:00+01",  # an hour-only offset
    "2026-11-18T10:00:00 +01:00",
    "2026-11-18t10:00:00z",
    "2026-11-18T10:00:00.12345678Z",  # more than SQL Server's 7 fractional digits
    "2026-11-18T24:00:00Z",
    "2026-11-18T10:00:60Z",
    "2026-11-18T10:00:00+14:30",  # beyond SQL Server's offsets
    "2026-02-29T10:00:00Z",  # not a leap year
    "2026-13-01T10:00:00Z",
    "now",
    "infinity",
    "epoch",
    "Wed Nov 18 10:00:00 2026 UTC",
    "2026-11-18T10:00:00Z\n",
    " 2026-11-18T10:00:00Z",
    "2026-11-18T 0:00:00Z",  # a space where a digit belongs
    "2026-11- 8T10:00:00Z",
    "2026- 1-18T10:00:00Z",
    " 026-11-18T10:00:00Z",
    "2026-11-18 10:00:00 Z",
    "2026-11-+8T10:00:00Z",
    "2026-+1-18T10:00:00Z",
    "-026-11-18T10:00:00Z",
    "2026-11-18T10:+0:00Z",
    "2026-11-18T10:00:00.-Z",
    "2026-11-18T10:00:00.1 Z",
    "2026-11-18T10:00:00.1:Z",
    "2026-11-18T10:00:00+01: 0",
    "2026-11-18T10:00:00+01:-0",
    "2026-11-18T10:00:00+01:+0",
    "2026-11-18T10:00:00+ 1:00",
    "2026-11-18T10:00:00+0:100",
    "2026-11-18T10:00:0+Z",
    "2026-11-18T10:00:00.+Z",
    "2026-11-18T10:00:00..Z",
    "+026-11-18T10:00:00Z",
    "2026-11-18T10:00:00+1:000",
    "2026-11-18T10:00:00+-1:00",
    "0000-01-01T00:00:00Z",
    "2026-11-18T10:00:00+14:01",
    "2026-11-18T10:00:00+0960",
    "2026-00-18T10:00:00Z",
    "2026-11-00T10:00:00Z",
    "2026-11-18T10:60:00Z",
    "2026-11-18TT0:00:00Z",
    "2026-11-18T10:00:00ZZ",
    "t2",
    "1700000000",
]


def statements() -> PostgresStatements:
    plan = plan_load(schema="s", table="t", source="f.csv", headers=["visitId", "updatedAt"],
                     columns=["visit_id", "updated_at"], keys=["visit_id"], version="updated_at", configured={},
                     existing=None, types=PostgresTypes(), lineage=lineage_values(
                         report_id="r", report_type="virtual", window_start=dt.date(2026, 11, 11),
                         window_end=dt.date(2026, 11, 20), loaded_at=dt.datetime(2026, 11, 21, tzinfo=dt.UTC)))
    assert plan.version_instant
    stage = sql.Identifier("pg_temp", "versions")
    return PostgresStatements(plan, stage=stage, types=plan.types, repeats=stage)


def postgres_accepts(conn: psycopg.Connection, value: str) -> bool:
    """What the load's check lets through, run as the load runs it (``PostgresDialect._check_versions``)."""
    st = statements()
    conn.execute("TRUNCATE pg_temp.versions")
    conn.execute("INSERT INTO pg_temp.versions VALUES ('v1', %s)", [value])
    try:
        with conn.transaction():
            return conn.execute(st.first_bad_version()).fetchone() is None
    except psycopg.errors.DataError:
        assert conn.execute(st.first_invalid_version()).fetchone() is not None, value  # the error path finds it
        return False


@pytest.mark.parametrize("zone", ["UTC", "America/Los_Angeles", "Asia/Kolkata"])
def test_python_and_postgresql_accept_the_same_values_and_read_the_same_instant(pg_uri, zone) -> None:
    with psycopg.connect(pg_uri, autocommit=True) as conn:
        conn.execute("SELECT set_config('TimeZone', %s, false)", [zone])
        conn.execute("CREATE TEMP TABLE versions (visit_id text, updated_at text)")
        for value, instant in ACCEPTED.items():
            assert is_instant(value), value
            assert postgres_accepts(conn, value), value
            row = conn.execute("SELECT %s::timestamptz", [value]).fetchone()
            assert row is not None and row[0] == instant, value
        for value in REFUSED:
            assert not is_instant(value), value
            assert not postgres_accepts(conn, value), value


def test_every_form_postgresql_looks_up_is_one_python_accepts() -> None:
    """The forms PostgreSQL checks are exactly the pattern's: each, with real digits, is accepted in Python, and
    there is one per separator, fraction length and offset form."""
    assert len(set(FORMS)) == 2 * 8 * 5
    for form in FORMS:
        assert is_instant(form.replace("0000-00-00", "2026-11-18", 1)), form
