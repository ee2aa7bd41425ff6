"""Create and evolve the target tables: additive schema drift only, and a unique index on the key.

A new column is added as nullable (text unless a type is configured) so a report that grows a field keeps
loading; a column that vanished from today's file is kept, with its old values. An existing column's type
is never changed here: that is a migration someone should decide on, so we only warn when it differs from
the configured type.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import psycopg
from psycopg import sql

from dexcare.load.errors import DexCareSchemaError

log = logging.getLogger(__name__)

TEXT = "text"

#: The columns the loader adds to every row: which report last wrote it, covering which window, and when.
LINEAGE_COLUMNS: dict[str, str] = {
    "_dexcare_report_id": "text",
    "_dexcare_report_type": "text",
    "_dexcare_window_start": "date",
    "_dexcare_window_end": "date",
    "_dexcare_loaded_at": "timestamp with time zone",
}
WINDOW_END = "_dexcare_window_end"


@dataclass(frozen=True)
class Target:
    """What the merge needs to know about the table after it was made fit for today's file."""

    schema: str
    table: str
    column_types: dict[str, str]
    new_columns: list[str]
    created: bool

    @property
    def ident(self) -> sql.Identifier:
        return sql.Identifier(self.schema, self.table)


def resolve_type(cursor: psycopg.Cursor, name: str, *, where: str) -> str:
    """Canonical spelling of a configured type (``timestamptz`` -> ``timestamp with time zone``).

    The canonical text comes from PostgreSQL's own ``regtype`` output, which is always valid SQL, so the
    configured string itself is never pasted into a statement.
    """
    try:
        with cursor.connection.transaction():
            row = cursor.execute("SELECT to_regtype(%s)::text", [name]).fetchone()
    except psycopg.errors.DataError:
        row = None
    except psycopg.errors.SyntaxError:
        row = None
    if row is None or row[0] is None:
        raise DexCareSchemaError(f"{where}: type {name!r} is not a PostgreSQL type.")
    return str(row[0])


def existing_columns(cursor: psycopg.Cursor, schema: str, table: str) -> dict[str, str] | None:
    """Column name -> SQL type of the table, in table order; ``None`` when the table does not exist."""
    rows = cursor.execute(
        """
        SELECT a.attname, format_type(a.atttypid, a.atttypmod)
          FROM pg_class c
          JOIN pg_namespace n ON n.oid = c.relnamespace
          LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
         WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p')
         ORDER BY a.attnum
        """,
        [schema, table],
    ).fetchall()
    if not rows:
        return None
    return {name: typ for name, typ in rows if name is not None}


def _key_index_name(table: str, keys: Sequence[str]) -> str:
    digest = hashlib.sha256("\x00".join(keys).encode()).hexdigest()[:8]
    return f"{table[:40]}_key_{digest}"


def _has_unique_index(cursor: psycopg.Cursor, schema: str, table: str, keys: Sequence[str]) -> bool:
    row = cursor.execute(
        """
        SELECT EXISTS (
          SELECT 1
            FROM pg_index i
            JOIN pg_class c ON c.oid = i.indrelid
            JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE n.nspname = %s AND c.relname = %s AND i.indisunique AND i.indpred IS NULL
             AND i.indexprs IS NULL
             AND ARRAY(SELECT a.attname::text
                         FROM unnest(i.indkey::int2[]) WITH ORDINALITY k(attnum, ord)
                         JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum
                        ORDER BY k.ord) = %s::text[])
        """,
        [schema, table, list(keys)],
    ).fetchone()
    return bool(row and row[0])


def ensure_target(
    cursor: psycopg.Cursor,
    schema: str,
    table: str,
    columns: Sequence[str],
    configured_types: Mapping[str, str],
    *,
    keys: Sequence[str] = (),
    source: str,
) -> Target:
    """Create the table or add today's new columns; return each file column's effective type.

    The unique index on the key comes later (:func:`ensure_key_index`), after the merge: building it once
    over a freshly filled table is several times cheaper than maintaining it row by row. Text key
    columns of a new table get ``COLLATE "C"``: ids need byte equality, not linguistic order, and the
    index then builds twice as fast.
    """
    existing = existing_columns(cursor, schema, table)
    ident = sql.Identifier(schema, table)
    created = existing is None
    new_columns: list[str] = []
    if existing is None:
        defs = [(c, configured_types.get(c, TEXT)) for c in columns]
        defs += [(c, t) for c, t in LINEAGE_COLUMNS.items()]
        cursor.execute(
            sql.SQL("CREATE TABLE {} ({})").format(
                ident,
                sql.SQL(", ").join(
                    sql.SQL("{} {}{}").format(
                        sql.Identifier(c), sql.SQL(t), sql.SQL(' COLLATE "C"' if c in keys and t == TEXT else "")
                    )
                    for c, t in defs
                ),
            )
        )
        log.info("Created table %s.%s with %d columns from the header of %s", schema, table,
                 len(columns), source)
        existing = dict(defs)
    else:
        missing = [c for c in columns if c not in existing]
        lineage_missing = [c for c in LINEAGE_COLUMNS if c not in existing]
        adds = [(c, configured_types.get(c, TEXT)) for c in missing]
        adds += [(c, LINEAGE_COLUMNS[c]) for c in lineage_missing]
        if adds:
            cursor.execute(
                sql.SQL("ALTER TABLE {} {}").format(
                    ident,
                    sql.SQL(", ").join(
                        sql.SQL("ADD COLUMN {} {}").format(sql.Identifier(c), sql.SQL(t)) for c, t in adds
                    ),
                )
            )
            existing.update(adds)
        if missing:
            new_columns = missing
            log.warning("Schema drift: added column(s) %s to %s.%s (new in %s)", ", ".join(missing), schema,
                        table, source)
        for column in columns:
            wanted = configured_types.get(column)
            if wanted is not None and existing[column] != wanted:
                log.warning(
                    "Column %s.%s.%s is %s but %s is configured; types are never changed automatically, "
                    "values are cast to %s", schema, table, column, existing[column], wanted, existing[column],
                )
    return Target(
        schema=schema,
        table=table,
        column_types={c: existing[c] for c in columns},
        new_columns=new_columns,
        created=created,
    )


def ensure_key_index(cursor: psycopg.Cursor, schema: str, table: str, keys: Sequence[str]) -> None:
    """Add the unique index on the key if the table has none; refuse clearly if the data has duplicates."""
    if _has_unique_index(cursor, schema, table, keys):
        return
    try:
        with cursor.connection.transaction():
            cursor.execute(
                sql.SQL("CREATE UNIQUE INDEX {} ON {} ({})").format(
                    sql.Identifier(_key_index_name(table, keys)),
                    sql.Identifier(schema, table),
                    sql.SQL(", ").join(sql.Identifier(k) for k in keys),
                )
            )
    except psycopg.errors.UniqueViolation:
        raise DexCareSchemaError(
            f"{schema}.{table} holds several rows per key ({', '.join(keys)}); cannot add the unique index "
            "the load needs: deduplicate the table or configure the key it was built with."
        ) from None
