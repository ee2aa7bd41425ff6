"""What the load left in the warehouse for a window, as a DataFrame to compare with the report file.

Rows are those of ``<schema>.avr_<type>`` last written by a report whose window lies within
``[start_date, end_date]`` (the ``_dexcare_window_*`` lineage columns, :data:`dexcare.load.plan.LINEAGE`),
ordered by the key. The connection is the load's (:func:`dexcare.load.connection.warehouse`: a ``postgres`` or
``mssql`` Airflow connection), and so are the catalog lookup and the quoting (the load's dialect for that
connection), so this reads the table the load writes, in either warehouse, with no SQL of its own beyond one
SELECT. Text columns get the frame rules of :mod:`dexcare.frames.columns` (a file and its table come out with the
same dtypes); a column the load was configured to type (``column_types``) keeps its warehouse type.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from contextlib import closing, nullcontext
from typing import TYPE_CHECKING, Any

from dexcare.csv_records import DEFAULT_KEY
from dexcare.exceptions import DexCareSchemaError, DexCareValidationError
from dexcare.frames import require_pandas
from dexcare.frames.columns import SAMPLE_ROWS, TIMESTAMP_DTYPE, FrameColumns
from dexcare.load.connection import warehouse as resolve_warehouse
from dexcare.load.csv_stream import open_report
from dexcare.load.dialects import DIALECTS, dialect_for
from dexcare.load.dialects.base import Dialect
from dexcare.load.options import DEFAULT_SCHEMA, LoadOptions, table_for
from dexcare.load.plan import LINEAGE
from dexcare.report import ReportType, parse_iso_date

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

#: Rows fetched per round trip; also the piece the frame is built from (at least SAMPLE_ROWS).
FETCH_ROWS = max(50_000, SAMPLE_ROWS)
WINDOW_START, WINDOW_END = "_dexcare_window_start", "_dexcare_window_end"
_LINEAGE = {column.name for column in LINEAGE}


def read_table_window(
    warehouse_conn_id: str | None = "dexcare_warehouse",
    *,
    report_type: str,
    start_date: str | dt.date,
    end_date: str | dt.date,
    schema: str = DEFAULT_SCHEMA,
    key_columns: Sequence[str] = DEFAULT_KEY,
    timestamp_columns: Sequence[str] | None = None,
    conn: Any = None,
    dialect: str | None = None,
) -> pd.DataFrame:
    """The rows of the report type's table loaded for a window within ``[start_date, end_date]``.

    ``conn`` (a psycopg 3 or pymssql connection, left open) instead of ``warehouse_conn_id``, with ``dialect``
    (``"postgres"``/``"mssql"``) saying which; with ``warehouse_conn_id`` the connection's type decides.
    """
    pd = require_pandas("read_table_window")
    rtype = ReportType.parse(report_type)
    start = parse_iso_date(start_date, "start_date")
    end = parse_iso_date(end_date, "end_date")
    if start is None or end is None or start > end:
        raise DexCareValidationError(
            f"read_table_window needs a window: start_date and end_date, start first (got {start_date!r}, "
            f"{end_date!r})."
        )
    if conn is None and not warehouse_conn_id:
        raise DexCareValidationError("Give warehouse_conn_id (a postgres or mssql connection) or conn.")
    if conn is not None and dialect is None:
        raise DexCareValidationError(
            f"read_table_window needs dialect= with conn (one of: {', '.join(DIALECTS)}), naming the warehouse that "
            "connection speaks to; or give warehouse_conn_id instead, whose connection type decides."
        )
    owned = conn is None
    if conn is None:
        target = resolve_warehouse(str(warehouse_conn_id))
        dialect, conn = target.dialect, target.connect()
    with closing(conn) if owned else nullcontext(conn):
        warehouse = dialect_for(dialect)(conn, LoadOptions(schema=schema), open_report)
        return _read(pd, warehouse, schema, table_for(rtype), start, end, list(key_columns), timestamp_columns)


def _read(pd: Any, warehouse: Dialect, schema: str, table: str, start: dt.date, end: dt.date, keys: list[str],
          timestamp_columns: Sequence[str] | None) -> pd.DataFrame:
    source = f"{schema}.{table}"
    types = warehouse.existing_columns(table)
    if types is None:
        raise DexCareSchemaError(
            f"{source} does not exist: no report of this type has been loaded into schema {schema!r}; check the "
            "schema and report_type."
        )
    if WINDOW_START not in types or WINDOW_END not in types:
        raise DexCareSchemaError(f"{source} has no {WINDOW_START}/{WINDOW_END} lineage columns: it was not written "
                                 "by this package's load, so rows cannot be selected by window.")
    columns = list(types)
    text = [c for c in columns if c not in _LINEAGE and warehouse.types.is_text(types[c])]
    order = [k for k in keys if k in text] or text[:1]
    selected = ", ".join(_name(warehouse, c) for c in columns)
    window = f"{_name(warehouse, WINDOW_START)} >= %s AND {_name(warehouse, WINDOW_END)} <= %s"
    ordered = ", ".join(_name(warehouse, c) for c in order)
    # Identifiers only, each quoted by the dialect's one quoting function; the window travels as parameters.
    statement = f"SELECT {selected} FROM {_name(warehouse, schema, table)} WHERE {window} ORDER BY {ordered}"  # noqa: S608
    cursor = warehouse.cursor
    cursor.execute(statement, (start, end))
    first = cursor.fetchmany(FETCH_ROWS)
    positions = [columns.index(c) for c in text]
    shape = FrameColumns.decide(source=source, headers=text, columns=text, key_columns=keys,
                                timestamp_columns=timestamp_columns,
                                sample=[[row[p] for p in positions] for row in first[:SAMPLE_ROWS]])
    pieces = []
    done = 0
    rows = first
    while True:
        pieces.append(_piece(pd, shape, columns, types, positions, rows, done))
        done += len(rows)
        if len(rows) < FETCH_ROWS:
            break
        rows = cursor.fetchmany(FETCH_ROWS)
        if not rows:
            break
    log.info("Read %d rows of %s loaded for %s..%s.", done, source, start.isoformat(), end.isoformat())
    return pieces[0] if len(pieces) == 1 else pd.concat(pieces)


def _piece(pd: Any, shape: FrameColumns, columns: list[str], types: dict[str, str], positions: list[int],
           rows: Sequence[Sequence[Any]], start: int) -> pd.DataFrame:
    text = shape.frame(pd, [[row[p] for p in positions] for row in rows], None, start)
    data = {}
    for position, column in enumerate(columns):
        if column in text.columns:
            data[column] = text[column].array
        else:
            data[column] = _typed(pd, types[column], [row[position] for row in rows])
    return pd.DataFrame(data, index=text.index)


def _typed(pd: Any, sql_type: str, values: list[Any]) -> Any:
    """A column the warehouse types itself (lineage, ``column_types``), by its type name, so every piece of a
    read gets the same dtype whatever its values."""
    name = sql_type.lower()
    if name.startswith(("timestamp with time zone", "datetimeoffset")):
        return pd.to_datetime(pd.Series(values, dtype=object), utc=True).astype(TIMESTAMP_DTYPE).array
    if name.startswith(("timestamp", "datetime", "smalldatetime", "date")):
        return pd.to_datetime(pd.Series(values, dtype=object)).astype("datetime64[ns]").array
    if name in ("smallint", "integer", "bigint", "int", "tinyint"):
        return pd.array(values, dtype="Int64")
    if name in ("boolean", "bit"):
        return pd.array(values, dtype="boolean")
    if name.startswith(("text", "character", "varchar", "nvarchar", "char", "nchar")):
        return pd.array([v or None for v in values], dtype=pd.StringDtype())
    return pd.array(values, dtype=object)


def _name(warehouse: Dialect, *parts: str) -> str:
    """Quoted by the dialect; ``%`` doubled, since the drivers read it as a parameter marker in a statement with
    parameters."""
    return warehouse.quote(*parts).replace("%", "%%")
