"""CSV records while bytes stream past: counted without parsing fields or holding a row, and the header.

A record ends at a newline outside double quotes. Splitting a chunk on ``"`` alternates between outside and
inside a quoted field (an escaped ``""`` toggles twice, harmlessly), so the records are the chunk's newlines
less those in the inside pieces. :meth:`CsvRecordCounter.feed` does this on the chunk's quotes and newlines
only, in C with no loop in Python, which keeps the count nearly free next to the download.
The header (the first record) is the one record kept: the download reports the report's columns from it, and
the load reads the same way where its own header is read (:func:`end_of_first_record`, :func:`header_fields`).

This module is also the one home of the rules every reader of a report applies before it trusts a byte of
it, so the download, the load's header reader and both loaders refuse the same files with the same words:

* Line endings are LF or CRLF. A bare CR (old Mac style, ``\\r`` alone) ends a record for PostgreSQL's and
  Python's CSV parsers but not for the counter, so a CR-only file would read as one long header and load no
  row; it is refused (:data:`CR_ONLY`) where the first record is looked for.
* The first record is a DexCare header only if the configured key columns are in it (:func:`missing_key`,
  default :data:`DEFAULT_KEY`; names normalised by :func:`normalize_identifier`, as the load names its
  columns). Until then its fields may be a patient's name and birth date (a headerless file, another report),
  so no message quotes them (:func:`unrecognised_header`).
* Fields may be as large as PostgreSQL accepts (:func:`reader`).
"""

from __future__ import annotations

import importlib.util
import io
import re
import unicodedata
from collections.abc import Iterable, Sequence
from typing import Any

#: A header larger than this is not a header: most likely a quote that never closes.
MAX_HEADER_BYTES = 1 << 20
BOM = b"\xef\xbb\xbf"
#: PostgreSQL's largest field (a text value, and a COPY line, stop at 1 GB): both dialects accept the same files.
FIELD_LIMIT = 1 << 30
_NEITHER_QUOTE_NOR_NEWLINE = bytes(byte for byte in range(256) if byte not in b'"\n')
CR_ONLY = (
    "line endings are CR only (old Mac style; or a bare CR where a line should end); DexCare sends LF or CRLF: "
    "convert the file's line endings to LF (e.g. tr '\\r' '\\n') or download the report again"
)


class CsvShapeError(ValueError):
    """The bytes are not a DexCare CSV in a way no retry fixes. The text names the problem and never a field;
    callers put the file (and line) in front and raise their own error type."""


def _private_csv() -> Any:
    """A second instance of the C ``_csv`` module, with a field limit of its own.

    The ``csv`` module refuses fields over 131,072 characters by default, and ``csv.field_size_limit`` is one
    setting for the whole process: raising it for us would silently lift the guard for every other user of
    ``csv`` in the worker (a provider, a DAG), and setting it back around each record races with them. ``_csv``
    keeps its limit in per-module state (multi-phase initialisation), so loading it once more gives this
    package a parser of its own whose limit is :data:`FIELD_LIMIT`, and ``csv.field_size_limit()`` stays
    what it was. Its ``Error`` is a class of its own too: catch :data:`Error`.
    """
    spec = importlib.util.find_spec("_csv")
    if spec is None or spec.loader is None:  # pragma: no cover - part of every CPython
        raise ImportError("the C _csv module is missing")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.field_size_limit(FIELD_LIMIT)
    return module


_csv = _private_csv()
#: What :func:`reader` raises on malformed CSV (``csv.Error`` of the private parser).
Error: type[Exception] = _csv.Error


def reader(lines: Iterable[str], **options: Any) -> Any:
    """``csv.reader`` with the C parser's own options, accepting fields up to :data:`FIELD_LIMIT` characters."""
    return _csv.reader(lines, **options)


