"""A block of whole CSV records split into bulk-copy values by passes of C over the block, no loop per field.

The C ``csv`` module alone cost more than twice the SQL Server side's budget of a second per million rows: it
builds every field character by character, and then each value was encoded on its own. Here a block (64 KiB of
whole records: it and what is made of it stay in the CPU's caches) goes through ``bytes`` and ``str`` methods
that each run once over the block: the quotes split it into pieces outside and inside quoted fields, the
outside commas, line feeds and CRs become three ASCII control characters a report never holds, the block is
decoded and encoded to UTF-16LE once, and one ``split`` cuts it into the values. Each record ends in a marker
field, so a ragged record shows as a marker out of place, and the check of a whole block is a count.

Anything this does not read exactly as the ``csv`` module would (a control character it uses, a bare CR, a
quote that does not open or close a field, a record too ragged, bytes that are not UTF-8, a character whose
UTF-16LE bytes could fake a separator) makes :func:`split_block` answer a :class:`Refusal`, and the caller has
the ``csv`` module (:func:`dexcare.load.records.records_from`) read that block, or the rest of the file from it,
which names the line of what is wrong. So this never raises and never decides an error's wording: it only
takes the blocks that are plainly well formed.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from itertools import accumulate
from operator import itemgetter
from typing import Any

#: What the outside commas, line feeds and CRs become: ASCII controls (valid UTF-8, one UTF-16LE unit each)
#: that a block must not hold itself. Inside quotes they are turned back.
FS, RS, CR = b"\x1f", b"\x1e", b"\x1d"
#: The field separator as text and as UTF-16LE: a block's values are cut at it, and the staging joins a column's
#: values with it to check them in one pass (they cannot hold it: a block that does is refused).
FS_TEXT = FS.decode("ascii")
FS16, _RS16 = FS_TEXT.encode("utf-16-le"), RS.decode("ascii").encode("utf-16-le")
_OUT = bytes.maketrans(b",\n\r", FS + RS + CR)
_BACK = bytes.maketrans(FS + RS + CR, b",\n\r")
#: A record's end, as a field of its own: the line number takes its place in the row.
_END = FS + RS + FS
_first = itemgetter(slice(0, 1))
_last = itemgetter(slice(-1, None))


class Refusal(Enum):
    """Why a block is left to the ``csv`` module, and how much of the file with it."""

    #: Quoted as a report is, but holding what this does not take (a character that could fake a separator, a
    #: bare CR in a quoted field): its end is a record's end, so the next block is split here again.
    BLOCK = "this block"
    #: Anything else (quotes out of place, a ragged record, bytes that are not UTF-8, ...): the block's end may be
    #: inside a record as the csv module reads it, so it reads on to the end of the file (or the error it names).
    REST = "the rest of the file"


@dataclass
class Block:
    """A block's records as one flat list, ``width + 1`` items a record (the last one the record's line)."""

    #: Values as UTF-16LE bytes (``None`` once the caller made empty ones NULL, ``str`` for keys it put back) and
    #: each record's line number as an ``int``: one list the caller edits in place, so typed as what it will hold.
    flat: list[Any]
    records: int
    #: Physical lines the block's records span (more than ``records`` when quoted fields hold line breaks).
    lines: int


def cut(buffer: bytes) -> int:
    """Where the last whole record of ``buffer`` ends (after its line feed, outside quotes); 0 if none does.

    Quotes are counted, not parsed: a block that quotes oddly is cut somewhere, and the split refuses it."""
    end = buffer.rfind(b"\n")
    if end == -1:
        return 0
    tail = buffer.count(b'"', end)
    quotes = buffer.count(b'"') - tail
    while quotes % 2:  # this line feed is inside a quoted field: try the one before
        previous = buffer.rfind(b"\n", 0, end)
        if previous == -1:
            return 0
        quotes -= buffer.count(b'"', previous, end)
        end = previous
    return end + 1


def split_block(block: bytes, *, width: int, first_line: int) -> Block | Refusal:
    """``block`` (whole records, ending with a line feed) as UTF-16LE values, ``b""`` where a field is empty;
    a :class:`Refusal` when the ``csv`` module must read it (see the module's docstring)."""
    if width < 2 or FS in block or RS in block or CR in block:
        return Refusal.REST  # a one-column file: the csv module reads a blank line as no field at all
    text = block.translate(_OUT)
    if b'"' in text:
        pieces = text.split(b'"')
        if not len(pieces) % 2:
            return Refusal.REST  # a quote left open
        outside = pieces[::2]
        # A quote opens a field (after a comma or line end) and closes one (before them or a CR, which must
        # be a CRLF's: checked below); an empty piece between two quoted pieces is an escaped quote.
        starts = b"".join(map(_first, outside[1:]))
        ends = b"".join(map(_last, outside[:-1]))
        if starts.translate(None, FS + RS + CR) or ends.translate(None, FS + RS):
            return Refusal.REST
        inside = b'"'.join(pieces[1::2])
        if FS in inside or RS in inside or CR in inside:
            inside = inside.translate(_BACK)
            crs = inside.count(b"\r")
            if crs and crs != inside.count(b"\r\n"):
                return Refusal.BLOCK  # a bare CR in a quoted field: a line of its own for the csv module
            pieces[1::2] = inside.split(b'"')
        middle = pieces[2:-1:2]
        if b"" in middle:
            pieces[2:-1:2] = [piece or b'"' for piece in middle]
        text = b"".join(pieces)
    records = text.count(RS)
    if not records or not text.endswith(RS):
        return Refusal.REST
    ended = text.replace(CR + RS, _END)
    crlf = len(ended) - len(text)  # each CRLF grew by a byte
    if crlf != records:
        ended = (text.replace(CR + RS, RS) if crlf else text).replace(RS, _END)
    if CR in ended:
        return Refusal.REST  # a bare CR: the csv module ends a line there
    try:
        wide = ended.decode("utf-8").encode("utf-16-le")
    except UnicodeDecodeError:
        return Refusal.REST
    flat: list[Any] = wide.split(FS16)
    stride = width + 1
    # A character whose high byte is 0x1f before one whose low byte is 0 would split between them: then there
    # are more pieces than separators.
    if len(flat) - 1 != ended.count(FS):
        return Refusal.BLOCK
    # A ragged record puts a marker out of its place.
    if len(flat) != stride * records + 1 or flat[width::stride].count(_RS16) != records:
        return Refusal.REST
    del flat[-1]
    embedded = 0
    at = text.find(b"\n")  # a line feed left is in a quoted field: it moves the records after it a line down
    if at != -1:
        steps = [1] * records
        steps[0] = first_line
        record = seen = 0
        while at != -1:
            record += text.count(RS, seen, at)  # the record it is in: the record ends before it
            seen = at
            embedded += 1
            if record + 1 < records:
                steps[record + 1] += 1
            at = text.find(b"\n", at + 1)
        flat[width::stride] = list(accumulate(steps))
    else:
        flat[width::stride] = range(first_line, first_line + records)
    return Block(flat, records, records + embedded)
