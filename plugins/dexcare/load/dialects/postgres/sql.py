"""PostgreSQL's statements for one planned file: dedupe the stage, then one set-based upsert.

Why not ``INSERT ... ON CONFLICT``: it probes the unique index once per row (about 9 s per million rows on
a small machine) and it fails outright when the source holds a key twice. Here the source is deduplicated
first (last occurrence in the file wins, or the newest by a version column), then one statement writes
only rows whose content changed, never rows last written by a newer window (the old-window guard), and
inserts the keys the table does not have yet. The caller holds the advisory lock, so no other loader can
insert a key in between. Identifiers are only ever composed with ``psycopg.sql.Identifier``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from psycopg import sql

from dexcare.load import instants
from dexcare.load.plan import (
    CHANGE_INSERT,
    CHANGE_UPDATE,
    HISTORY_CHANGE,
    LINEAGE,
    WINDOW_END,
    WINDOW_END_PARAM,
    LoadPlan,
)

TEXT = "text"
#: What an undeclared version column is ordered as (:mod:`dexcare.load.instants`).
INSTANT = "timestamp with time zone"


def typed(column: str, sql_type: str, alias: str | None = None) -> sql.Composable:
    """Staged text converted to the column's type; an empty field is NULL for anything but text."""
    ref = sql.Identifier(alias, column) if alias else sql.Identifier(column)
    if sql_type == TEXT:
        return ref
    return sql.SQL("NULLIF({}, '')::{}").format(ref, sql.SQL(sql_type))


