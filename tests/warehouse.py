"""The warehouse in DAG-level tests: a scratch schema per test, and reading what the load wrote, never through
the code under test."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
from psycopg import sql


@contextlib.contextmanager
def scratch_schema(pg_uri: str, prefix: str) -> Iterator[str]:
    """A warehouse schema name nobody has used (the load creates the schema), dropped with everything in it
    afterwards, also when the test fails. The prefix says which tests a leftover came from, should a drop fail."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    try:
        yield name
    finally:
        with psycopg.connect(pg_uri, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


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
