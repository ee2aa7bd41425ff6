"""A report's data records parsed in Python: for SQL Server's bulk copy and for the DataFrames.

SQL Server has no server-side CSV parser that a client can feed, and a DataFrame is built in Python anyway, so
both read the records here: the C ``csv`` module over a streaming decoder, naming the line of a broken record
itself (PostgreSQL's COPY checks the same rules in its own parser, :mod:`dexcare.load.dialects.postgres.staging`).
A message names the file and line and carries no value from the row; finding the line after a failure is
:mod:`dexcare.load.diagnostics`' job.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any, BinaryIO

from dexcare import csv_records
from dexcare.load import diagnostics
from dexcare.load.csv_stream import BLOCK_SIZE, Header, Opener


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
    return records_from(header.rest, stream, first_line=header.lines + 1, source=source, columns=columns,
                        opener=opener, block_size=block_size)


def records_from(prefix: bytes, stream: BinaryIO, *, first_line: int, source: str, columns: int,
                 opener: Opener | None = None, block_size: int = BLOCK_SIZE) -> Iterator[tuple[int, list[str]]]:
    """:func:`records` from a record boundary on: ``prefix`` (bytes already read) then the rest of ``stream``,
    its first record on ``first_line``. SQL Server's block parser hands a block it does not take on to this."""
    raw = io.BufferedReader(_Rest(prefix, stream), buffer_size=block_size)
    text = io.TextIOWrapper(raw, encoding="utf-8", errors="strict", newline="")
    reader = csv_records.reader(text, strict=True)  # fields as large as PostgreSQL takes
    line = first_line
    try:
        for record in reader:
            if len(record) != columns:
                reason = diagnostics.RAGGED_MORE if len(record) > columns else diagnostics.RAGGED_FEWER
                raise diagnostics.csv_error(source, line, reason)
            yield line, record
            line = first_line + reader.line_num
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
