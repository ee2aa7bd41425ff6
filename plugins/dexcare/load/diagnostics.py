"""Error path only: find the line and column a load failed on, and say so without quoting a value.

The fast path never counts lines: COPY (or the bulk copy) streams the file and the database reports at
best a record number, which drifts from what an editor shows once a quoted field spans lines. Only after
something failed do these functions read the file again to name the physical line; the wording here is the
same whichever warehouse failed (a dialect's own error path, such as PostgreSQL's reading of a COPY error, is
in its package and builds its messages from these). Messages name the file, the line and the column, never a
value: report rows carry patient data.
"""

from __future__ import annotations

import codecs
import io
from collections.abc import Callable, Sequence
from typing import Any, BinaryIO, TypeVar

from dexcare import csv_records
from dexcare.exceptions import (
    DexCareCastError,
    DexCareCSVError,
    DexCareLoadError,
    DexCareSchemaError,
    DexCareWarehouseError,
)
from dexcare.load import instants
from dexcare.load.csv_stream import BLOCK_SIZE, Opener

#: A broken record, in the same words whichever parser found it (Python's, or PostgreSQL's COPY).
RAGGED_MORE = "more fields than the header has columns (ragged row)"
RAGGED_FEWER = "fewer fields than the header has columns (ragged row)"
UNTERMINATED = "unterminated quoted field (a quote opens and never closes)"
INVALID_UTF8 = "invalid UTF-8 byte sequence"


T = TypeVar("T")

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


def find_line(opener: Opener | None, source: str, finder: Callable[..., T | None], *args: Any) -> T | None:
    """Run a line finder over a fresh read of the file; ``None`` if the file cannot be read again."""
    if opener is None:
        return None
    try:
        with opener(source) as stream:
            return finder(stream, *args)
    except (OSError, csv_records.Error, UnicodeDecodeError, DexCareLoadError):  # gone meanwhile: the first error stands
        return None
