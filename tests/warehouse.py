"""Reading the warehouse in DAG-level tests: what the load wrote, never through the code under test."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql


def audit_rows(conn: psycopg.Connection, schema: str) -> list[tuple[Any, ...]]:
    """``(report_type, rows_in_file, duplicates_in_file, inserted, updated, unchanged)`` per load, oldest
    first; empty when no load has created the audit table yet."""
    if conn.execute("SELECT to_regclass(%s)", (f"{schema}.load_audit",)).fetchone()[0] is None:
        return []
    return conn.execute(
        sql.SQL(
            "SELECT report_type, rows_in_file, duplicates_in_file, inserted, updated, unchanged "
            "FROM {}.load_audit ORDER BY id"
        ).format(sql.Identifier(schema))
    ).fetchall()
