"""The ``load_audit`` table: one row per report loaded, written in the load's own transaction.

Because the audit row commits or rolls back with the data, the table never claims a load that did not
happen, and ``SELECT ... FROM load_audit`` answers "which report last wrote this visit" together with the
lineage columns on the rows themselves.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

AUDIT_TABLE = "load_audit"

_DDL = """
CREATE TABLE IF NOT EXISTS {table} (
    id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    dag_id             text,
    run_id             text,
    report_id          text NOT NULL,
    report_type        text NOT NULL,
    target_table       text NOT NULL,
    file_uri           text NOT NULL,
    file_sha256        text,
    window_start       date,
    window_end         date,
    rows_in_file       bigint NOT NULL,
    duplicates_in_file bigint NOT NULL,
    inserted           bigint NOT NULL,
    updated            bigint NOT NULL,
    unchanged          bigint NOT NULL,
    new_columns        text[] NOT NULL DEFAULT '{{}}',
    started_at         timestamptz NOT NULL,
    finished_at        timestamptz NOT NULL
)
"""

AUDIT_FIELDS = (
    "dag_id",
    "run_id",
    "report_id",
    "report_type",
    "target_table",
    "file_uri",
    "file_sha256",
    "window_start",
    "window_end",
    "rows_in_file",
    "duplicates_in_file",
    "inserted",
    "updated",
    "unchanged",
    "new_columns",
    "started_at",
    "finished_at",
)


def ensure_audit_table(cursor: psycopg.Cursor, schema: str) -> None:
    cursor.execute(sql.SQL(_DDL).format(table=sql.Identifier(schema, AUDIT_TABLE)))


def record_load(cursor: psycopg.Cursor, schema: str, entry: dict[str, Any]) -> None:
    """Insert one audit row; ``entry`` holds at least :data:`AUDIT_FIELDS` (extra keys are ignored)."""
    cursor.execute(
        sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
            sql.Identifier(schema, AUDIT_TABLE),
            sql.SQL(", ").join(sql.Identifier(f) for f in AUDIT_FIELDS),
            sql.SQL(", ").join(sql.Placeholder(f) for f in AUDIT_FIELDS),
        ),
        {f: entry[f] for f in AUDIT_FIELDS},
    )
