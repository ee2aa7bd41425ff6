"""SQL Server's statements for one planned file, and the one function that quotes its identifiers.

Why ``UPDATE ... FROM`` plus ``INSERT ... WHERE NOT EXISTS`` and not ``MERGE``: SQL Server's MERGE has a
long record of documented defects (wrong results and assertion failures with filtered indexes, indexed
views, triggers and some plans; Microsoft's own advice is to prefer separate statements where concurrency
allows), and it fails outright when the source holds a key twice (error 8672). Both reasons disappear with
two plain statements: the stage is deduplicated first, the run holds an exclusive application lock on the
schema for its whole transaction (so no other load can insert a key between the UPDATE and the INSERT),
and each statement's row count is exactly "updated" and "inserted", with no OUTPUT clause to count.

With a history table, both statements also append every row they write to it with ``OUTPUT inserted.*
INTO``, in the same statement: the history is derived from what was written, never by comparing tables.

Values never appear in this text: file data arrives by bulk copy, and our own values (lineage, window)
are pymssql parameters (``%(name)s``); the only literals are the history's change kinds.

Why the stage holds value columns as ``varbinary(max)`` (UTF-16LE bytes) and not as text: FreeTDS's bulk copy
(``rtrim_bcpcol`` in ``src/dblib/bcp.c``, called after ``_bcp_convert_in`` for every bound column) strips
trailing spaces from every column the server declares as character data, ``nvarchar`` included, so
``'abc '`` would land as ``'abc'``. It leaves binary columns alone, and pymssql binds Python ``bytes`` as
``SQLVARBINARY``, so the bytes arrive as sent; ``CONVERT(nvarchar(max), <varbinary>)`` reads them back as
the exact UTF-16 text. Key columns stay ``nvarchar`` (they must be indexable and compared as text): a key
ending in a space is refused before the bulk copy, on both warehouses, since SQL Server's ``=`` and unique
indexes ignore trailing spaces even under a binary collation.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from dexcare.exceptions import DexCareSchemaError
from dexcare.load.plan import (
    CHANGE_INSERT,
    CHANGE_UPDATE,
    HISTORY_CHANGE,
    HISTORY_ID,
    LINEAGE,
    WINDOW_END,
    WINDOW_END_PARAM,
    LoadPlan,
    key_index_name,
)

#: SQL Server's limit for an identifier (``sysname``).
MAX_NAME = 128
TEXT = "nvarchar(max)"
#: What an undeclared version column is ordered as (:mod:`dexcare.load.instants`).
INSTANT = "datetimeoffset(7)"
#: Byte-wise comparison: ids and "did this value change" must not depend on the database's collation
#: (the default one is case-insensitive).
BINARY = "Latin1_General_100_BIN2"
#: Column of the stage holding the file line a record starts on: file order, and messages.
LINE = "_dexcare_line"
#: A key shares 900 bytes (450 UTF-16 code units) between its text columns: that fits every index key
#: limit SQL Server has (900 bytes for a clustered index, 1,700 for a nonclustered one since 2016), with
#: room left for typed key columns.
KEY_UNITS = 450
_TEXT_PREFIXES = ("nvarchar(", "varchar(", "nchar(", "char(")
#: How a value column is staged (see the module docstring): bytes FreeTDS does not trim.
STAGED_BYTES = "varbinary(max)"
#: Types whose text is read in a fixed CONVERT style, whatever the session's language (ISO 8601, ``T``).
_STYLES = {"datetime": 126, "smalldatetime": 126}


def quote(*parts: str) -> str:
    """``[schema].[table]``: each part bracket-quoted with ``]`` doubled. The only identifier quoting.

    A name longer than SQL Server allows is refused rather than cut (two long names could otherwise meet),
    and so is ``%``: pymssql substitutes parameters into the text client-side and would read ``%s`` in a
    name as a placeholder. Normalised column names never contain either; only a configured schema can.
    """
    quoted = []
    for part in parts:
        if not part or "\x00" in part:
            raise DexCareSchemaError(f"{part!r} is not a usable SQL Server name.")
        if len(part.encode("utf-16-le")) // 2 > MAX_NAME:
            raise DexCareSchemaError(
                f"SQL Server names are limited to {MAX_NAME} characters; {part[:40]!r}... is longer."
            )
        if "%" in part:
            raise DexCareSchemaError(f"{part!r}: '%' is not allowed in a name on SQL Server (pymssql placeholders).")
        quoted.append("[" + part.replace("]", "]]") + "]")
    return ".".join(quoted)


def is_text(sql_type: str) -> bool:
    return sql_type.startswith(_TEXT_PREFIXES)


def text_units(sql_type: str) -> int | None:
    """The length limit of a bounded text type (``nvarchar(450)`` -> 450); ``None`` for max or non-text."""
    if not is_text(sql_type) or sql_type.endswith("(max)"):
        return None
    return int(sql_type[sql_type.index("(") + 1 : -1])


@dataclass(frozen=True)
class MsSqlStatements:
    """SQL for one planned file, staged in the session temp table ``stage`` (``#dexcare_stage_<n>``)."""

    plan: LoadPlan
    stage: str
    #: Staged key columns: their bounded text type (what the Python side checks each key value against).
    key_types: Mapping[str, str]

    @property
    def target(self) -> str:
        return quote(self.plan.schema, self.plan.table)

    def _text(self, column: str, alias: str = "s") -> str:
        """A staged column as the text the file holds: keys are staged as text, values as UTF-16 bytes."""
        ref = f"{alias}.{quote(column)}"
        return ref if column in self.key_types else f"CONVERT({TEXT}, {ref})"

    def _convert(self, function: str, column: str, alias: str = "s") -> str:
        sql_type = self.plan.types[column]
        style = _STYLES.get(sql_type.partition("(")[0])
        return f"{function}({sql_type}, {self._text(column, alias)}{f', {style}' if style else ''})"

    def _value(self, column: str, alias: str = "s") -> str:
        """A staged column read as its table column's type."""
        if is_text(self.plan.types[column]):
            return self._text(column, alias)
        return self._convert("CONVERT", column, alias)

    def _match(self) -> str:
        """Key equality, byte-wise for text keys whatever collation the table was created with."""
        return " AND ".join(
            f"t.{quote(k)} = s.{quote(k)} COLLATE {BINARY}" if is_text(self.plan.types[k])
            else f"t.{quote(k)} = {self._value(k)}"
            for k in self.plan.keys
        )

    def _column(self, name: str, sql_type: str, *, key: bool) -> str:
        collate = f" COLLATE {BINARY}" if key and is_text(sql_type) else ""
        return f"{quote(name)} {sql_type}{collate} NULL"

    def create_table(self) -> str:
        return "CREATE TABLE {} ({})".format(
            self.target, ", ".join(self._column(c, t, key=c in self.plan.keys) for c, t in self.plan.table_columns)
        )

    def add_columns(self) -> str:
        return "ALTER TABLE {} ADD {}".format(
            self.target, ", ".join(self._column(c, t, key=False) for c, t in self.plan.adds)
        )

    def create_stage(self) -> str:
        """Keys as bounded byte-wise text (indexable, compared exactly), values as UTF-16 bytes FreeTDS's bulk
        copy cannot trim."""
        columns = [
            f"{quote(c)} {self.key_types[c]} COLLATE {BINARY} NOT NULL" if c in self.key_types
            else f"{quote(c)} {STAGED_BYTES} NULL"
            for c in self.plan.columns
        ]
        return f"CREATE TABLE {quote(self.stage)} ({', '.join(columns)}, {quote(LINE)} int NOT NULL)"

    def first_bad_casts(self) -> str:
        """Per typed column, the first line whose value will not convert (NULL: every value converts)."""
        checks = ", ".join(
            f"MIN(CASE WHEN s.{quote(c)} IS NOT NULL AND {self._convert('TRY_CONVERT', c)} IS NULL "
            f"THEN s.{quote(LINE)} END) AS {quote(f'bad_{n}')}"
            for n, c in enumerate(self.plan.casts)
        )
        return f"SELECT {checks} FROM {quote(self.stage)} AS s"

    def dedupe(self) -> str:
        """Delete the rows superseded within the file: all but the newest (by version) or last of each key.

        Only keys present more than once are ranked (a narrow hash aggregate finds them), so the wide rows of
        the other 98% are never sorted.
        """
        keys = self.plan.keys
        order = []
        if self.plan.version:
            # NULL (an empty version) sorts lowest: a row with no version loses.
            order.append(f"{self._version_order(self.plan.version)} DESC")
        order.append(f"s.{quote(LINE)} DESC")
        # Repeats are the same typed value (1 and 01 in an int key), as the update and insert will match them.
        partition = ", ".join(self._value(k) for k in keys)
        dup_keys = ", ".join(self._value(k, "d") for k in keys)
        dup_columns = ", ".join(f"{self._value(k, 'd')} AS {quote(k)}" for k in keys)
        match = " AND ".join(f"dup.{quote(k)} = {self._value(k)}" for k in keys)
        stage = quote(self.stage)
        return (
            f"WITH ranked AS (SELECT ROW_NUMBER() OVER (PARTITION BY {partition} ORDER BY {', '.join(order)}) AS rn "
            f"FROM {stage} AS s WHERE EXISTS (SELECT 1 FROM (SELECT {dup_columns} FROM {stage} AS d "
            f"GROUP BY {dup_keys} HAVING COUNT_BIG(*) > 1) AS dup WHERE {match})) DELETE FROM ranked WHERE rn > 1"
        )

    def _version_order(self, column: str) -> str:
        """The version as repeats are ordered: its column's type, or, undeclared, the instant it names.

        Every value was checked against :mod:`dexcare.load.instants` while the file was parsed, so the
        conversion cannot fail; an offset written ``+hhmm`` gets its colon and a space before the time
        becomes ``T``, the ISO 8601 form ``datetimeoffset`` reads whatever the session's language.
        """
        if not self.plan.version_instant:
            return self._value(column)
        ref = self._text(column)
        colon = (f"CASE WHEN RIGHT({ref}, 5) LIKE N'[+-][0-9][0-9][0-9][0-9]' "
                 f"THEN STUFF({ref}, LEN({ref}) - 1, 0, N':') ELSE {ref} END")
        return f"CONVERT({INSTANT}, STUFF({colon}, 11, 1, N'T'))"

    def _comparable(self, column: str, alias: str) -> list[str]:
        """A value as the change check compares it. Text byte-wise, with a marker appended because ``=``
        ignores trailing spaces (NULL stays NULL: CONCAT_NULL_YIELDS_NULL is on). A ``datetimeoffset`` also by
        its offset: EXCEPT compares the instants, so ``10:00+00:00`` and ``11:00+01:00`` would be equal and the
        stored offset would never follow the file."""
        sql_type = self.plan.types[column]
        value = f"t.{quote(column)}" if alias == "t" else self._value(column)
        if is_text(sql_type):
            return [f"({value} + N'|') COLLATE {BINARY}"]
        if sql_type.startswith("datetimeoffset"):
            return [value, f"DATEPART(TZOFFSET, {value})"]
        return [value]

    def _lineage_params(self) -> list[str]:
        return [f"%({c.param})s" for c in LINEAGE]

    @property
    def history(self) -> str:
        assert self.plan.history is not None
        return quote(self.plan.schema, self.plan.history.table)

    def create_history(self) -> str:
        """The main table's columns (key columns with the same byte-wise collation, not unique: a visit has a
        row per state), numbered by an identity in the order they are appended."""
        assert self.plan.history is not None
        columns = [
            f"{quote(c)} {t} NOT NULL" if c == HISTORY_ID else self._column(c, t, key=c in self.plan.keys)
            for c, t in self.plan.history.table_columns
        ]
        return f"CREATE TABLE {self.history} ({', '.join(columns)})"

    def add_history_columns(self) -> str:
        assert self.plan.history is not None
        return "ALTER TABLE {} ADD {}".format(
            self.history, ", ".join(self._column(c, t, key=False) for c, t in self.plan.history.adds)
        )

    def _history_columns(self) -> str:
        assert self.plan.history is not None
        return ", ".join(quote(c) for c in (*self.plan.history.columns, HISTORY_CHANGE))

    def copy_to_history(self, change: str) -> str:
        """Every row the table holds now, as the baseline its history starts from."""
        assert self.plan.history is not None
        columns = ", ".join(quote(c) for c in self.plan.history.columns)
        return (
            f"INSERT INTO {self.history} ({self._history_columns()}) SELECT {columns}, N'{change}' "
            f"FROM {self.target}"
        )

    def _output(self, change: str) -> str:
        """``OUTPUT ... INTO`` the history: each row as the statement left it (`inserted`), and the change."""
        if self.plan.history is None:
            return ""
        values = ", ".join(f"inserted.{quote(c)}" for c in self.plan.history.columns)
        return f" OUTPUT {values}, N'{change}' INTO {self.history} ({self._history_columns()})"

    def update(self) -> str | None:
        """Rows whose stored values differ from the file's, and that the guard allows; ``None`` when the
        file has only key columns (nothing to update).

        ``EXISTS (SELECT t... EXCEPT SELECT s...)`` is SQL Server's NULL-safe "is distinct" (EXCEPT treats
        NULLs as equal; ``IS DISTINCT FROM`` needs 2022).
        """
        values = self.plan.values
        if not values:
            return None
        sets = [f"t.{quote(c)} = {self._value(c)}" for c in values]
        sets += [f"t.{quote(c.name)} = {p}" for c, p in zip(LINEAGE, self._lineage_params(), strict=True)]
        stored = [e for c in values for e in self._comparable(c, "t")]
        staged = [e for c in values for e in self._comparable(c, "s")]
        window_end = quote(WINDOW_END)
        return (
            f"UPDATE t SET {', '.join(sets)}{self._output(CHANGE_UPDATE)} FROM {self.target} AS t "
            f"INNER JOIN {quote(self.stage)} AS s "
            f"ON {self._match()} WHERE (t.{window_end} IS NULL OR t.{window_end} <= %({WINDOW_END_PARAM})s) "
            f"AND EXISTS (SELECT {', '.join(stored)} EXCEPT SELECT {', '.join(staged)})"
        )

    def kept_newer(self) -> str:
        """After the upsert: the table's rows of this file's keys that a newer window wrote (the guard kept)."""
        return (
            f"SELECT COUNT_BIG(*) FROM {self.target} AS t INNER JOIN {quote(self.stage)} AS s ON {self._match()} "
            f"WHERE t.{quote(WINDOW_END)} > %({WINDOW_END_PARAM})s"
        )

    def insert(self) -> str:
        """The keys the table does not have yet (after the update, so an updated row is never re-inserted)."""
        columns = [quote(c) for c in self.plan.columns] + [quote(c.name) for c in LINEAGE]
        values = [self._value(c) for c in self.plan.columns] + self._lineage_params()
        return (
            f"INSERT INTO {self.target} ({', '.join(columns)}){self._output(CHANGE_INSERT)} SELECT {', '.join(values)} "
            f"FROM {quote(self.stage)} AS s WHERE NOT EXISTS (SELECT 1 FROM {self.target} AS t WHERE {self._match()})"
        )

    def unique_indexes(self) -> str:
        """Key columns of every unfiltered unique index of the table, in key order (``%s``: the table's name)."""
        return (
            "SELECT i.index_id, c.name FROM sys.indexes AS i "
            "INNER JOIN sys.index_columns AS ic ON ic.object_id = i.object_id AND ic.index_id = i.index_id "
            "INNER JOIN sys.columns AS c ON c.object_id = ic.object_id AND c.column_id = ic.column_id "
            "WHERE i.object_id = OBJECT_ID(%s, N'U') AND i.is_unique = 1 AND i.has_filter = 0 "
            "AND ic.key_ordinal > 0 ORDER BY i.index_id, ic.key_ordinal"
        )

    def create_key_index(self) -> str:
        return "CREATE UNIQUE NONCLUSTERED INDEX {} ON {} ({})".format(
            quote(key_index_name(self.plan.table, self.plan.keys)), self.target,
            ", ".join(quote(k) for k in self.plan.keys),
        )

    def drop_stage(self) -> str:
        return f"DROP TABLE {quote(self.stage)}"
