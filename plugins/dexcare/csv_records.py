"""Counting CSV records while bytes stream past, without parsing fields or holding a row.

A record ends at a newline outside double quotes. Splitting a chunk on ``"`` alternates between outside and
inside a quoted field (an escaped ``""`` toggles twice, harmlessly), so only the outside pieces are scanned
for newlines; both ``split`` and ``count`` run in C, which keeps the count nearly free next to the download.
"""

from __future__ import annotations


class CsvRecordCounter:
    def __init__(self) -> None:
        self._newlines = 0
        self._in_quotes = False
        self._pending = False  # bytes after the last record end: a final record without a newline

    def feed(self, chunk: bytes) -> None:
        if not chunk:
            return
        parts = chunk.split(b'"')
        inside = self._in_quotes
        for part in parts:
            if not inside:
                self._newlines += part.count(b"\n")
            inside = not inside
        self._in_quotes = not inside  # the loop toggled once more than there were quotes
        # Ending outside quotes on a newline closes the record; anything else leaves one open.
        self._pending = self._in_quotes or not chunk.endswith(b"\n")

    @property
    def records(self) -> int:
        return self._newlines + (1 if self._pending else 0)

    @property
    def data_rows(self) -> int:
        """Records after the header line."""
        return max(self.records - 1, 0)
