"""SQL Server's staging: the records parsed in Python, checked, and sent with pymssql's bulk copy.

SQL Server has no server-side CSV parser a client can feed, so :func:`dexcare.load.records.records` parses
the file, and the rows go in batches of :attr:`LoadOptions.batch_rows` with pymssql's ``bulk_copy`` into a
session temp table on the load's connection: the stage is inside the transaction and the worker holds one
batch at a time. A record that cannot load (an empty or too-long key, a value too long for its column, a
version that names no instant) stops the load here, where its line is known.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterator
from typing import Any, BinaryIO

from dexcare.load import diagnostics
from dexcare.load.csv_stream import Header, Opener
from dexcare.load.dialects.mssql.sql import MsSqlStatements, is_text, text_units
from dexcare.load.instants import is_instant
from dexcare.load.records import records

#: The ISO 8601 forms PostgreSQL's timestamp types read (``T`` or a space, seconds and fraction optional, an
#: offset as ``Z``, ``+hh``, ``+hhmm`` or ``+hh:mm``), rewritten to the one form SQL Server reads the same way
#: whatever the session (``datetimeoffset`` itself refuses ``+0000`` and ``+00``).
_TIMESTAMP = re.compile(
    r"(?P<date>\d{4}-\d{2}-\d{2})[Tt ](?P<time>\d{2}:\d{2})(?P<seconds>:\d{2}(?:\.\d+)?)?\s*"
    r"(?:(?P<z>[Zz])|(?P<sign>[+-])(?P<hh>\d{2})(?::?(?P<mm>\d{2}))?)?"
)
_TEMPORAL = ("datetimeoffset", "datetime2", "datetime", "smalldatetime")
_utf_16_le = codecs.getencoder("utf-16-le")


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


def batches(st: MsSqlStatements, header: Header, stream: BinaryIO, *, opener: Opener, block_size: int,
            batch_rows: int) -> Iterator[list[list[Any]]]:
    """The file's records as bulk-copy rows (values, then the line the record starts on), ``batch_rows`` at a
    time. Every record of a batch is checked before the batch is handed out, so a bad record stops the load
    between two bulk copies, with the connection in a clean state, and the worker holds one batch at most.

    Keys go as text (checked: within their indexable length and, for a text key, not ending in a space); every
    other value as its UTF-16LE bytes, which FreeTDS's bulk copy does not trim (see :mod:`.sql`); a value for a
    bounded ``nvarchar(n)`` column is checked against ``n`` here, so it fails naming its line and column."""
    plan, source = st.plan, st.plan.source
    checks = [(plan.columns.index(k), text_units(t) or 0, plan.header_of(k), t, is_text(plan.types[k]))
              for k, t in st.key_types.items()]
    bounded = [(plan.columns.index(c), units, plan.header_of(c), plan.types[c]) for c in plan.values
               if (units := text_units(plan.types[c])) is not None]
    temporal = [(plan.columns.index(c), plan.types[c]) for c in plan.values
                if plan.types[c].startswith(_TEMPORAL)]
    # An undeclared version is ordered as instants: each value must name one (checked here, where the line is).
    version = plan.columns.index(plan.version) if plan.version is not None and plan.version_instant else None
    batch: list[list[Any]] = []
    for line, record in records(header, stream, source=source, columns=len(plan.columns), opener=opener,
                                block_size=block_size):
        if temporal:
            for position, sql_type in temporal:
                if record[position]:
                    record[position] = iso_timestamp(record[position], sql_type)
        # An empty field is NULL; any value but a key goes as its UTF-16LE bytes (the keys are put back as
        # text below). The codec's own function: ``str.encode`` looks the codec up by name on every call,
        # which was most of this loop's time on a million rows.
        row: list[Any] = [_utf_16_le(value)[0] if value else None for value in record]
        for position, units, name, sql_type, text in checks:
            key = row[position] = record[position] or None
            if key is None:
                raise diagnostics.empty_key_error(source, line, plan.keys)
            if text and key.endswith(" "):
                raise diagnostics.key_trailing_space_error(source, line, name)
            # NVARCHAR counts UTF-16 code units: a character outside the BMP takes two.
            if len(key) > units // 2 and (len(key) > units or len(key.encode("utf-16-le")) > 2 * units):
                raise diagnostics.key_too_long_error(source, line, name, units, sql_type)
        for position, units, name, sql_type in bounded:
            if row[position] is not None and len(row[position]) > 2 * units:
                raise diagnostics.value_too_long_error(source, line, name, sql_type)
        if version is not None and record[version] and not is_instant(record[version]):
            raise diagnostics.version_error(source, line, plan.header_of(plan.columns[version]))
        row.append(line)
        batch.append(row)
        if len(batch) >= batch_rows:
            yield batch
            batch = []
    if batch:
        yield batch


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
