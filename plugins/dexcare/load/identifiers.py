"""Turn CSV headers into column names that are safe, stable and never collide silently.

DexCare spells the same field ``visitId`` in one report and ``Visit ID`` in another; both must land in
``visit_id`` so keys and columns line up across report types and over time. A header is data we do not
control, so the result is only ever used quoted by the dialect's one quoting function, and two headers
that end up with the same name stop the load instead of one quietly overwriting the other (dlt's silent key
corruption). A normalised name never starts with ``_``, so a header cannot shadow the lineage columns.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence

from dexcare.exceptions import DexCareSchemaError

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


def normalize_headers(headers: Sequence[str], *, source: str) -> list[str]:
    """Normalise a whole header row, refusing empty names and collisions with a message naming both."""
    seen: dict[str, tuple[int, str]] = {}
    names: list[str] = []
    for position, header in enumerate(headers, start=1):
        name = normalize_identifier(header)
        if not name:
            raise DexCareSchemaError(
                f"{source}: header column {position} ({header!r}) is empty or has no letters or digits; "
                "every column needs a name."
            )
        if name in seen:
            other_pos, other = seen[name]
            raise DexCareSchemaError(
                f"{source}: headers {other!r} (column {other_pos}) and {header!r} (column {position}) "
                f"both normalise to {name!r}; rename one of them in the report."
            )
        seen[name] = (position, header)
        names.append(name)
    return names


def missing_key(headers: Sequence[str], keys: Iterable[str]) -> str | None:
    """The first of ``keys`` (configured names) that no header normalises to; ``None`` when all are there.

    This is how a DexCare header is told from a patient's record (a headerless file, another report): until
    it answers ``None``, no header may be echoed, so it never raises a message that quotes one.
    """
    names = {normalize_identifier(header) for header in headers}
    return next((key for key in keys if normalize_identifier(key) not in names), None)


def resolve_columns(wanted: Iterable[str], available: Sequence[str], *, what: str, source: str) -> list[str]:
    """Map configured column names (as in the CSV header or already normalised) onto the file's columns.

    Its error lists the file's columns: call it only on a header :func:`missing_key` recognised.
    """
    resolved: list[str] = []
    for column in wanted:
        name = normalize_identifier(column)
        if name not in available:
            raise DexCareSchemaError(
                f"{source}: {what} column {column!r} is not in the file; its columns are: "
                f"{', '.join(available)}."
            )
        if name not in resolved:
            resolved.append(name)
    return resolved
