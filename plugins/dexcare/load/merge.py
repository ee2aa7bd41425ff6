"""The one set-based statement that dedupes a staged file and merges it into its table.

Why not ``INSERT ... ON CONFLICT``: it probes the unique index once per row (about 9 s per million rows on
a small machine) and it fails outright when the source holds a key twice. Here the source is deduplicated
first (last occurrence in the file wins, or the newest by a version column), then one statement runs an
``UPDATE ... FROM`` (a hash join, writing only rows whose content changed, and never rows last written by a
newer window) and an ``INSERT`` of the keys the table does not have yet (a hash anti-join). Both parts
see the same snapshot, so they never touch the same row. The caller holds the advisory lock, so no other
loader can insert a key in between.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from psycopg import sql

from dexcare.load.target import LINEAGE_COLUMNS, TEXT, WINDOW_END

LINEAGE_PARAMS = {
    "_dexcare_report_id": "report_id",
    "_dexcare_report_type": "report_type",
    "_dexcare_window_start": "window_start",
    "_dexcare_window_end": "window_end",
    "_dexcare_loaded_at": "loaded_at",
}


def typed(column: str, sql_type: str, alias: str | None = None) -> sql.Composable:
    """Staged text converted to the column's type; an empty field is NULL for anything but text."""
    ref = sql.Identifier(alias, column) if alias else sql.Identifier(column)
    if sql_type == TEXT:
        return ref
    return sql.SQL("NULLIF({}, '')::{}").format(ref, sql.SQL(sql_type))