def _refuse_bare_cr(buffer: bytes | bytearray, start: int, stop: int, final: bool) -> None:
    """A CR in ``buffer[start:stop]`` (outside quotes, before the first newline) that no LF follows."""
    cr = buffer.find(b"\r", start, stop)
    if cr == -1:
        return
    after = cr + 1
    if after == len(buffer) and not final:
        return  # the LF may come with the next chunk
    if after == stop and after < len(buffer) and buffer[after] == 0x0A:
        return  # CRLF
    raise CsvShapeError(CR_ONLY)


def end_of_first_record(buffer: bytes | bytearray, *, final: bool = False) -> int:
    """Index of the newline that ends the first CSV record, honouring quotes; -1 if not in ``buffer``.

    Raises :class:`CsvShapeError` on a bare CR outside quotes before that newline (CR-only line endings);
    ``final`` says ``buffer`` is the whole file, so a CR as its last byte is bare too.
    """
    in_quotes = False
    start = 0
    while True:
        quote = buffer.find(b'"', start)
        if not in_quotes:
            stop = len(buffer) if quote == -1 else quote
            newline = buffer.find(b"\n", start, stop)
            _refuse_bare_cr(buffer, start, stop if newline == -1 else newline, final)
            if newline != -1:
                return newline
        if quote == -1:
            return -1
        in_quotes = not in_quotes
        start = quote + 1


def header_fields(raw: bytes) -> list[str]:
    """The fields of a header record (its bytes up to the newline): a BOM and a CR dropped, UTF-8 decoded
    (``UnicodeDecodeError`` otherwise), split by the ``csv`` module's quoting rules."""
    text = raw.removeprefix(BOM).removesuffix(b"\r").decode("utf-8")
    return next(reader(io.StringIO(text, newline="")), [])


# --- column names and the key that tells a header from a row ----------------------------------------------
# DexCare spells the same field ``visitId`` in one report and ``Visit ID`` in another; both must land in
# ``visit_id`` so keys and columns line up across report types and over time, whether the download checks a
# header, the load names its columns or a DataFrame is built.

#: PostgreSQL truncates identifiers longer than NAMEDATALEN - 1 bytes; we truncate first, so we can see
#: (and refuse) the collisions truncation would otherwise create behind our back. SQL Server allows 128
#: characters, but the same limit applies there: the same report gets the same column names in either
#: warehouse.
MAX_IDENTIFIER_BYTES = 63
#: The dedupe key when none is configured for a report type; also what tells a DexCare header from a row.
DEFAULT_KEY = ("visit_id",)

_ACRONYM_BOUNDARY = re.compile(r"([A-Z]+)([A-Z][a-z])")
_CAMEL_BOUNDARY = re.compile(r"([a-z0-9])([A-Z])")
_NOT_WORD = re.compile(r"[^\w]+")


def _truncate_utf8(text: str, limit: int = MAX_IDENTIFIER_BYTES) -> str:
    """Cut to ``limit`` bytes without splitting a character, as PostgreSQL would otherwise do bytewise."""
    raw = text.encode("utf-8")
    if len(raw) <= limit:
        return text
    return raw[:limit].decode("utf-8", errors="ignore")


def normalize_identifier(header: str) -> str:
    """Lower snake_case of one header; ``""`` when nothing usable is left (the caller rejects it).

    Letters outside ASCII are kept (NFC, lower-cased) so a French or German header stays readable;
    anything that is not a letter, digit or underscore becomes a single ``_``, which is what makes a
    header such as ``x"; DROP TABLE y; --`` inert even before quoting.
    """
    text = unicodedata.normalize("NFC", header.replace("\ufeff", "")).strip()
    text = _ACRONYM_BOUNDARY.sub(r"\1_\2", text)
    text = _CAMEL_BOUNDARY.sub(r"\1_\2", text)
    text = _NOT_WORD.sub("_", text.lower()).strip("_")
    text = re.sub(r"_+", "_", text)
    return _truncate_utf8(text).rstrip("_")


