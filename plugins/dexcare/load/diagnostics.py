"""Error path only: find the line and column a load failed on, and say so without quoting a value.

The fast path never counts lines: COPY (or the bulk copy) streams the file and the database reports at
best a record number, which drifts from what an editor shows once a quoted field spans lines. Only after
something failed do these functions read the file again, or ask the staged rows, to name the physical line.
Messages name the file, the line and the column, never a value: report rows carry patient data.
"""

from __future__ import annotations

import codecs
import io
import re
from collections.abc import Mapping, Sequence
from typing import Any, BinaryIO

import psycopg
from psycopg import sql

from dexcare import csv_records
from dexcare.exceptions import (
    DexCareCastError,
    DexCareCSVError,
    DexCareLoadError,
    DexCareSchemaError,
    DexCareWarehouseError,
)
from dexcare.load import instants
from dexcare.load.csv_stream import BLOCK_SIZE, Header, Opener, copy_stream, read_header
from dexcare.load.dialects.postgres_sql import TEXT

#: COPY's error context: ``COPY t, line 3, column updated_at: "<value>"`` (the value is never kept).
_COPY_COLUMN = re.compile(r"\bline (\d+), column ([^:\s]+)")
_LINE = re.compile(r"\bline (\d+)")
#: Malformed CSV and bad encoding, as opposed to a value that does not fit its column's type.
_CSV_SQLSTATES = {"22P04", "22021", "22P05"}
_REASONS = (
    ("extra data after last expected column", "more fields than the header has columns (ragged row)"),
    ("missing data for column", "fewer fields than the header has columns (ragged row)"),
    ("unterminated csv quoted field", "unterminated quoted field (a quote opens and never closes)"),
    ("invalid byte sequence", "invalid UTF-8 byte sequence"),
    ("carriage return", "mixed line endings (a bare carriage return in an unquoted field)"),
    ("newline found in data", "mixed line endings (a bare newline in an unquoted field)"),
    # PostgreSQL before 18 on a \. line whose line ending differs from the file's
    ("end-of-copy marker", "a line holding only \\. (unquoted), which PostgreSQL before 18 reads in CSV as an "
                           "end-of-data marker; quote the field (\"\\.\") or remove the line"),
)
RAGGED_MORE = _REASONS[0][1]
RAGGED_FEWER = _REASONS[1][1]
UNTERMINATED = _REASONS[2][1]
INVALID_UTF8 = _REASONS[3][1]


def csv_error(source: str, line: int | None, reason: str) -> DexCareCSVError:
    where = f"line {line}" if line is not None else "somewhere in the file"
    return DexCareCSVError(f"{source}: {where}: {reason}.")


#: Why PostgreSQL before 18 staged fewer rows than the file holds (a CSV COPY ends at this line).
END_OF_DATA = (
    "a line holding only \\. (unquoted), which PostgreSQL before 18 reads in CSV as the end of the data, "
    "dropping every row after it; quote the field (\"\\.\") or remove the line"
)
BARE_CR = "mixed line endings (a bare carriage return ends a line here)"


def row_count_error(source: str, *, counted: int, staged: int, by: str, opener: Opener | None) -> DexCareCSVError:
    """The warehouse staged another number of rows than ``by`` counted in the file: name the line that
    explains it (read again, error path only), else say the file is not the one counted."""
    detail = f"{by} counted {counted} data row(s), the load staged {staged}; nothing was written"
    found = find_line(opener, source, row_count_line)
    if found is not None:
        line, reason = found
        return DexCareCSVError(f"{source}: line {line}: {reason} ({detail}).")
    return DexCareCSVError(
        f"{source}: {detail}. The file is not what was counted (changed or replaced since the download?): "
        "download the report again."
    )


def cast_error(source: str, line: int, header: str, sql_type: str) -> DexCareCastError:
    return DexCareCastError(
        f"{source}: line {line}, column {header!r}: the value is not a valid {sql_type}; fix the report or "
        "the column_types setting."
    )


def version_error(source: str, line: int | str, header: str) -> DexCareCastError:
    """An undeclared version column is ordered as instants (:mod:`dexcare.load.instants`); this value names none."""
    return DexCareCastError(
        f"{source}: line {line}, column {header!r}: the version value is not an ISO 8601 timestamp with a UTC "
        f"offset or Z (e.g. {instants.EXAMPLE}), which is how a version column without a configured type is "
        "ordered; fix the report, or declare its type in column_types (e.g. integer) if it is not a timestamp."
    )


def empty_key_error(source: str, line: int | str, keys: Sequence[str]) -> DexCareSchemaError:
    return DexCareSchemaError(
        f"{source}: line {line}: empty key ({', '.join(keys)}); every row needs its key to be deduplicated "
        "and merged."
    )


def key_too_long_error(source: str, line: int, header: str, units: int, sql_type: str) -> DexCareSchemaError:
    return DexCareSchemaError(
        f"{source}: line {line}, column {header!r}: the key is longer than {units} characters, the most its "
        f"indexable type ({sql_type}) holds; check key_columns (a key this long is rarely an id)."
    )


def key_trailing_space_error(source: str, line: int | str, header: str) -> DexCareSchemaError:
    """Both warehouses refuse it: SQL Server's ``=`` and unique indexes ignore trailing spaces (even under a
    binary collation), so ``'a'`` and ``'a '`` would be one visit there and two on PostgreSQL."""
    return DexCareSchemaError(
        f"{source}: line {line}, column {header!r}: the key ends in a space; keys that differ only in trailing "
        "spaces cannot be told apart on SQL Server, so the load refuses them on every warehouse: fix the report "
        "or configure another key column."
    )


