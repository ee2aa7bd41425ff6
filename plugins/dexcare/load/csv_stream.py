"""Stream a report file to the warehouse, validating it on the way without parsing it twice.

Python reads only the header record (to name the columns). For PostgreSQL every data byte then goes, in
1 MiB blocks, straight into its own CSV parser (COPY), which is written in C and already checks what we
need: ragged rows, open quotes and invalid UTF-8 (``ENCODING 'UTF8'``); parsing the rows in Python first
would cost several times the COPY itself. SQL Server has no server-side CSV parser that a client can feed,
so for it :func:`records` parses the rest in Python (the C ``csv`` module over a streaming decoder) and
names the line of a broken record itself. Either way a message names the file and line and carries no
value from the row; the error-path lookups live in :mod:`dexcare.load.diagnostics`.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

import psycopg
from psycopg import sql

from dexcare import csv_records
from dexcare.csv_records import BOM, MAX_HEADER_BYTES, CsvShapeError, end_of_first_record, header_fields
from dexcare.exceptions import DexCareCSVError
from dexcare.storage import ReportLocation

BLOCK_SIZE = 1 << 20

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


def read_header(stream: BinaryIO, *, source: str) -> Header:
    """Read just the first record; refuse an empty file, CR-only line endings and a header that is not UTF-8 or
    never ends. Whether it is a DexCare header (the key columns) is the loader's check, before any use."""
    buffer = b""
    end = -1
    try:
        while end == -1:
            chunk = stream.read(64 * 1024)
            buffer += chunk
            end = end_of_first_record(buffer, final=not chunk)
            if not chunk:
                break
            if end == -1 and len(buffer) > MAX_HEADER_BYTES:
                raise DexCareCSVError(
                    f"{source}: line 1: no end of the header within {MAX_HEADER_BYTES} bytes "
                    "(unterminated quoted field?)."
                )
    except CsvShapeError as exc:
        raise DexCareCSVError(f"{source}: line 1: {exc}.") from None
    if end == -1:
        raw, rest = buffer, b""
    else:
        raw, rest = buffer[:end], buffer[end + 1 :]
    raw = raw.removeprefix(BOM).removesuffix(b"\r")
    if not raw.strip():
        raise DexCareCSVError(
            f"{source}: the file is empty (no header line); DexCare always sends a header, "
            "so the download is probably broken: download the report again."
        )
    if raw.count(b'"') % 2:
        raise DexCareCSVError(f"{source}: line 1: unterminated quoted field in the header.")
    try:
        fields = header_fields(raw)
    except UnicodeDecodeError as exc:
        raise DexCareCSVError(f"{source}: line 1: invalid UTF-8 in the header (byte {exc.start}).") from None
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


class _Rest(io.RawIOBase):
    """The bytes after the header (already read), then the rest of the stream: one readable raw file."""

    def __init__(self, rest: bytes, stream: BinaryIO) -> None:
        self._rest = memoryview(rest)
        self._stream = stream

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._rest:
            n = min(len(buffer), len(self._rest))
            buffer[:n] = self._rest[:n]
            self._rest = self._rest[n:]
            return n
        data = self._stream.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def records(header: Header, stream: BinaryIO, *, source: str, columns: int, opener: Opener | None = None,
            block_size: int = BLOCK_SIZE) -> Iterator[tuple[int, list[str]]]:
    """Yield ``(line, fields)`` for every data record after ``header``; ``line`` is where the record starts.

    The file is decoded strictly as UTF-8 in ``block_size`` pieces and split by the C ``csv`` module, so
    memory stays flat whatever the file's size; a field may be as large as PostgreSQL accepts (1 GB, see
    :func:`dexcare.csv_records.reader`), so both dialects take the same files. A ragged record, an
    unterminated quote, a bare line break inside a field or a byte that is not UTF-8 stops the iteration
    with a :class:`DexCareCSVError` naming the line (found by reading the file again on that error path,
    through ``opener``).
    """
    from dexcare.load import diagnostics

    raw = io.BufferedReader(_Rest(header.rest, stream), buffer_size=block_size)
    text = io.TextIOWrapper(raw, encoding="utf-8", errors="strict", newline="")
    reader = csv_records.reader(text, strict=True)  # fields as large as PostgreSQL takes
    line = header.lines + 1
    try:
        for record in reader:
            if len(record) != columns:
                reason = diagnostics.RAGGED_MORE if len(record) > columns else diagnostics.RAGGED_FEWER
                raise diagnostics.csv_error(source, line, reason)
            yield line, record
            line = header.lines + reader.line_num + 1
    except UnicodeDecodeError:
        # The decoder runs ahead of the parser by up to a block: the line comes from a second read.
        found = diagnostics.find_line(opener, source, diagnostics.invalid_utf8_line)
        raise diagnostics.csv_error(source, found, diagnostics.INVALID_UTF8) from None
    except csv_records.Error as exc:
        if "unexpected end of data" in str(exc):
            found = diagnostics.find_line(opener, source, diagnostics.unclosed_quote_line)
            raise diagnostics.csv_error(source, found or line, diagnostics.UNTERMINATED) from None
        if "new-line character" in str(exc):
            raise diagnostics.csv_error(
                source, line, "mixed line endings (a bare line break in an unquoted field)") from None
        # The csv module's messages describe the syntax (e.g. "',' expected after '\"'"), never a value.
        raise diagnostics.csv_error(source, line, f"malformed CSV ({exc})") from None