@dataclass(frozen=True)
class PostgresStatements:
    """SQL for one staged file. ``stage`` is the table the COPY filled; ``types`` says how to read its
    columns (all text for a temp stage; for a table created and filled by this load, its own types)."""

    plan: LoadPlan
    stage: sql.Composable
    types: Mapping[str, str]
    #: Temp table for the rows whose key repeats (or is empty).
    repeats: sql.Composable

    @property
    def target(self) -> sql.Identifier:
        return sql.Identifier(self.plan.schema, self.plan.table)

    @property
    def history(self) -> sql.Identifier | None:
        """The history table, when the plan keeps one: the upsert appends every row it writes to it."""
        return sql.Identifier(self.plan.schema, self.plan.history.table) if self.plan.history is not None else None

    def _typed_keys(self, alias: str | None = None) -> list[sql.Composable]:
        """The staged keys as their columns' type: repeats are the same typed value (``1`` and ``01`` in an
        integer key), as the upsert will match them, not the same spelling."""
        return [typed(k, self.types[k], alias) for k in self.plan.keys]

    def _empty(self, key: str, expr: sql.Composable) -> sql.Composable:
        """A text key may be NULL or ''; a typed one is NULL (``typed`` makes '' NULL)."""
        if self.types[key] == TEXT:
            return sql.SQL("{k} IS NULL OR {k}::text = ''").format(k=expr)
        return sql.SQL("{} IS NULL").format(expr)

    def empty_key(self) -> sql.Composable:
        return sql.SQL(" OR ").join(
            sql.SQL("{k} IS NULL OR {k}::text = ''").format(k=sql.Identifier(k)) for k in self.plan.keys
        )

    def find_repeats(self) -> sql.Composed:
        """Rows of a key that is on more than one row, plus any row with an empty key, from one sort of the
        narrow keys: without a version column, only the rows a later one supersedes (file order decides,
        so the sort settles it); with one, every row of a repeated key, which :meth:`delete_losers` ranks.

        Not ``GROUP BY`` the keys: that finds the repeated keys, not their rows, which then cost a join of the
        whole stage again (a second pass); a hash aggregate of a million nearly distinct keys is no cheaper
        than the sort either. Deduplicating the whole file with DISTINCT ON would sort every wide row. The
        keys are compared as their typed values (``1`` and ``01`` in an integer key repeat); a text key sorts
        bytewise (``COLLATE "C"``: equal keys end up together in any order, and this one is the cheapest).
        The version is not cast here, where every row would be: only repeated rows are.
        """
        keys = self._typed_keys()
        alias = [sql.Identifier(f"_k{i}") for i in range(len(keys))]
        partition = sql.SQL(", ").join(
            sql.SQL('{} COLLATE "C"').format(a) if self.plan.types[k] == TEXT else a
            for a, k in zip(alias, self.plan.keys, strict=True)
        )
        # ctid is the file order: the stage is a fresh table filled by one COPY, so its heap is written
        # front to back and a later row always has a larger ctid (no sequence column needed).
        window = (sql.SQL("count(*) OVER (PARTITION BY {})") if self.plan.version
                  else sql.SQL("row_number() OVER (PARTITION BY {} ORDER BY tid DESC)")).format(partition)
        return sql.SQL(
            "CREATE TEMP TABLE {repeats} ON COMMIT DROP AS SELECT tid, empty FROM (SELECT tid, empty, {window} "
            "AS n FROM (SELECT ctid AS tid, {keys}, {empty} AS empty FROM {stage}) s) x WHERE n > 1 OR empty"
        ).format(
            repeats=self.repeats,
            window=window,
            keys=sql.SQL(", ").join(sql.SQL("{} AS {}").format(e, a) for e, a in zip(keys, alias, strict=True)),
            empty=sql.SQL(" OR ").join(self._empty(k, e) for k, e in zip(self.plan.keys, keys, strict=True)),
            stage=self.stage,
        )

    def has_empty_key(self) -> sql.Composed:
        return sql.SQL("SELECT EXISTS (SELECT FROM {} WHERE empty)").format(self.repeats)

    def first_empty_key(self) -> sql.Composed:
        return sql.SQL("SELECT ctid FROM {} WHERE {} ORDER BY ctid LIMIT 1").format(self.stage, self.empty_key())

    def _not_instant(self, parses: sql.Composable) -> sql.Composed:
        """A staged version that names no instant in an accepted form (:mod:`dexcare.load.instants`): its form
        with every digit written 0, the ranges the cast lets through (hour 24, second 60, offsets past 14:00),
        then ``parses``, the cast itself."""
        v = sql.Identifier(self.plan.version or "")
        return sql.SQL(
            "{v} <> '' AND (NOT (translate({v}, '123456789', '000000000') = ANY ({forms}) "
            """AND substr({v}, 12, 2) < '24' COLLATE "C" AND substr({v}, 18, 2) < '60' COLLATE "C" """
            """AND (right({v}, 1) = 'Z' OR right(replace({v}, ':', ''), 4) <= '1400' COLLATE "C")) OR {parses})"""
        ).format(v=v, forms=sql.Literal(list(instants.FORMS)), parses=parses)

    def first_bad_version(self) -> sql.Composed:
        """The first staged row whose version names no instant. The cast is evaluated on every value of an
        accepted shape, so a date that does not exist (30 February) raises here, before anything is written,
        not only when it repeats."""
        cast = sql.SQL("{}::{} IS NULL").format(sql.Identifier(self.plan.version or ""), sql.SQL(INSTANT))
        return sql.SQL("SELECT ctid FROM {} WHERE {} ORDER BY ctid LIMIT 1").format(self.stage,
                                                                                     self._not_instant(cast))

    def first_invalid_version(self) -> sql.Composed:
        """Error path, after :meth:`first_bad_version` raised: the first bad row, a value that would not cast
        included (``pg_input_is_valid``: PostgreSQL 16+)."""
        invalid = sql.SQL("NOT pg_input_is_valid({}, {})").format(sql.Identifier(self.plan.version or ""),
                                                                  sql.Literal(INSTANT))
        return sql.SQL("SELECT ctid FROM {} WHERE {} ORDER BY ctid LIMIT 1").format(self.stage,
                                                                                     self._not_instant(invalid))

    def _losers_query(self) -> sql.Composed:
        """Rows superseded within the file: without a version, what :meth:`find_repeats` kept; with one, all
        but the newest row of each repeated key (the last in the file among equals). Only the repeated rows
        are read, by address (a TID scan), and only their versions are cast."""
        if not self.plan.version:
            return sql.SQL("SELECT tid FROM {}").format(self.repeats)
        # An undeclared version orders as the instant it names, not as text; empty (NULL) loses.
        by = INSTANT if self.plan.version_instant else self.types[self.plan.version]
        order = sql.SQL("{} DESC NULLS LAST, s.ctid DESC").format(typed(self.plan.version, by, "s"))
        return sql.SQL(
            "SELECT tid FROM (SELECT s.ctid AS tid, row_number() OVER (PARTITION BY {skeys} ORDER BY {order}) "
            "AS rn FROM {stage} s WHERE s.ctid = ANY (ARRAY(SELECT tid FROM {repeats}))) x WHERE rn > 1"
        ).format(skeys=sql.SQL(", ").join(self._typed_keys("s")), order=order, stage=self.stage,
                 repeats=self.repeats)

    def delete_losers(self) -> sql.Composed:
        """Delete the superseded rows from the staged table: the stage the upsert then reads whole, or a table
        created and filled by this load.

        ``ctid = ANY(ARRAY(...))`` is a TID scan: the few losers are fetched by address, not by another
        pass over the table. On a temp stage this runs in the upsert's savepoint, so that after a cast error
        the rows are back and a staged row's line number is still its count in heap order.
        """
        return sql.SQL("DELETE FROM {} WHERE ctid = ANY (ARRAY({}))").format(self.stage, self._losers_query())

    def _source(self) -> sql.Composed:
        exprs = sql.SQL(", ").join(
            sql.SQL("{} AS {}").format(typed(c, self.types[c], "s"), sql.Identifier(c)) for c in self.plan.columns
        )
        return sql.SQL("SELECT {} FROM {} s").format(exprs, self.stage)

    def _match(self) -> sql.Composed:
        """Key equality; text keys compare bytewise, whatever collation either side was created with."""
        return sql.SQL(" AND ").join(
            sql.SQL("t.{k} = s.{k}{c}").format(
                k=sql.Identifier(k), c=sql.SQL(' COLLATE "C"' if self.types[k] == TEXT else "")
            )
            for k in self.plan.keys
        )

    def _guard(self) -> sql.Composed:
        """The plan's old-window guard (see :data:`dexcare.load.plan.WINDOW_END`)."""
        return sql.SQL("(t.{w} IS NULL OR t.{w} <= {p})").format(
            w=sql.Identifier(WINDOW_END), p=sql.Placeholder(WINDOW_END_PARAM)
        )

    def kept_newer(self) -> sql.Composed:
        """After the upsert: the table's rows of this file's keys that a newer window wrote (the guard kept).

        A plain join, not ``EXISTS``: the stage has no statistics, so the planner guesses 200 distinct keys in
        it and probes the table's index once per staged row (8 s for a million rows); a join is planned from
        the stage's size, as a hash join (0.5 s). Counting join rows is exact because the losers have left
        the stage by now: each key is on one staged row.
        """
        return sql.SQL("SELECT count(*) FROM {target} t JOIN ({src}) s ON {match} WHERE t.{w} > {p}").format(
            target=self.target, w=sql.Identifier(WINDOW_END), p=sql.Placeholder(WINDOW_END_PARAM),
            src=self._source(), match=self._match())

    def _changed(self) -> sql.Composed:
        """NULL-safe: a row is rewritten only when a value present in the file differs from the stored one."""
        comma = sql.SQL(", ")
        return sql.SQL("ROW({}) IS DISTINCT FROM ROW({})").format(
            comma.join(sql.Identifier("t", c) for c in self.plan.values),
            comma.join(sql.Identifier("s", c) for c in self.plan.values),
        )

    def _lineage_sets(self) -> sql.Composed:
        return sql.SQL(", ").join(
            sql.SQL("{} = {}").format(sql.Identifier(c.name), sql.Placeholder(c.param)) for c in LINEAGE
        )

    def _insert_lists(self) -> dict[str, sql.Composable]:
        comma = sql.SQL(", ")
        return {
            "cols": comma.join(sql.Identifier(c) for c in self.plan.columns),
            "lcols": comma.join(sql.Identifier(c.name) for c in LINEAGE),
            "svals": comma.join(sql.Identifier("s", c) for c in self.plan.columns),
            "lvals": comma.join(sql.Placeholder(c.param) for c in LINEAGE),
        }

    def merge(self) -> sql.Composed:
        """PostgreSQL 15+: one ``MERGE``, one hash join of the file against the table.

        About twice as fast as :meth:`update_then_insert` (which joins twice). It reports only the total of
        rows written; the caller splits it with the transaction's own insert counter.
        """
        matched: sql.Composable = sql.SQL("")
        if self.plan.values:
            matched = sql.SQL("WHEN MATCHED AND {guard} AND {changed} THEN UPDATE SET {sets}, {lsets} ").format(
                guard=self._guard(),
                changed=self._changed(),
                sets=sql.SQL(", ").join(sql.SQL("{c} = s.{c}").format(c=sql.Identifier(c)) for c in self.plan.values),
                lsets=self._lineage_sets(),
            )
        return sql.SQL(
            "MERGE INTO {target} t USING ({src}) s ON {match} {matched}"
            "WHEN NOT MATCHED THEN INSERT ({cols}, {lcols}) VALUES ({svals}, {lvals})"
        ).format(target=self.target, src=self._source(), match=self._match(), matched=matched,
                 **self._insert_lists())

    def update_then_insert(self) -> sql.Composed:
        """Before PostgreSQL 15 (no MERGE), and wherever the history is kept: an UPDATE and an INSERT in one
        statement, both seeing the same snapshot (so they never touch the same row), returning ``inserted,
        updated``. With a history table, both return the rows as they became and a third data-modifying
        CTE appends those to the history, in the same statement (MERGE cannot return rows before 17)."""
        history = self.plan.history
        comma = sql.SQL(", ")
        returning: sql.Composable
        inserted: sql.Composable
        update: sql.Composable
        if history is not None:
            returning = comma.join(sql.Identifier("t", c) for c in history.columns)
            inserted = comma.join(sql.Identifier(c) for c in history.columns)
        else:
            returning = inserted = sql.SQL("1")
        if self.plan.values:
            update = sql.SQL(
                "UPDATE {target} t SET {sets}, {lsets} FROM src s WHERE {match} AND {guard} AND {changed} "
                "RETURNING {returning}"
            ).format(
                target=self.target,
                sets=sql.SQL(", ").join(sql.SQL("{c} = s.{c}").format(c=sql.Identifier(c)) for c in self.plan.values),
                lsets=self._lineage_sets(),
                match=self._match(),
                guard=self._guard(),
                changed=self._changed(),
                returning=returning,
            )
        else:
            update = sql.SQL("SELECT 1 WHERE false")
        insert = sql.SQL(
            "INSERT INTO {target} ({cols}, {lcols}) SELECT {svals}, {lvals} FROM src s "
            "WHERE NOT EXISTS (SELECT FROM {target} t WHERE {match}) RETURNING {returning}"
        ).format(target=self.target, match=self._match(), returning=inserted, **self._insert_lists())
        append: sql.Composable = sql.SQL("")
        if history is not None:
            columns = comma.join(sql.Identifier(c) for c in history.columns)
            sources = [(sql.SQL("ins"), CHANGE_INSERT)]
            if self.plan.values:
                sources.append((sql.SQL("upd"), CHANGE_UPDATE))
            append = sql.SQL(", hist AS (INSERT INTO {history} ({columns}, {change}) {rows})").format(
                history=self.history,
                columns=columns,
                change=sql.Identifier(HISTORY_CHANGE),
                rows=sql.SQL(" UNION ALL ").join(
                    sql.SQL("SELECT {}, {} FROM {}").format(columns, sql.Literal(kind), cte) for cte, kind in sources
                ),
            )
        # NOT MATERIALIZED: scanning the stage twice is cheaper than writing it to a tuplestore once.
        return sql.SQL(
            "WITH src AS NOT MATERIALIZED ({src}), upd AS ({update}), ins AS ({insert}){append} "
            "SELECT (SELECT count(*) FROM ins), (SELECT count(*) FROM upd)"
        ).format(src=self._source(), update=update, insert=insert, append=append)

    def copy_to_history(self, change: str) -> sql.Composed:
        """Every row of the table into its history: a table this load just created (all inserts), or one whose
        history starts now (the baseline)."""
        assert self.plan.history is not None
        columns = sql.SQL(", ").join(sql.Identifier(c) for c in self.plan.history.columns)
        return sql.SQL("INSERT INTO {history} ({columns}, {change}) SELECT {columns}, {kind} FROM {target}").format(
            history=self.history, columns=columns, change=sql.Identifier(HISTORY_CHANGE), kind=sql.Literal(change),
            target=self.target,
        )