def value_too_long_error(source: str, line: int, header: str, sql_type: str) -> DexCareSchemaError:
    return DexCareSchemaError(
        f"{source}: line {line}, column {header!r}: the value is longer than its column's type ({sql_type}) "
        "holds; alter the column to nvarchar(max) or configure a longer type."
    )


def duplicate_keys_error(schema: str, table: str, keys: Sequence[str]) -> DexCareSchemaError:
    return DexCareSchemaError(
        f"{schema}.{table} holds several rows per key ({', '.join(keys)}); cannot add the unique index the load "
        "needs: deduplicate the table or configure the key it was built with."
    )


def unknown_cast_error(source: str, detail: str) -> DexCareCastError:
    return DexCareCastError(
        f"{source}: a value does not convert to its configured column type ({detail}); check column_types."
    )


# --- The warehouse failed the load: one wording for both dialects -----------------------------------------
# ``detail`` names the error (class, number or SQLSTATE, and the server's text only where it cannot quote a
# row value), so the wording a runbook matches on is the same whichever warehouse failed.


def commit_lost_error(detail: str) -> DexCareWarehouseError:
    return DexCareWarehouseError(
        f"Lost the warehouse connection while committing ({detail}); the commit may or may not have happened. "
        "The load is idempotent: run it again."
    )


def load_interrupted_error(what: str, current: str, detail: str) -> DexCareWarehouseError:
    return DexCareWarehouseError(
        f"{what} while loading {current} ({detail}); the transaction was not committed, nothing was written. "
        "Retry the task."
    )


def lock_timeout_error(schema: str, seconds: float, holder: str) -> DexCareWarehouseError:
    return DexCareWarehouseError(
        f"Waited {seconds:g} s for the load lock on schema {schema!r}, held by {holder}; nothing was written. "
        "Another load of this schema is still running or hung: retry later, or end the holder's session."
    )


def load_refused_error(warehouse: str, current: str, detail: str) -> DexCareLoadError:
    return DexCareLoadError(
        f"{warehouse} refused the load of {current} ({detail}); the transaction was rolled back, nothing was "
        "written."
    )


# --- Lines in the file ------------------------------------------------------------------------------------


def invalid_utf8_line(stream: BinaryIO) -> int | None:
    """Line of the first byte that is not UTF-8."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    line = 1
    while block := stream.read(BLOCK_SIZE):
        try:
            decoder.decode(block)
        except UnicodeDecodeError as exc:
            return line + block.count(b"\n", 0, exc.start)
        line += block.count(b"\n")
    return None


def row_count_line(stream: BinaryIO) -> tuple[int, str] | None:
    """Line and reason of the first record that parsers count differently: an unquoted line of only ``\\.``
    (PostgreSQL before 18: end of data), or a bare CR outside quotes (a record end for the parsers, not for
    the counter). Lines are counted by LF, as an editor does for an LF or CRLF file."""
    in_quotes = False
    for number, raw in enumerate(stream, start=1):
        body = raw.removesuffix(b"\n")
        if not in_quotes and number > 1 and body.removesuffix(b"\r") == b"\\.":
            return number, END_OF_DATA
        parts = body.split(b'"')
        for index, part in enumerate(parts):
            if not in_quotes:
                crlf = index == len(parts) - 1 and raw.endswith(b"\r\n")
                if b"\r" in (part[:-1] if crlf else part):
                    return number, BARE_CR
            in_quotes = not in_quotes
        in_quotes = not in_quotes  # one toggle more than there were quotes
    return None


def ragged_record_line(stream: BinaryIO, columns: int) -> int | None:
    """Line where the first record with a field count other than the header's starts."""
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", errors="replace", newline="")
    reader = csv_records.reader(text)
    next(reader, None)
    start = reader.line_num + 1
    for record in reader:
        if len(record) != columns:
            return start
        start = reader.line_num + 1
    return None


def unclosed_quote_line(stream: BinaryIO) -> int | None:
    """Line on which the quoted field that never closes opens (one pass in Python)."""
    line = 1
    opened_at: int | None = None
    while block := stream.read(BLOCK_SIZE):
        position = 0
        while True:
            quote = block.find(b'"', position)
            end = quote if quote != -1 else len(block)
            line += block.count(b"\n", position, end)
            if quote == -1:
                break
            opened_at = line if opened_at is None else None
            position = quote + 1
    return opened_at


def record_line(stream: BinaryIO, record: int) -> int | None:
    """Physical line on which data record ``record`` (1 = first row after the header) starts.

    Counting records is what the database can do cheaply (the stage's row order); turning that into the
    line an editor shows needs the file, because quoted fields may span lines.
    """
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", errors="replace", newline="")
    reader = csv_records.reader(text)
    try:
        next(reader)
        for _ in range(record - 1):
            next(reader)
        start = reader.line_num + 1
        next(reader)
    except (StopIteration, csv_records.Error):
        return None
    return start


def find_line(opener: Opener | None, source: str, finder: Any, *args: Any) -> int | None:
    """Run a line finder over a fresh read of the file; ``None`` if the file cannot be read again."""
    if opener is None:
        return None
    try:
        with opener(source) as stream:
            return finder(stream, *args)
    except (OSError, csv_records.Error, UnicodeDecodeError, DexCareLoadError):  # gone meanwhile: the first error stands
        return None


# --- PostgreSQL: COPY and cast errors ---------------------------------------------------------------------


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
