"""Column names of a load: a whole header turned into names that never collide silently, and configured names
resolved onto them.

One header's name is normalised by :func:`dexcare.csv_records.normalize_identifier` (the download checks the
key columns with the same rule). A header is data we do not control, so a name is only ever used quoted by the
dialect's one quoting function, and two headers that end up with the same name stop the load instead of one
quietly overwriting the other (dlt's silent key corruption). A normalised name never starts with ``_``, so a
header cannot shadow the lineage columns.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from dexcare.csv_records import normalize_identifier
from dexcare.exceptions import DexCareSchemaError


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


def resolve_columns(wanted: Iterable[str], available: Sequence[str], *, what: str, source: str) -> list[str]:
    """Map configured column names (as in the CSV header or already normalised) onto the file's columns.

    Its error lists the file's columns: call it only on a header
    :func:`dexcare.csv_records.missing_key` recognised.
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