@dataclass(frozen=True)
class MergePlan:
    """SQL for one staged file; ``stage`` is the temp table the COPY filled, all text."""

    target: sql.Composable
    stage: sql.Composable
    columns: Sequence[str]
    keys: Sequence[str]
    types: Mapping[str, str]
    version: str | None = None
    #: Temp tables for the keys seen more than once (or empty) and the rows that lose the dedupe.
    dup_keys: sql.Composable = field(default_factory=lambda: sql.Identifier("_dexcare_dup_keys"))
    losers: sql.Composable = field(default_factory=lambda: sql.Identifier("_dexcare_losers"))

    def _keys(self, alias: str | None = None) -> sql.Composable:
        return sql.SQL(", ").join(sql.Identifier(alias, k) if alias else sql.Identifier(k) for k in self.keys)

    def empty_key(self, alias: str | None = None) -> sql.Composable:
        return sql.SQL(" OR ").join(
            sql.SQL("{k} IS NULL OR {k}::text = ''").format(
                k=sql.Identifier(alias, k) if alias else sql.Identifier(k)
            )
            for k in self.keys
        )

    def find_dup_keys(self) -> sql.Composed:
        """Keys present more than once, plus any empty key (so one narrow hash aggregate checks both).

        Only these few keys need sorting: deduplicating the whole file with DISTINCT ON would sort every
        wide row, which at a million rows spills to disk and costs more than the COPY.
        """
        return sql.SQL(
            "CREATE TEMP TABLE {dup} ON COMMIT DROP AS SELECT {keys} FROM {stage} "
            "GROUP BY {keys} HAVING count(*) > 1 OR {empty}"
        ).format(dup=self.dup_keys, keys=self._keys(), stage=self.stage, empty=self.empty_key())

    def has_empty_key(self) -> sql.Composed:
        return sql.SQL("SELECT EXISTS (SELECT FROM {} WHERE {})").format(self.dup_keys, self.empty_key())

    def _losers_query(self) -> sql.Composed:
        """Rows superseded within the file: all but the newest (by version) or last row of each key."""
        order = []
        if self.version:
            order.append(sql.SQL("{} DESC NULLS LAST").format(typed(self.version, self.types[self.version], "s")))
        # ctid is the file order: the stage is a fresh table filled by one COPY, so its heap is written
        # front to back and a later row always has a larger ctid (no sequence column needed).
        order.append(sql.SQL("s.ctid DESC"))
        match = sql.SQL(" AND ").join(sql.SQL("s.{k} = d.{k}").format(k=sql.Identifier(k)) for k in self.keys)
        return sql.SQL(
            "SELECT tid FROM (SELECT s.ctid AS tid, row_number() OVER (PARTITION BY {skeys} ORDER BY {order}) "
            "AS rn FROM {stage} s JOIN {dup} d ON {match}) x WHERE rn > 1"
        ).format(skeys=self._keys("s"), order=sql.SQL(", ").join(order), stage=self.stage, dup=self.dup_keys,
                 match=match)

    def find_losers(self) -> sql.Composed:
        """Merge path: remember the superseded rows, so the merge's source can skip them."""
        return sql.SQL("CREATE TEMP TABLE {} ON COMMIT DROP AS {}").format(self.losers, self._losers_query())

    def delete_losers(self) -> sql.Composed:
        """Direct path (the file was copied straight into a new table): delete the superseded rows.

        ``ctid = ANY(ARRAY(...))`` is a TID scan: the few losers are fetched by address, not by another
        pass over the table.
        """
        return sql.SQL("DELETE FROM {} WHERE ctid = ANY (ARRAY({}))").format(self.stage, self._losers_query())

    def _source(self, with_losers: bool) -> sql.Composed:
        exprs = sql.SQL(", ").join(
            sql.SQL("{} AS {}").format(typed(c, self.types[c], "s"), sql.Identifier(c)) for c in self.columns
        )
        where = (
            sql.SQL(" WHERE s.ctid NOT IN (SELECT tid FROM {})").format(self.losers) if with_losers else sql.SQL("")
        )
        return sql.SQL("SELECT {} FROM {} s{}").format(exprs, self.stage, where)

    def _insert(self, match_existing: bool) -> sql.Composed:
        ident = sql.Identifier
        comma = sql.SQL(", ")
        where = sql.SQL("")
        if match_existing:
            where = sql.SQL(" WHERE NOT EXISTS (SELECT FROM {target} t WHERE {match})").format(
                target=self.target, match=self._match()
            )
        return sql.SQL("INSERT INTO {target} ({cols}, {lcols}) SELECT {scols}, {lvals} FROM src s{where}").format(
            target=self.target,
            cols=comma.join(ident(c) for c in self.columns),
            lcols=comma.join(ident(c) for c in LINEAGE_COLUMNS),
            scols=comma.join(ident("s", c) for c in self.columns),
            lvals=comma.join(sql.Placeholder(LINEAGE_PARAMS[c]) for c in LINEAGE_COLUMNS),
            where=where,
        )

    def _match(self) -> sql.Composed:
        """Key equality; text keys compare bytewise, whatever collation either side was created with."""
        return sql.SQL(" AND ").join(
            sql.SQL("t.{k} = s.{k}{c}").format(
                k=sql.Identifier(k), c=sql.SQL(' COLLATE "C"' if self.types[k] == TEXT else "")
            )
            for k in self.keys
        )

    def merge_statement(self, with_losers: bool) -> sql.Composed:
        """PostgreSQL 15+: one ``MERGE``, one hash join of the file against the table.

        About twice as fast as :meth:`merge` (which joins twice). It reports only the total of rows
        written; the caller splits it with the transaction's own insert counter.
        """
        ident = sql.Identifier
        comma = sql.SQL(", ")
        values = [c for c in self.columns if c not in self.keys]
        lineage = [ident(c) for c in LINEAGE_COLUMNS]
        lineage_vals = [sql.Placeholder(LINEAGE_PARAMS[c]) for c in LINEAGE_COLUMNS]
        matched = sql.SQL("")
        if values:
            matched = sql.SQL(
                "WHEN MATCHED AND (t.{wend} IS NULL OR t.{wend} <= {wend_param}) "
                "AND ROW({tvals}) IS DISTINCT FROM ROW({svals}) THEN UPDATE SET {sets}, {lsets} "
            ).format(
                wend=ident(WINDOW_END),
                wend_param=sql.Placeholder("window_end"),
                tvals=comma.join(ident("t", c) for c in values),
                svals=comma.join(ident("s", c) for c in values),
                sets=comma.join(sql.SQL("{c} = s.{c}").format(c=ident(c)) for c in values),
                lsets=comma.join(sql.SQL("{} = {}").format(c, v) for c, v in zip(lineage, lineage_vals, strict=True)),
            )
        return sql.SQL(
            "MERGE INTO {target} t USING ({src}) s ON {match} {matched}"
            "WHEN NOT MATCHED THEN INSERT ({cols}, {lcols}) VALUES ({svals}, {lvals})"
        ).format(
            target=self.target,
            src=self._source(with_losers),
            match=self._match(),
            matched=matched,
            cols=comma.join(ident(c) for c in self.columns),
            lcols=comma.join(lineage),
            svals=comma.join(ident("s", c) for c in self.columns),
            lvals=comma.join(lineage_vals),
        )

    def merge(self, with_losers: bool) -> sql.Composed:
        """Before PostgreSQL 15 (no MERGE): ``SELECT inserted, updated`` after an UPDATE and an INSERT."""
        ident = sql.Identifier
        comma = sql.SQL(", ")
        values = [c for c in self.columns if c not in self.keys]
        if values:
            update = sql.SQL(
                "UPDATE {target} t SET {sets}, {lsets} FROM src s WHERE {match} "
                "AND (t.{wend} IS NULL OR t.{wend} <= {wend_param}) "
                "AND ROW({tvals}) IS DISTINCT FROM ROW({svals}) RETURNING 1"
            ).format(
                target=self.target,
                sets=comma.join(sql.SQL("{c} = s.{c}").format(c=ident(c)) for c in values),
                lsets=comma.join(
                    sql.SQL("{} = {}").format(ident(c), sql.Placeholder(LINEAGE_PARAMS[c])) for c in LINEAGE_COLUMNS
                ),
                match=self._match(),
                wend=ident(WINDOW_END),
                wend_param=sql.Placeholder("window_end"),
                tvals=comma.join(ident("t", c) for c in values),
                svals=comma.join(ident("s", c) for c in values),
            )
        else:
            update = sql.SQL("SELECT 1 WHERE false")
        # NOT MATERIALIZED: scanning the stage twice is cheaper than writing it to a tuplestore once.
        return sql.SQL(
            "WITH src AS NOT MATERIALIZED ({src}), upd AS ({update}), ins AS ({insert} RETURNING 1) "
            "SELECT (SELECT count(*) FROM ins), (SELECT count(*) FROM upd)"
        ).format(src=self._source(with_losers), update=update, insert=self._insert(match_existing=True))
