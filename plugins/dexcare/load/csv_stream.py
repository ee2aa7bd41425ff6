"""Stream a report file into a COPY, validating it on the way without parsing it twice.

Python reads only the header record (to name the columns); every data byte goes, in 1 MiB blocks, straight
into PostgreSQL's own CSV parser, which is written in C and already checks what we need: ragged rows, open
quotes and invalid UTF-8 (``ENCODING 'UTF8'``). Parsing the rows in Python first would cost several times
the COPY itself. PostgreSQL's error names the record; we translate it into a message naming the file and
line and carrying no value from the row.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import BinaryIO

import psycopg
from psycopg import sql

from dexcare.load.errors import DexCareCSVError
from dexcare.storage import ReportLocation

BLOCK_SIZE = 1 << 20
#: A header larger than this is not a header: most likely a quote that never closes.
MAX_HEADER_BYTES = 1 << 20
_BOM = b"\xef\xbb\xbf"

Opener = Callable[[str], BinaryIO]


def open_report(uri: str) -> BinaryIO:
    """The file behind a download's URI, local or in an object store (see :mod:`dexcare.storage`)."""
    return ReportLocation.parse(uri).open()


@dataclass
class Header:
    """The header record as read, and the bytes already consumed past it (handed on to COPY)."""

    fields: list[str]
    rest: bytes
    #: Physical lines the header occupies (more than one if a quoted header name holds a newline).
    lines: int = 1


def _end_of_first_record(buffer: bytes) -> int:
    """Index of the newline that ends the first CSV record, honouring quotes; -1 if not in ``buffer``."""
    in_quotes = False
    start = 0
    while True:
        quote = buffer.find(b'"', start)
        newline = buffer.find(b"\n", start)
        if not in_quotes and newline != -1 and (quote == -1 or newline < quote):
            return newline
        if quote == -1:
            return -1
        in_quotes = not in_quotes
        start = quote + 1


def read_header(stream: BinaryIO, *, source: str) -> Header:
    """Read just the first record; refuse an empty file and a header that is not UTF-8 or never ends."""
    buffer = b""
    end = -1
    while end == -1:
        chunk = stream.read(64 * 1024)
        if not chunk:
            break
        buffer += chunk
        end = _end_of_first_record(buffer)
        if end == -1 and len(buffer) > MAX_HEADER_BYTES:
            raise DexCareCSVError(
                f"{source}: line 1: no end of the header within {MAX_HEADER_BYTES} bytes "
                "(unterminated quoted field?)."
            )
    if end == -1:
        raw, rest = buffer, b""
    else:
        raw, rest = buffer[:end], buffer[end + 1 :]
    raw = raw.removeprefix(_BOM).removesuffix(b"\r")
    if not raw.strip():
        raise DexCareCSVError(
            f"{source}: the file is empty (no header line); DexCare always sends a header, "
            "so the download is probably broken: download the report again."
        )
    if raw.count(b'"') % 2:
        raise DexCareCSVError(f"{source}: line 1: unterminated quoted field in the header.")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DexCareCSVError(f"{source}: line 1: invalid UTF-8 in the header (byte {exc.start}).") from None
    fields = next(csv.reader(io.StringIO(text, newline="")))
    return Header(fields=fields, rest=rest, lines=raw.count(b"\n") + 1)


def copy_stream(
    cursor: psycopg.Cursor,
    table: sql.Composable,
    columns: list[str],
    header: Header,
    stream: BinaryIO,
    *,
    block_size: int = BLOCK_SIZE,
    force_null: Sequence[str] = (),
) -> int:
    """COPY the rest of ``stream`` into ``table``; returns the number of data rows PostgreSQL accepted.

    ``force_null`` columns read a quoted empty field as NULL too (typed columns: "" is no timestamp).
    """
    options = sql.SQL("FORMAT csv, ENCODING 'UTF8'")
    if force_null:
        options = sql.SQL("{}, FORCE_NULL ({})").format(
            options, sql.SQL(", ").join(sql.Identifier(c) for c in force_null)
        )
    statement = sql.SQL("COPY {} ({}) FROM STDIN ({})").format(
        table, sql.SQL(", ").join(sql.Identifier(c) for c in columns), options
    )
    with cursor.copy(statement) as copy:
        if header.rest:
            copy.write(header.rest)
        while block := stream.read(block_size):
            copy.write(block)
    return cursor.rowcount


_LINE = re.compile(r"\bline (\d+)")
_REASONS = (
    ("extra data after last expected column", "more fields than the header has columns (ragged row)"),
    ("missing data for column", "fewer fields than the header has columns (ragged row)"),
    ("unterminated csv quoted field", "unterminated quoted field (a quote opens and never closes)"),
    ("invalid byte sequence", "invalid UTF-8 byte sequence"),
    ("carriage return", "mixed line endings (a bare carriage return in an unquoted field)"),
    ("newline found in data", "mixed line endings (a bare newline in an unquoted field)"),
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
    what it has seen of the file so far. So on this (error) path the file is read once more in Python to
    find the physical line an editor would show.
    """
    primary = (exc.diag.message_primary or "").lower()
    reason = next((text for needle, text in _REASONS if needle in primary), None)
    if reason is None:
        reason = f"PostgreSQL's CSV parser rejected it (SQLSTATE {exc.sqlstate})"
    line = copy_error_line(exc, header_lines)
    if reopen is not None:
        try:
            with reopen(source) as stream:
                if "unterminated" in primary:
                    found = unclosed_quote_line(stream)
                elif "byte sequence" in primary:
                    found = invalid_utf8_line(stream)
                elif "data" in primary and "column" in primary:
                    found = ragged_record_line(stream, columns)
                else:
                    found = None
        except (OSError, csv.Error, UnicodeDecodeError):
            found = None
        line = found or line
    where = f"line {line}" if line is not None else "somewhere in the file"
    return DexCareCSVError(f"{source}: {where}: {reason}.")


def invalid_utf8_line(stream: BinaryIO) -> int | None:
    """Line of the first byte that is not UTF-8 (error path only)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    line = 1
    while block := stream.read(BLOCK_SIZE):
        try:
            decoder.decode(block)
        except UnicodeDecodeError as exc:
            return line + block.count(b"\n", 0, exc.start)
        line += block.count(b"\n")
    return None


def ragged_record_line(stream: BinaryIO, columns: int) -> int | None:
    """Line where the first record with a field count other than the header's starts (error path only)."""
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", errors="replace", newline="")
    reader = csv.reader(text)
    next(reader, None)
    start = reader.line_num + 1
    for record in reader:
        if len(record) != columns:
            return start
        start = reader.line_num + 1
    return None


def unclosed_quote_line(stream: BinaryIO) -> int | None:
    """Line on which the quoted field that never closes opens (error path only: one pass in Python)."""
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

    Error path only. Counting records is what the database can do cheaply (the stage's row order);
    turning that into the line an editor shows needs the file, because quoted fields may span lines.
    """
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", errors="replace", newline="")
    reader = csv.reader(text)
    try:
        next(reader)
        for _ in range(record - 1):
            next(reader)
        start = reader.line_num + 1
        next(reader)
    except (StopIteration, csv.Error):
        return None
    return start
