"""PostgreSQL's staging: the report's bytes after the header go straight into COPY.

Every data byte goes, in 1 MiB blocks, into PostgreSQL's own CSV parser (COPY), which is written in C and
already checks what the load needs: ragged rows, open quotes and invalid UTF-8 (``ENCODING 'UTF8'``); parsing
the rows in Python first would cost several times the COPY itself. When COPY refuses the file,
:mod:`dexcare.load.dialects.postgres.diagnostics` names the line.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import BinaryIO

import psycopg
from psycopg import sql

from dexcare.load.csv_stream import BLOCK_SIZE, Header


def copy_stream(
    cursor: psycopg.Cursor,
    table: sql.Composable,
    columns: list[str],
    header: Header,
    stream: BinaryIO,
    *,
    block_size: int = BLOCK_SIZE,
    force_null: Sequence[str] = (),
    freeze: bool = False,
) -> int:
    """COPY the rest of ``stream`` into ``table``; returns the number of data rows PostgreSQL accepted.

    ``force_null`` columns read a quoted empty field as NULL too (typed columns: "" is no timestamp).
    """
    options: sql.Composable = sql.SQL("FORMAT csv, ENCODING 'UTF8'")
    if force_null:
        options = sql.SQL("{}, FORCE_NULL ({})").format(
            options, sql.SQL(", ").join(sql.Identifier(c) for c in force_null)
        )
    if freeze:
        options = sql.SQL("{}, FREEZE").format(options)
    statement = sql.SQL("COPY {} ({}) FROM STDIN ({})").format(
        table, sql.SQL(", ").join(sql.Identifier(c) for c in columns), options
    )
    with cursor.copy(statement) as copy:
        if header.rest:
            copy.write(header.rest)
        while block := stream.read(block_size):
            copy.write(block)
    return cursor.rowcount
