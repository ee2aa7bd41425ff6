"""SQL Server's staging: the records parsed in Python, checked, and sent with pymssql's bulk copy.

SQL Server has no server-side CSV parser a client can feed, so :func:`dexcare.load.records.records` parses
the file, and the rows go in batches of :attr:`LoadOptions.batch_rows` with pymssql's ``bulk_copy`` into a
session temp table on the load's connection: the stage is inside the transaction and the worker holds one
batch at a time. A record that cannot load (an empty or too-long key, a value too long for its column, a
version that names no instant) stops the load here, where its line is known.
"""

from __future__ import annotations

import codecs
import gc
import io
import re
from collections.abc import Iterator
from typing import Any, BinaryIO

from dexcare.load import diagnostics
from dexcare.load.csv_stream import Header, Opener
from dexcare.load.dialects.mssql.blocks import FS16, FS_TEXT, Block, Refusal, cut, split_block
from dexcare.load.dialects.mssql.sql import MsSqlStatements, is_text, text_units
from dexcare.load.instants import is_instant
from dexcare.load.records import records_from

#: The ISO 8601 forms PostgreSQL's timestamp types read (``T`` or a space, seconds and fraction optional, an
#: offset as ``Z``, ``+hh``, ``+hhmm`` or ``+hh:mm``), rewritten to the one form SQL Server reads the same way
#: whatever the session (``datetimeoffset`` itself refuses ``+0000`` and ``+00``).
_TIMESTAMP = re.compile(
    r"(?P<date>\d{4}-\d{2}-\d{2})[Tt ](?P<time>\d{2}:\d{2})(?P<seconds>:\d{2}(?:\.\d+)?)?\s*"
    r"(?:(?P<z>[Zz])|(?P<sign>[+-])(?P<hh>\d{2})(?::?(?P<mm>\d{2}))?)?"
)
_TEMPORAL = ("datetimeoffset", "datetime2", "datetime", "smalldatetime")
_utf_16_le = codecs.getencoder("utf-16-le")
#: The bytes split at a time: a block and what is made of it (about ten times its size) stay in the CPU's
#: caches; a block of a megabyte made every pass go to memory and cost more than the csv module.
SPLIT_BYTES = 1 << 16


def iso_timestamp(value: str, sql_type: str) -> str:
    """``value`` in the form SQL Server converts to ``sql_type`` as PostgreSQL would: an offset kept for
    ``datetimeoffset`` (``Z``, ``+01``, ``+0100`` become ``+00:00``, ``+01:00``), dropped for the types without
    one (PostgreSQL's ``timestamp`` ignores it too). Anything else is left as it is, for the cast check to
    name its line."""
    match = _TIMESTAMP.fullmatch(value.strip())
    if match is None:
        return value
    text = f"{match['date']}T{match['time']}{match['seconds'] or ':00'}"
    if not sql_type.startswith("datetimeoffset"):
        return text
    if match["sign"]:
        return f"{text}{match['sign']}{match['hh']}:{match['mm'] or '00'}"
    return f"{text}+00:00" if match["z"] else text