def missing_key(headers: Sequence[str], keys: Iterable[str]) -> str | None:
    """The first of ``keys`` (configured names) that no header normalises to; ``None`` when all are there.

    This is how a DexCare header is told from a patient's record (a headerless file, another report): until
    it answers ``None``, no header may be echoed, so it never raises a message that quotes one.
    """
    names = {normalize_identifier(header) for header in headers}
    return next((key for key in keys if normalize_identifier(key) not in names), None)


def unrecognised_header(fields: Sequence[str], keys: Sequence[str]) -> str | None:
    """Why ``fields`` is not a DexCare header (a key column missing), or ``None`` if it is one.

    The reason counts the fields and names the configured key, never a field: an unrecognised first line
    may be a patient's record.
    """
    missing = missing_key(fields, keys)
    if missing is None:
        return None
    return (
        f"the first line is not a DexCare report header: none of its {len(fields)} field(s) is the key column "
        f"{missing!r} (a file without a header, another report, or key_columns not set for this report type); "
        "its fields are not shown, they may be patient data"
    )


class CsvRecordCounter:
    """Counts the records of a CSV fed in chunks, keeps its header and, given ``key_columns``, checks it.

    ``feed`` raises :class:`CsvShapeError` as soon as the first record shows CR-only line endings or, with
    ``key_columns``, is not a DexCare header; :meth:`finish` does the same for a file whose first record ends
    with the data. ``header=False`` only counts (the load's independent count: it reads the header itself).
    """

    def __init__(self, key_columns: Sequence[str] | None = None, *, header: bool = True) -> None:
        self._newlines = 0
        self._in_quotes = False
        self._pending = False  # bytes after the last record end: a final record without a newline
        self._head = bytearray()  # the first record, until its end has been seen
        self._head_done = not header
        self._keys = list(key_columns) if key_columns else None

    def feed(self, chunk: bytes) -> None:
        if not chunk:
            return
        if not self._head_done:
            self._keep_head(chunk)
        # Only quotes and newlines decide the count: the other bytes are dropped, then every pair of adjacent
        # quotes (no newline between them changes side), which leaves a short string whose few quotes surround
        # the newlines inside quoted fields. Its pieces between quotes alternate outside/inside, starting where
        # the last chunk left off. All of it runs in C, however many quoted fields a chunk has: a Python loop
        # over them ran thousands of times a chunk and held the download far below the network's pace.
        marks = chunk.translate(None, _NEITHER_QUOTE_NOR_NEWLINE).replace(b'""', b"")
        parts = marks.split(b'"')
        inside = parts[::2] if self._in_quotes else parts[1::2]
        self._newlines += marks.count(b"\n") - b"".join(inside).count(b"\n")
        if len(parts) % 2 == 0:  # an odd number of quotes
            self._in_quotes = not self._in_quotes
        # Ending outside quotes on a newline closes the record; anything else leaves one open.
        self._pending = self._in_quotes or not chunk.endswith(b"\n")

    def finish(self) -> None:
        """The end of the data: check a first record that only the end of the file closed."""
        if self._head_done or self._in_quotes or not self._head:
            return
        end_of_first_record(self._head, final=True)
        self._check_header()

    def _keep_head(self, chunk: bytes) -> None:
        """Only the first chunk or two are looked at: the header ends early in the first one."""
        self._head += chunk
        end = end_of_first_record(self._head)
        if end != -1:
            del self._head[end:]
            self._head_done = True
            self._check_header()
        elif len(self._head) > MAX_HEADER_BYTES:
            self._head = bytearray()
            self._head_done = True

    def _check_header(self) -> None:
        fields = self.header
        if self._keys is not None and fields is not None:
            reason = unrecognised_header(fields, self._keys)
            if reason is not None:
                raise CsvShapeError(reason)

    @property
    def records(self) -> int:
        return self._newlines + (1 if self._pending else 0)

    @property
    def checked(self) -> bool:
        """The first record has been seen (and checked): from here on :meth:`feed` only counts and never raises,
        so it may run beside the code that writes what it was fed."""
        return self._head_done

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
        except (UnicodeDecodeError, Error):
            return None
        return fields if any(fields) else None
