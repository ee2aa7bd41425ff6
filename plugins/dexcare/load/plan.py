"""What a load does to one table, decided before any SQL is written: the part both warehouses share.

A dialect (``dexcare.load.dialects``) turns a :class:`LoadPlan` into its own SQL; everything here is pure
data, so what the load will do (which columns it creates or adds, which it writes, which it casts, what the
lineage says) is the same on PostgreSQL and SQL Server and is unit-tested without a database.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from dexcare.exceptions import DexCareSchemaError


@dataclass(frozen=True)
class LineageColumn:
    """A column the loader adds to every row; ``param`` names its value in :attr:`LoadPlan.lineage`."""

    name: str
    param: str
    #: ``text``, ``date`` or ``timestamp``; each dialect names its own type for it.
    kind: str


#: Which report last wrote each row, covering which window, and when. Normalised headers never start with
#: ``_``, so a CSV column cannot shadow them.
LINEAGE: tuple[LineageColumn, ...] = (
    LineageColumn("_dexcare_report_id", "report_id", "text"),
    LineageColumn("_dexcare_report_type", "report_type", "text"),
    LineageColumn("_dexcare_window_start", "window_start", "date"),
    LineageColumn("_dexcare_window_end", "window_end", "date"),
    LineageColumn("_dexcare_loaded_at", "loaded_at", "timestamp"),
)

#: The old-window guard: a stored row is overwritten only when it was last written by a window ending no
#: later than this report's (``target.<WINDOW_END> IS NULL OR target.<WINDOW_END> <= :window_end``), so a
#: backfill of an old day can insert visits the table lacks but never rolls a known visit back. Every
#: dialect renders exactly this rule in its update.
WINDOW_END = "_dexcare_window_end"
WINDOW_END_PARAM = "window_end"

#: The history table's own columns: the order rows were appended in (an identity), and what the load did.
HISTORY_ID = "_dexcare_history_id"
HISTORY_CHANGE = "_dexcare_change"
#: Values of :data:`HISTORY_CHANGE`: a visit new to the table, a stored visit whose values changed, and the
#: rows a table already held when its history was turned on (so every visit starts from a known state).
CHANGE_INSERT, CHANGE_UPDATE, CHANGE_BASELINE = "insert", "update", "baseline"


def history_table(table: str) -> str:
    """``avr_<type>_history``: every state the load wrote to ``avr_<type>``, appended, never rewritten."""
    return f"{table}_history"


class TypeNames(Protocol):
    """How a dialect spells the types the plan needs."""

    #: Type of a plain column: unbounded text.
    text: str

    def key_text(self, keys: int) -> str:
        """Type of a text key column when the key has ``keys`` columns (it must be indexable)."""

    def lineage(self, kind: str) -> str:
        """Type of a lineage column of this kind."""

    def is_text(self, sql_type: str) -> bool:
        """Whether a column of this type takes the staged text as is (no cast)."""

    #: Type of :data:`HISTORY_ID`: a 64-bit identity the warehouse numbers by itself.
    identity: str


@dataclass(frozen=True)
class HistoryPlan:
    """What the load does to ``avr_<type>_history`` (see :func:`plan_history`)."""

    table: str
    #: Every column a history row copies from the main table after this load (its whole row), in table order.
    columns: tuple[str, ...]
    #: The history table does not exist yet: it is created with :attr:`table_columns`.
    create: bool
    #: Every column of a history table created now: :data:`HISTORY_ID`, the main table's, :data:`HISTORY_CHANGE`.
    table_columns: tuple[tuple[str, str], ...]
    #: Columns an existing history table lacks (schema drift follows the main table), with their type.
    adds: tuple[tuple[str, str], ...]
    #: The main table already holds rows the history has never seen: copy them in first, as the baseline.
    baseline: bool
    #: Every column of the history table after this load, with its type, in table order.
    shape: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class LoadPlan:
    """One report file into one table: the shape of the table after this load and what gets written."""

    schema: str
    table: str
    #: Where the file is, for messages.
    source: str
    #: The header as in the file, and the normalised column names, in file order.
    headers: tuple[str, ...]
    columns: tuple[str, ...]
    keys: tuple[str, ...]
    #: Column whose newest value wins among repeats of a key within the file; ``None``: the last row wins.
    version: str | None
    #: Effective SQL type of every file column (the table's, once it exists).
    types: Mapping[str, str]
    #: The table does not exist yet: it is created with :attr:`table_columns`.
    create: bool
    #: Columns an existing table lacks (today's new file columns, then missing lineage), with their type.
    adds: tuple[tuple[str, str], ...]
    #: Schema drift to report: file columns new to an existing table.
    new_columns: tuple[str, ...]
    #: Configured types that differ from an existing column's: (column, existing, configured); never altered.
    retyped: tuple[tuple[str, str, str], ...]
    #: File columns whose type is not text: their staged text is cast, and a value that will not cast fails.
    casts: tuple[str, ...]
    #: Values of the lineage columns, by :attr:`LineageColumn.param`.
    lineage: Mapping[str, Any]
    #: Every column of the table after this load (the schema after drift), with its type, in table order.
    shape: tuple[tuple[str, str], ...] = ()
    #: ``None`` unless the history of this report type is kept.
    history: HistoryPlan | None = None
    #: The version column is text that nobody declared as text: repeats are ordered by the instant each value
    #: names (:mod:`dexcare.load.instants`), and a value that names none fails the load. Otherwise the version
    #: is ordered by its column's type.
    version_instant: bool = False

    @property
    def table_columns(self) -> tuple[tuple[str, str], ...]:
        """Every column of a table created now (file columns, then lineage), with its type. Derived from
        :attr:`shape`, which for a new table is exactly that, so the two can never disagree."""
        return self.shape if self.create else ()

    @property
    def values(self) -> tuple[str, ...]:
        """The non-key file columns: what an update writes and compares."""
        return tuple(c for c in self.columns if c not in self.keys)

    def header_of(self, column: str) -> str:
        """The column's name as the file spells it (messages name what the user sees)."""
        return self.headers[self.columns.index(column)]


