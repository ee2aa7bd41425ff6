"""CSV records while bytes stream past: counted without parsing fields or holding a row, and the header.

A record ends at a newline outside double quotes. Splitting a chunk on ``"`` alternates between outside and
inside a quoted field (an escaped ``""`` toggles twice, harmlessly), so only the outside pieces are scanned
for newlines; both ``split`` and ``count`` run in C, which keeps the count nearly free next to the download.
The header (the first record) is the one record kept: the download reports the report's columns from it, and
the load reads the same way where its own header is read (:func:`end_of_first_record`, :func:`header_fields`).
"""

from __future__ import annotations

import csv
import io

#: A header larger than this is not a header: most likely a quote that never closes.
MAX_HEADER_BYTES = 1 << 20
BOM = b"\xef\xbb\xbf"


def end_of_first_record(buffer: bytes | bytearray) -> int:
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


def header_fields(raw: bytes) -> list[str]:
    """The fields of a header record (its bytes up to the newline): a BOM and a CR dropped, UTF-8 decoded
    (``UnicodeDecodeError`` otherwise), split by the ``csv`` module's quoting rules."""
    text = raw.removeprefix(BOM).removesuffix(b"\r").decode("utf-8")
    return next(csv.reader(io.StringIO(text, newline="")), [])


class CsvRecordCounter:
    def __init__(self) -> None:
        self._newlines = 0
        self._in_quotes = False
        self._pending = False  # bytes after the last record end: a final record without a newline
        self._head = bytearray()  # the first record, until its end has been seen
        self._head_done = False

    def feed(self, chunk: bytes) -> None:
        if not chunk:
            return
        if not self._head_done:
            self._keep_head(chunk)
        parts = chunk.split(b'"')
        inside = self._in_quotes
        for part in parts:
            if not inside:
                self._newlines += part.count(b"\n")
            inside = not inside
        self._in_quotes = not inside  # the loop toggled once more than there were quotes
        # Ending outside quotes on a newline closes the record; anything else leaves one open.
        self._pending = self._in_quotes or not chunk.endswith(b"\n")

    def _keep_head(self, chunk: bytes) -> None:
        """Only the first chunk or two are looked at: the header ends early in the first one."""
        self._head += chunk
        end = end_of_first_record(self._head)
        if end != -1:
            del self._head[end:]
            self._head_done = True
        elif len(self._head) > MAX_HEADER_BYTES:
            self._head = bytearray()
            self._head_done = True

    @property
    def records(self) -> int:
        return self._newlines + (1 if self._pending else 0)

    @property
    def data_rows(self) -> int:
        """Records after the header line."""
        return max(self.records - 1, 0)

    @property
    def header(self) -> list[str] | None:
        """The first record's fields; ``None`` if there is none that reads as a header (empty, not UTF-8, or a
        quote that never closes). Only names: the load checks the header itself and says what is wrong."""
        complete = self._head_done or not self._in_quotes  # a file of a header without a newline ends it too
        if not self._head or not complete:
            return None
        try:
            fields = header_fields(bytes(self._head))
        except (UnicodeDecodeError, csv.Error):
            return None
        return fields if any(fields) else None
