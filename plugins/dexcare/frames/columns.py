"""How a report's columns become dtypes, the same for a file and for the table it was loaded into.

The rules, and why:

- Every field is text to begin with, and nothing is guessed from digits: a visit id ``0012`` stays ``"0012"``
  (pandas' ``read_csv`` would make it the number 12 and lose the key).
- The key columns (``visit_id`` by default, as for the load) must be in the header and non-empty in every row,
  which is what the load requires of them; they stay strings even when they look like timestamps.
- A timestamp is parsed only where the report says it is UTC: the value itself carries ``Z`` or an offset
  (``+02:00``), so a time without one is never silently assumed to be UTC. Which columns are timestamps is
  either configured (``timestamp_columns``) or recognised from the first :data:`SAMPLE_ROWS` data rows: a
  column holding at least one value there, all of whose values there are ISO 8601 date-times with an offset.
  The decision is made once, before the first chunk, so every chunk has the same dtypes and the chunks
  concatenate to the whole frame. A later value in such a column that is not one stops the read, naming its
  line and column (never the value). They become ``datetime64[ns, UTC]``.
- An empty field is missing (``<NA>``, ``NaT``): the load stores NULL for it.
- Everything else is pandas' nullable string dtype (``"string"``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dexcare.exceptions import DexCareCastError, DexCareValidationError
from dexcare.load.identifiers import resolve_columns

if TYPE_CHECKING:
    import pandas as pd

#: Rows the timestamp columns are recognised from; fixed, so the result never depends on the chunk size.
SAMPLE_ROWS = 1000
#: ISO 8601 date and time that says where it is: ``Z`` or an offset. Date-only values are not timestamps.
UTC_TIMESTAMP = r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(?:[Zz]|[+-]\d{2}(?::?\d{2})?)"
_UTC_TIMESTAMP = re.compile(UTC_TIMESTAMP)
TIMESTAMP_DTYPE = "datetime64[ns, UTC]"



@dataclass(frozen=True)
class FrameColumns:
    """The columns of one frame and the dtype each gets, decided once per file or query."""

    source: str
    #: As the file (or table) spells them, for messages; and the frame's column names (normalised).
    headers: tuple[str, ...]
    columns: tuple[str, ...]
    keys: tuple[str, ...]
    timestamps: tuple[str, ...]
    #: Timestamps were recognised from values (not configured): a later mismatch says how to configure them.
    recognised: bool

    @classmethod
    def decide(
        cls,
        *,
        source: str,
        headers: Sequence[str],
        columns: Sequence[str],
        key_columns: Sequence[str],
        timestamp_columns: Sequence[str] | None,
        sample: Sequence[Sequence[Any]],
    ) -> FrameColumns:
        """``sample``: the first data rows (at most :data:`SAMPLE_ROWS` are looked at), values as read."""
        keys = resolve_columns(key_columns, columns, what="key", source=source)
        if timestamp_columns is not None:
            timestamps = resolve_columns(timestamp_columns, columns, what="timestamp", source=source)
            clash = [c for c in timestamps if c in keys]
            if clash:
                raise DexCareValidationError(
                    f"{source}: {', '.join(clash)} is a key column and stays a string; remove it from "
                    "timestamp_columns."
                )
        else:
            rows = sample[:SAMPLE_ROWS]
            timestamps = [
                column for position, column in enumerate(columns)
                if column not in keys and _all_timestamps([row[position] for row in rows])
            ]
        return cls(source, tuple(headers), tuple(columns), tuple(keys), tuple(timestamps),
                   timestamp_columns is None)

    def header_of(self, column: str) -> str:
        return self.headers[self.columns.index(column)]

    def text(self, pd: Any, values: Sequence[Any]) -> pd.api.extensions.ExtensionArray:
        """Nullable strings; an empty field (or NULL) is missing."""
        import numpy as np

        array = np.asarray(values, dtype=object) if len(values) else np.empty(0, dtype=object)
        array[array == ""] = None
        return pd.array(array, dtype=pd.StringDtype())

    def timestamp(self, pd: Any, column: str, text: Any, lines: Sequence[int] | None, start: int) -> pd.Series:
        """UTC timestamps from nullable strings."""
        series = pd.Series(text, copy=False)
        parsed = pd.to_datetime(series, utc=True, format="ISO8601", errors="coerce")
        unparsed = parsed.isna() & series.notna()  # e.g. 2026-02-30, or out of range
        bad = (~series.str.fullmatch(UTC_TIMESTAMP).fillna(True) | unparsed).to_numpy(dtype=bool)
        if bad.any():
            raise self._not_a_timestamp(column, _where(lines, start, int(bad.argmax())))
        return parsed.dt.as_unit("ns")

    def check_keys(self, values: Sequence[Any], lines: Sequence[int]) -> None:
        """The load refuses a file with an empty key, and so does a frame of it (same message)."""
        for line, value in zip(lines, values, strict=True):
            if not value:
                from dexcare.load import diagnostics

                raise diagnostics.empty_key_error(self.source, line, list(self.keys))

    def _not_a_timestamp(self, column: str, where: str) -> DexCareCastError:
        header = self.header_of(column)
        if self.recognised:
            how = (f"the first {SAMPLE_ROWS} rows held only such timestamps in this column, so it was read as one; "
                   "pass timestamp_columns=[...] naming the columns to parse (or [] for none)")
        else:
            how = "it is in timestamp_columns; fix the report or remove the column from timestamp_columns"
        return DexCareCastError(
            f"{self.source}: {where}, column {header!r}: the value is not an ISO 8601 timestamp with 'Z' or a UTC "
            f"offset; {how}."
        )

    def frame(self, pd: Any, rows: Sequence[Sequence[Any]], lines: Sequence[int] | None, start: int) -> pd.DataFrame:
        """One DataFrame from rows of text values: a file's records (``lines``: where each starts) or a query's
        rows (``lines`` None; messages then count rows). Its index continues from ``start``, the number of rows
        before it, so chunks concatenate to the whole read."""
        by_column = list(zip(*rows, strict=True)) if rows else [() for _ in self.columns]
        data: dict[str, Any] = {}
        for column, values in zip(self.columns, by_column, strict=True):
            if column in self.keys and lines is not None:
                self.check_keys(values, lines)
            text = self.text(pd, values)
            data[column] = self.timestamp(pd, column, text, lines, start) if column in self.timestamps else text
        return pd.DataFrame({c: _values(v) for c, v in data.items()}, index=pd.RangeIndex(start, start + len(rows)))


def _where(lines: Sequence[int] | None, start: int, offset: int) -> str:
    return f"line {lines[offset]}" if lines is not None else f"row {start + offset + 1} of the query"


def _values(column: Any) -> Any:
    """A Series' values without its index (the frame sets its own)."""
    return column.array if hasattr(column, "array") else column


def _all_timestamps(values: Sequence[Any]) -> bool:
    present = [v for v in values if v is not None and v != ""]
    return bool(present) and all(isinstance(v, str) and _UTC_TIMESTAMP.fullmatch(v) for v in present)
