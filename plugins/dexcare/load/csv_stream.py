"""Open a report file and read its header record, the part of reading a file every warehouse shares.

Python reads only the header record (to name the columns); what follows is each dialect's to stream
(:mod:`dexcare.load.dialects.postgres.staging` hands every byte to PostgreSQL's COPY,
:mod:`dexcare.load.dialects.mssql.staging` parses it with :func:`dexcare.load.records.records`). A message
names the file and line and carries no value from the row.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

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
