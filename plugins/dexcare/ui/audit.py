"""What the page reads from the warehouse: the committed loads of the last days, from ``load_audit``.

``load_audit`` is written in each load's own transaction, so every row is a load that happened; the page needs
no other warehouse table and never reads a report row. One catalog query says whether the table exists and which
optional columns it has (a "kept because newer" count arrives with a later version of the load), then one query
reads the rows of the period, the same text for PostgreSQL and SQL Server but for the quoted table name.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from dexcare.load.audit import AUDIT_TABLE, instant

#: The ``load_audit`` columns the page shows, in query order.
PAGE_FIELDS = (
    "run_id",
    "report_id",
    "report_type",
    "target_table",
    "window_start",
    "window_end",
    "rows_in_file",
    "inserted",
    "updated",
    "unchanged",
    "finished_at",
)
#: Rows the old-window guard kept because a newer window already wrote them; shown once the column exists.
KEPT_COLUMN = "kept_newer"

COLUMNS_QUERY = (
    "SELECT COLUMN_NAME FROM INFORMATION_SCHEMA.COLUMNS WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s"
)


@dataclass(frozen=True)
class Load:
    """One committed report load, as the calendar shows it."""

    run_id: str | None
    report_id: str
    report_type: str
    table: str
    window_start: dt.date
    window_end: dt.date
    rows_in_file: int
    inserted: int
    updated: int
    unchanged: int
    finished_at: dt.datetime
    #: ``None`` when this ``load_audit`` has no such column yet.
    kept: int | None = None


def audit_table(conn_type: str, schema: str) -> str:
    """``<schema>.load_audit`` quoted for the warehouse: the page's only use of a dialect."""
    from dexcare.load.dialects import dialect_for

    return dialect_for(conn_type).quote(schema, AUDIT_TABLE)


def read_loads(conn: Any, conn_type: str, schema: str, since: dt.date) -> list[Load]:
    """Loads whose window ends on or after ``since``, oldest first; none while ``load_audit`` does not exist.

    Ends with a rollback: the drivers open a transaction for a read, and the page holds nothing open.
    """
    cursor = conn.cursor()
    try:
        cursor.execute(COLUMNS_QUERY, (schema, AUDIT_TABLE))
        present = {str(row[0]).lower() for row in cursor.fetchall()}
        if not present:
            return []
        fields = [*PAGE_FIELDS, *([KEPT_COLUMN] if KEPT_COLUMN in present else [])]
        cursor.execute(
            f"SELECT {', '.join(fields)} FROM {audit_table(conn_type, schema)} "  # noqa: S608 (quoted names only)
            "WHERE window_end >= %s ORDER BY id",
            (since,),
        )
        rows = cursor.fetchall()
    finally:
        conn.rollback()
    return [_load(dict(zip(fields, row, strict=True))) for row in rows]


def _load(row: dict[str, Any]) -> Load:
    kept = row.get(KEPT_COLUMN)
    return Load(
        run_id=None if row["run_id"] is None else str(row["run_id"]),
        report_id=str(row["report_id"]),
        report_type=str(row["report_type"]),
        table=str(row["target_table"]),
        window_start=_date(row["window_start"] or row["window_end"]),
        window_end=_date(row["window_end"]),
        rows_in_file=int(row["rows_in_file"]),
        inserted=int(row["inserted"]),
        updated=int(row["updated"]),
        unchanged=int(row["unchanged"]),
        finished_at=instant(row["finished_at"]),
        kept=None if KEPT_COLUMN not in row else int(kept or 0),
    )


def _date(value: Any) -> dt.date:
    """A date as the driver returns it: a date (psycopg, pymssql) or ISO text."""
    if isinstance(value, dt.datetime):
        return value.date()
    return value if isinstance(value, dt.date) else dt.date.fromisoformat(str(value)[:10])
