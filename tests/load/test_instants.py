"""The one rule for an undeclared version column (:mod:`dexcare.load.instants`), checked where it is applied:
in Python (the SQL Server path checks every value while it parses the file) and in PostgreSQL (the pattern
sent as a parameter, then the ``timestamptz`` cast). Both must accept exactly the same values, and PostgreSQL
must read each as the instant it names whatever the session's time zone."""

from __future__ import annotations

import datetime as dt

import psycopg
import pytest
from dexcare.load.instants import SQL_PATTERN, is_instant

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
    "t2",
    "1700000000",
]


def postgres_accepts(conn: psycopg.Connection, value: str) -> bool:
    """What the load's check (``first_bad_version``) lets through: the pattern, then a cast that succeeds."""
    row = conn.execute("SELECT %s ~ %s", [value, SQL_PATTERN]).fetchone()
    if not (row and row[0]):
        return False
    valid = conn.execute("SELECT pg_input_is_valid(%s, 'timestamptz')", [value]).fetchone()
    return bool(valid and valid[0])


@pytest.mark.parametrize("zone", ["UTC", "America/Los_Angeles", "Asia/Kolkata"])
def test_python_and_postgresql_accept_the_same_values_and_read_the_same_instant(pg_uri, zone) -> None:
    with psycopg.connect(pg_uri, autocommit=True) as conn:
        conn.execute("SELECT set_config('TimeZone', %s, false)", [zone])
        for value, instant in ACCEPTED.items():
            assert is_instant(value), value
            assert postgres_accepts(conn, value), value
            row = conn.execute("SELECT %s::timestamptz", [value]).fetchone()
            assert row is not None and row[0] == instant, value
        for value in REFUSED:
            assert not is_instant(value), value
            assert not postgres_accepts(conn, value), value