class _Rows:
    """The checks and conversions of a bulk-copy row, for a whole block at once or a record at a time.

    Keys go as text (checked: within their indexable length and, for a text key, not ending in a space); every
    other value as its UTF-16LE bytes, which FreeTDS's bulk copy does not trim (see :mod:`.sql`); a value for a
    bounded ``nvarchar(n)`` column is checked against ``n`` here, so it fails naming its line and column."""

    def __init__(self, st: MsSqlStatements) -> None:
        plan = st.plan
        self.source = plan.source
        self.keys = plan.keys
        self.width = len(plan.columns)
        self.checks = [(plan.columns.index(k), text_units(t) or 0, plan.header_of(k), t, is_text(plan.types[k]))
                       for k, t in st.key_types.items()]
        self.bounded = [(plan.columns.index(c), units, plan.header_of(c), plan.types[c]) for c in plan.values
                        if (units := text_units(plan.types[c])) is not None]
        self.temporal = [(plan.columns.index(c), plan.types[c]) for c in plan.values
                         if plan.types[c].startswith(_TEMPORAL)]
        # An undeclared version is ordered as instants: each value must name one (checked where the line is).
        self.version = (plan.columns.index(plan.version) if plan.version is not None and plan.version_instant
                        else None)
        self.version_header = plan.header_of(plan.version) if plan.version is not None else ""

    def row(self, line: int, record: list[str]) -> list[Any]:
        """One record as a row; a record that cannot load raises, naming its line."""
        source = self.source
        for position, sql_type in self.temporal:
            if record[position]:
                record[position] = iso_timestamp(record[position], sql_type)
        # An empty field is NULL; any value but a key goes as its UTF-16LE bytes (the keys are put back as
        # text below). The codec's own function: ``str.encode`` looks the codec up by name on every call.
        row: list[Any] = [_utf_16_le(value)[0] if value else None for value in record]
        for position, units, name, sql_type, text in self.checks:
            key = row[position] = record[position] or None
            if key is None:
                raise diagnostics.empty_key_error(source, line, self.keys)
            if text and key.endswith(" "):
                raise diagnostics.key_trailing_space_error(source, line, name)
            # NVARCHAR counts UTF-16 code units: a character outside the BMP takes two.
            if len(key) > units // 2 and (len(key) > units or len(key.encode("utf-16-le")) > 2 * units):
                raise diagnostics.key_too_long_error(source, line, name, units, sql_type)
        for position, units, name, sql_type in self.bounded:
            if row[position] is not None and len(row[position]) > 2 * units:
                raise diagnostics.value_too_long_error(source, line, name, sql_type)
        version = self.version
        if version is not None and record[version] and not is_instant(record[version]):
            raise diagnostics.version_error(source, line, self.version_header)
        row.append(line)
        return row

    def block(self, block: Block) -> list[list[Any]] | None:
        """A block's rows, or ``None`` when one of them fails a check (the caller then has the csv module read on
        from the block, a record at a time, which names the first bad line). Each check is a pass over a column."""
        flat, stride, records = block.flat, self.width + 1, block.records
        for position, sql_type in self.temporal:
            texts = [iso_timestamp(value, sql_type) if value else value for value in _texts(flat[position::stride])]
            values = FS_TEXT.join(texts).encode("utf-16-le").split(FS16)
            if len(values) != records:
                return None
            flat[position::stride] = values
        if self.version is not None and not all(map(is_instant, filter(None, _texts(flat[self.version::stride])))):
            return None
        keys = []
        for position, units, _name, _sql_type, text in self.checks:
            column = flat[position::stride]
            if b"" in column or max(map(len, column)) > 2 * units:
                return None
            joined = FS16.join(column).decode("utf-16-le")
            if text and (joined.endswith(" ") or " " + FS_TEXT in joined):
                return None
            keys.append((position, joined))
        for position, units, _name, _sql_type in self.bounded:
            if max(map(len, flat[position::stride])) > 2 * units:
                return None
        # An empty field is NULL. ``split`` gives every empty piece as the one empty bytes object, which
        # ``index`` finds by identity: a pass in C, and a step in Python only where a field is empty.
        try:
            at = flat.index(b"")
            while True:
                flat[at] = None
                at = flat.index(b"", at + 1)
        except ValueError:
            pass
        for position, joined in keys:
            flat[position::stride] = joined.split(FS_TEXT)
        return [flat[start : start + stride] for start in range(0, len(flat), stride)]


def _texts(values: list[Any]) -> list[str]:
    """UTF-16LE values of one column as text, decoded together (they hold no separator: see :mod:`.blocks`)."""
    return FS16.join(values).decode("utf-16-le").split(FS_TEXT)