def lineage_values(*, report_id: str, report_type: str, window_start: dt.date, window_end: dt.date,
                   loaded_at: dt.datetime) -> dict[str, Any]:
    return {"report_id": report_id, "report_type": report_type, "window_start": window_start,
            "window_end": window_end, "loaded_at": loaded_at}


def plan_load(
    *,
    schema: str,
    table: str,
    source: str,
    headers: Sequence[str],
    columns: Sequence[str],
    keys: Sequence[str],
    version: str | None,
    configured: Mapping[str, str],
    existing: Mapping[str, str] | None,
    types: TypeNames,
    lineage: Mapping[str, Any],
    history: bool = False,
    history_existing: Mapping[str, str] | None = None,
) -> LoadPlan:
    """Plan the table for today's file: create it, or add what it lacks (additive drift only).

    A new column is added nullable, with its configured type or text; a column missing from today's file is
    kept with its values; an existing column's type is never changed (a differing configuration is
    reported in :attr:`LoadPlan.retyped` and values are cast to the type the column has).

    With ``history``, the history table is planned too (``history_existing``: its columns, ``None`` if it
    does not exist yet).
    """
    if not keys:
        raise DexCareSchemaError(f"{source}: no key columns configured; the load needs a key to deduplicate.")

    def new_type(column: str) -> str:
        return configured.get(column) or (types.key_text(len(keys)) if column in keys else types.text)

    lineage_types = [(c.name, types.lineage(c.kind)) for c in LINEAGE]
    if existing is None:
        file_types = {c: new_type(c) for c in columns}
        shape = tuple([*file_types.items(), *lineage_types])
        adds: tuple[tuple[str, str], ...] = ()
        new_columns: tuple[str, ...] = ()
        retyped: tuple[tuple[str, str, str], ...] = ()
    else:
        missing = [c for c in columns if c not in existing]
        adds = tuple([(c, new_type(c)) for c in missing] + [(c, t) for c, t in lineage_types if c not in existing])
        file_types = {c: existing.get(c) or new_type(c) for c in columns}
        shape = (*existing.items(), *adds)
        new_columns = tuple(missing)
        retyped = tuple(
            (c, existing[c], configured[c])
            for c in columns
            if c in existing and c in configured and existing[c] != configured[c]
        )
    return LoadPlan(
        schema=schema,
        table=table,
        source=source,
        headers=tuple(headers),
        columns=tuple(columns),
        keys=tuple(keys),
        version=version,
        types=file_types,
        create=existing is None,
        adds=adds,
        new_columns=new_columns,
        retyped=retyped,
        casts=tuple(c for c in columns if not types.is_text(file_types[c])),
        lineage=dict(lineage),
        shape=shape,
        history=plan_history(table, shape, history_existing, types, target_existed=existing is not None)
        if history else None,
        # A configured text type is the way to order a version that is not a timestamp as text.
        version_instant=version is not None and types.is_text(file_types[version])
        and not (version in configured and types.is_text(configured[version])),
    )


def plan_history(table: str, shape: Sequence[tuple[str, str]], existing: Mapping[str, str] | None,
                 types: TypeNames, *, target_existed: bool) -> HistoryPlan:
    """The history table mirrors the main table's row (the same columns and types, drift included) plus the
    order of appends and the kind of change; it has no key, since a visit has one row per state."""
    wanted = (*shape, (HISTORY_CHANGE, types.lineage("text")))
    columns = tuple(c for c, _ in shape)
    if existing is None:
        created = ((HISTORY_ID, types.identity), *wanted)
        # As the catalog will spell it afterwards: the type, not its identity property.
        shape_now = ((HISTORY_ID, types.identity.split()[0]), *wanted)
        return HistoryPlan(history_table(table), columns, True, created, (), target_existed, shape_now)
    adds = tuple((c, t) for c, t in wanted if c not in existing)
    return HistoryPlan(history_table(table), columns, False, (), adds, False, (*existing.items(), *adds))


def key_index_name(table: str, keys: Sequence[str]) -> str:
    """A stable name for the table's unique key index, short enough for every dialect."""
    digest = hashlib.sha256("\x00".join(keys).encode()).hexdigest()[:8]
    return f"{table[:40]}_key_{digest}"
