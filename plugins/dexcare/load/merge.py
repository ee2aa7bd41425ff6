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
from dataclasses import dataclass

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
    target: sql.Composable
    stage: sql.Composable
    columns: Sequence[str]
    keys: Sequence[str]
    types: Mapping[str, str]
    version: str | None = None

    def statement(self) -> sql.Composed:
        """``SELECT distinct_rows, inserted, updated`` after merging; lineage values are parameters."""
        cols = list(self.columns)
        keys = list(self.keys)
        values = [c for c in cols if c not in keys]
        ident = sql.Identifier
        comma = sql.SQL(", ")
        order = [sql.SQL("{} COLLATE \"C\"").format(ident("s", k)) for k in keys]
        if self.version:
            order.append(sql.SQL("{} DESC NULLS LAST").format(typed(self.version, self.types[self.version], "s")))
        # ctid is the file order: the stage is a fresh temp table filled by one COPY, so its heap is
        # written front to back and a later row always has a larger ctid (no sequence column needed).
        order.append(sql.SQL("s.ctid DESC"))
        src = sql.SQL(
            "SELECT DISTINCT ON ({distinct}) {exprs} FROM {stage} s ORDER BY {order}"
        ).format(
            distinct=comma.join(order[: len(keys)]),
            exprs=comma.join(sql.SQL("{} AS {}").format(typed(c, self.types[c], "s"), ident(c)) for c in cols),
            stage=self.stage,
            order=comma.join(order),
        )
        key_match = sql.SQL(" AND ").join(
            sql.SQL("t.{k} = s.{k}").format(k=ident(k)) for k in keys
        )
        lineage_cols = [ident(c) for c in LINEAGE_COLUMNS]
        lineage_vals = [sql.Placeholder(LINEAGE_PARAMS[c]) for c in LINEAGE_COLUMNS]
        insert = sql.SQL(
            "INSERT INTO {target} ({cols}, {lcols}) "
            "SELECT {scols}, {lvals} FROM src s WHERE NOT EXISTS (SELECT FROM {target} t WHERE {match}) "
            "RETURNING 1"
        ).format(
            target=self.target,
            cols=comma.join(ident(c) for c in cols),
            lcols=comma.join(lineage_cols),
            scols=comma.join(ident("s", c) for c in cols),
            lvals=comma.join(lineage_vals),
            match=key_match,
        )
        if values:
            update = sql.SQL(
                "UPDATE {target} t SET {sets}, {lsets} FROM src s WHERE {match} "
                "AND (t.{wend} IS NULL OR t.{wend} <= {wend_param}) "
                "AND ROW({tvals}) IS DISTINCT FROM ROW({svals}) RETURNING 1"
            ).format(
                target=self.target,
                sets=comma.join(sql.SQL("{c} = s.{c}").format(c=ident(c)) for c in values),
                lsets=comma.join(sql.SQL("{} = {}").format(c, v) for c, v in zip(lineage_cols, lineage_vals,
                                                                                    strict=True)),
                match=key_match,
                wend=ident(WINDOW_END),
                wend_param=sql.Placeholder("window_end"),
                tvals=comma.join(ident("t", c) for c in values),
                svals=comma.join(ident("s", c) for c in values),
            )
        else:
            update = sql.SQL("SELECT 1 WHERE false")
        return sql.SQL(
            "WITH src AS MATERIALIZED ({src}), upd AS ({update}), ins AS ({insert}) "
            "SELECT (SELECT count(*) FROM src), (SELECT count(*) FROM ins), (SELECT count(*) FROM upd)"
        ).format(src=src, update=update, insert=insert)
