"""PostgreSQL's error path: which line and column of the file a COPY or a cast refused, without its value.

COPY's error quotes the value it refused and counts lines its own way; the messages here keep only the line
and the reason (in :mod:`dexcare.load.diagnostics`' shared words), and find the physical line by reading the
file again or by asking the staged rows (heap order is file order), only after something failed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import psycopg
from psycopg import sql

from dexcare.exceptions import DexCareCSVError, DexCareLoadError
from dexcare.load.csv_stream import Header, Opener, read_header
from dexcare.load.diagnostics import (
    INVALID_UTF8,
    RAGGED_FEWER,
    RAGGED_MORE,
    UNTERMINATED,
    cast_error,
    csv_error,
    find_line,
    invalid_utf8_line,
    ragged_record_line,
    record_line,
    unclosed_quote_line,
    unknown_cast_error,
)
from dexcare.load.dialects.postgres.sql import TEXT
from dexcare.load.dialects.postgres.staging import copy_stream

#: COPY's error context: ``COPY t, line 3, column updated_at: "<value>"`` (the value is never kept).
_COPY_COLUMN = re.compile(r"\bline (\d+), column ([^:\s]+)")
_LINE = re.compile(r"\bline (\d+)")
#: Malformed CSV and bad encoding, as opposed to a value that does not fit its column's type.
_CSV_SQLSTATES = {"22P04", "22021", "22P05"}
#: COPY's primary message (lower case) -> the reason we give.
_REASONS = (
    ("extra data after last expected column", RAGGED_MORE),
    ("missing data for column", RAGGED_FEWER),
    ("unterminated csv quoted field", UNTERMINATED),
    ("invalid byte sequence", INVALID_UTF8),
    ("carriage return", "mixed line endings (a bare carriage return in an unquoted field)"),
    ("newline found in data", "mixed line endings (a bare newline in an unquoted field)"),
    # PostgreSQL before 18 on a \. line whose line ending differs from the file's
    ("end-of-copy marker", "a line holding only \\. (unquoted), which PostgreSQL before 18 reads in CSV as an "
                           "end-of-data marker; quote the field (\"\\.\") or remove the line"),
)


def copy_error_line(exc: psycopg.Error, header_lines: int = 1) -> int | None:
    """The file line PostgreSQL's COPY stopped at, if it says.

    PostgreSQL counts physical lines, newlines inside quoted fields included, from the first line it was
    sent; we sent everything after the header, so the header's lines are added back.
    """
    match = _LINE.search(exc.diag.context or "")
    return int(match.group(1)) + header_lines if match else None


def translate_copy_error(exc: psycopg.Error, *, source: str, columns: int, header_lines: int = 1,
                         reopen: Opener | None = None) -> DexCareCSVError:
    """A message that names the file, line and problem, and drops the value PostgreSQL quotes back.

    PostgreSQL's line number is a hint only: it counts newlines inside quoted fields or not depending on
    what it has seen of the file so far. So the file is read once more in Python to find the physical
    line an editor would show.
    """
    primary = (exc.diag.message_primary or "").lower()
    reason = next((text for needle, text in _REASONS if needle in primary), None)
    if reason is None:
        reason = f"PostgreSQL's CSV parser rejected it (SQLSTATE {exc.sqlstate})"
    if "unterminated" in primary:
        found = find_line(reopen, source, unclosed_quote_line)
    elif "byte sequence" in primary:
        found = find_line(reopen, source, invalid_utf8_line)
    elif "data" in primary and "column" in primary:
        found = find_line(reopen, source, ragged_record_line, columns)
    else:
        found = None
    return csv_error(source, found or copy_error_line(exc, header_lines), reason)


def _record_of(cursor: psycopg.Cursor, stage: sql.Composable, tid: Any) -> int:
    """Data record number of a staged row (1 = first after the header): heap order is file order."""
    row = cursor.execute(sql.SQL("SELECT count(*) FROM {} WHERE ctid <= %s::tid").format(stage), [tid]).fetchone()
    return int(row[0]) if row else 0


def staged_line(cursor: psycopg.Cursor, stage: sql.Composable, tid: Any, source: str, opener: Opener) -> int:
    """The physical file line where a staged row starts."""
    record = _record_of(cursor, stage, tid)
    line = find_line(opener, source, record_line, record)
    return line if line is not None else record + 1


def pg_cast_error(cursor: psycopg.Cursor, stage: sql.Composable, headers: Sequence[str], columns: Sequence[str],
                  types: Mapping[str, str], exc: psycopg.Error, source: str, opener: Opener) -> DexCareLoadError:
    """Pin a failed cast to its row and column: the first staged row any typed column rejects."""
    worst: tuple[int, str, str] | None = None
    for header, column in zip(headers, columns, strict=True):
        sql_type = types[column]
        if sql_type == TEXT:
            continue
        try:
            with cursor.connection.transaction():
                found = cursor.execute(
                    sql.SQL(
                        "SELECT ctid FROM {stage} WHERE {c} <> '' AND NOT pg_input_is_valid({c}, %s) "
                        "ORDER BY ctid LIMIT 1"
                    ).format(stage=stage, c=sql.Identifier(column)),
                    [sql_type],
                ).fetchone()
        except psycopg.Error:
            continue
        if found is not None:
            line = staged_line(cursor, stage, found[0], source, opener)
            if worst is None or line < worst[0]:
                worst = (line, header, sql_type)
    if worst is None:
        return unknown_cast_error(source, f"SQLSTATE {exc.sqlstate}")
    return cast_error(source, *worst)


def pg_copy_error(cursor: psycopg.Cursor, exc: psycopg.Error, header: Header, columns: Sequence[str],
                  column_types: Mapping[str, str] | None, source: str, opener: Opener) -> DexCareLoadError:
    """A value COPY could not convert (a COPY straight into a typed table) is a cast error; anything else
    is a broken CSV. ``column_types`` is ``None`` when the COPY went into an all-text stage."""
    if column_types is not None and exc.sqlstate not in _CSV_SQLSTATES and _COPY_COLUMN.search(exc.diag.context or ""):
        # COPY's own line number is unreliable with multi-line fields: stage the file as text and let the
        # same set-based lookup as the merge path name row and column.
        stage = sql.Identifier("pg_temp", "_dexcare_diagnose")
        cursor.execute(
            sql.SQL("CREATE TEMP TABLE {} ({}) ON COMMIT DROP").format(
                stage, sql.SQL(", ").join(sql.SQL("{} text").format(sql.Identifier(c)) for c in columns)
            )
        )
        try:
            with opener(source) as again:
                copy_stream(cursor, stage, list(columns), read_header(again, source=source), again)
        except psycopg.errors.DataError as second:
            return pg_copy_error(cursor, second, header, columns, None, source, opener)
        return pg_cast_error(cursor, stage, header.fields, columns, column_types, exc, source, opener)
    return translate_copy_error(exc, source=source, columns=len(columns), header_lines=header.lines,
                                reopen=opener)