def _rows(st: MsSqlStatements, header: Header, stream: BinaryIO, *, opener: Opener,
          block_size: int) -> Iterator[list[list[Any]]]:
    """The file's rows, a block's worth at a time, split in C (:mod:`.blocks`). A block quoted as a report is but
    holding what the split does not take goes to the ``csv`` module alone; from the first one that is not (or
    whose rows fail a check), the ``csv`` module reads the rest a record at a time, as before, which names the
    line of what is wrong."""
    rows = _Rows(st)
    source, width = st.plan.source, rows.width
    line = header.lines + 1
    buffer = header.rest
    limit = max(16 * SPLIT_BYTES, block_size)  # a record longer than this: the csv module takes it
    eof = False
    while not eof:
        chunk = stream.read(min(block_size, SPLIT_BYTES))
        eof = not chunk
        buffer += chunk
        end = len(buffer) if eof else cut(buffer)
        if not end:
            if len(buffer) <= limit:
                continue
            split: Block | Refusal = Refusal.REST
        else:
            block = buffer[:end]
            split = split_block(block if block.endswith(b"\n") else block + b"\n", width=width, first_line=line)
        made = rows.block(split) if isinstance(split, Block) else None
        if split is Refusal.BLOCK:
            for next_line, record in records_from(block, io.BytesIO(), first_line=line, source=source, columns=width,
                                                  opener=opener, block_size=block_size):
                yield [rows.row(next_line, record)]
            # The lines the csv module counted: LF, CRLF and a bare CR (in a quoted field) each end one.
            line += block.count(b"\n") + block.count(b"\r") - block.count(b"\r\n")
            buffer = buffer[end:]
            continue
        if made is None:
            for next_line, record in records_from(buffer, stream, first_line=line, source=source, columns=width,
                                                  opener=opener, block_size=block_size):
                yield [rows.row(next_line, record)]
            return
        assert isinstance(split, Block)  # rows.block() made something of it
        if made:
            yield made
        line += split.lines
        buffer = buffer[end:]


def batches(st: MsSqlStatements, header: Header, stream: BinaryIO, *, opener: Opener, block_size: int,
            batch_rows: int) -> Iterator[list[list[Any]]]:
    """The file's records as bulk-copy rows (values, then the line the record starts on), ``batch_rows`` at a
    time. Every record of a batch is checked before the batch is handed out, so a bad record stops the load
    between two bulk copies, with the connection in a clean state, and the worker holds one batch at most
    (and the block being split)."""
    # Python's cyclic collector is paused while this makes a batch, and runs as usual while the caller holds
    # it. A batch is thousands of lists that all stay alive until it is sent, none part of a cycle: collecting
    # while they are made finds nothing, but moves them to the oldest generation, whose full collections (the
    # whole worker's heap) then come every few batches; that was a third of this side's time.
    paused = gc.isenabled()
    batch: list[list[Any]] = []
    try:
        if paused:
            gc.disable()
        for made in _rows(st, header, stream, opener=opener, block_size=block_size):
            batch += made
            while len(batch) >= batch_rows:
                full = batch[:batch_rows]
                del batch[:batch_rows]
                if paused:
                    gc.enable()
                yield full
                paused = gc.isenabled()
                if paused:
                    gc.disable()
        if batch:
            if paused:
                gc.enable()
            yield batch
    finally:
        if paused:
            gc.enable()


def bulk_copy(conn: Any, st: MsSqlStatements, header: Header, stream: BinaryIO, *, opener: Opener, block_size: int,
              batch_rows: int) -> int:
    """Stage the file's records in ``st.stage``, a batch per bulk copy; returns the number of records sent."""
    sent = 0
    for batch in batches(st, header, stream, opener=opener, block_size=block_size, batch_rows=batch_rows):
        # The raw '#name' (ours, letters, digits and '_'): pymssql looks a temp table's columns up in tempdb
        # only when the name starts with '#', and that lookup is what makes it send text as NVARCHAR.
        conn.bulk_copy(st.stage, batch, batch_size=len(batch))
        sent += len(batch)
    return sent
