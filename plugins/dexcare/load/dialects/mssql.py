"""Microsoft SQL Server (2019+, Azure SQL Database) through pymssql, whose wheel bundles FreeTDS.

The run takes ``sp_getapplock`` on its schema, owned by the transaction, so loads on one schema queue and
the lock goes with the commit or rollback. The file is parsed in Python (SQL Server has no client-fed CSV
parser like COPY) and sent in batches of :attr:`LoadOptions.batch_rows` with pymssql's ``bulk_copy`` into a
session temp table on the same connection, so the stage is inside the transaction and the worker's memory
stays at one batch. Then, set-based: check the casts, delete the rows superseded within the file, update
the rows that changed, insert the new keys (see :mod:`.mssql_sql` for why not MERGE), audit, commit.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any, BinaryIO, ClassVar

from dexcare.exceptions import DexCareLoadError, DexCareSchemaError, DexCareWarehouseError
from dexcare.load import diagnostics
from dexcare.load.audit import AUDIT_FIELDS, AUDIT_TABLE, iso
from dexcare.load.csv_stream import Header, Opener, records
from dexcare.load.dialects import Dialect, MergeCounts
from dexcare.load.dialects.mssql_sql import KEY_UNITS, TEXT, MsSqlStatements, is_text, quote, text_units
from dexcare.load.instants import is_instant
from dexcare.load.plan import CHANGE_BASELINE, LoadPlan

log = logging.getLogger(__name__)

#: Set on the load's session. XACT_ABORT: any error (or a client cancel) aborts the whole transaction on the
#: server, so nothing half-done can be committed later; the ANSI options make a too-long value an error
#: instead of a silent truncation (pymssql sets them by default, a connection's ``conn_properties`` may not).
SESSION = (
    "SET XACT_ABORT ON; SET NOCOUNT OFF; SET ANSI_WARNINGS ON; SET ANSI_NULLS ON; SET ANSI_PADDING ON; "
    "SET ARITHABORT ON; SET CONCAT_NULL_YIELDS_NULL ON; SET QUOTED_IDENTIFIER ON"
)
#: Exclusive, owned by the transaction (released by its commit or rollback), waiting as long as it takes.
LOCK = (
    "DECLARE @result int; EXEC @result = sp_getapplock @Resource = %s, @LockMode = 'Exclusive', "
    "@LockOwner = 'Transaction', @LockTimeout = -1; SELECT @result AS result"
)

AUDIT_DDL = """
CREATE TABLE {table} (
    id                 bigint IDENTITY(1, 1) NOT NULL PRIMARY KEY,
    dag_id             nvarchar(250) NULL,
    run_id             nvarchar(250) NULL,
    report_id          nvarchar(64) NOT NULL,
    report_type        nvarchar(32) NOT NULL,
    target_table       nvarchar(128) NOT NULL,
    file_uri           nvarchar(max) NOT NULL,
    file_sha256        nvarchar(64) NULL,
    window_start       date NULL,
    window_end         date NULL,
    rows_in_file       bigint NOT NULL,
    duplicates_in_file bigint NOT NULL,
    inserted           bigint NOT NULL,
    updated            bigint NOT NULL,
    unchanged          bigint NOT NULL,
    new_columns        nvarchar(max) NOT NULL,
    started_at         datetimeoffset(7) NOT NULL,
    finished_at        datetimeoffset(7) NOT NULL
)
"""

# --- Types ------------------------------------------------------------------------------------------------

#: The PostgreSQL spellings a DAG may already use, so one ``column_types`` serves both warehouses.
#: (SQL Server's own ``timestamp`` is rowversion, never a point in time.)
ALIASES = {
    "text": TEXT,
    "timestamptz": "datetimeoffset",
    "timestamp with time zone": "datetimeoffset",
    "timestamp": "datetime2",
    "timestamp without time zone": "datetime2",
    "integer": "int",
    "int4": "int",
    "int2": "smallint",
    "int8": "bigint",
    "boolean": "bit",
    "bool": "bit",
    "double precision": "float",
    "float8": "float",
    "float4": "real",
    "uuid": "uniqueidentifier",
}
_TYPE = re.compile(r"(?P<name>[a-z][a-z0-9_]*(?: [a-z]+)*)\s*(?:\(\s*(?P<a>max|\d+)\s*(?:,\s*(?P<b>\d+)\s*)?\))?")
_LENGTH = ("nvarchar", "varchar", "nchar", "char", "varbinary", "binary")
_PRECISION = ("decimal", "numeric")
_SCALE = ("datetime2", "datetimeoffset", "time")


def render_type(name: str, max_length: int, precision: int, scale: int) -> str:
    """A catalog column's type as SQL (``sys.columns``): the form configured types are compared with."""
    if name in ("nvarchar", "nchar"):
        return f"{name}(max)" if max_length == -1 else f"{name}({max_length // 2})"
    if name in _LENGTH:
        return f"{name}(max)" if max_length == -1 else f"{name}({max_length})"
    if name in _PRECISION:
        return f"{name}({precision},{scale})"
    if name in _SCALE:
        return f"{name}({scale})"
    return name


def canonical_type(spec: str, *, where: str) -> tuple[str, str]:
    """``(base name, canonical SQL)`` of a configured type, e.g. ``timestamptz`` -> ``datetimeoffset(7)``.

    Only a name of letters, digits and underscores with numeric arguments gets through, so the configured
    text never reaches a statement as it was written; the base name is then checked against ``sys.types``.
    """
    text = " ".join(spec.strip().lower().split())
    text = ALIASES.get(text, text)
    match = _TYPE.fullmatch(text)
    if match is None:
        raise DexCareSchemaError(f"{where}: {spec!r} is not a SQL Server type.")
    name, a, b = match["name"], match["a"], match["b"]
    name = ALIASES.get(name, name)
    if name in _LENGTH:
        if a is None or b is not None:
            raise DexCareSchemaError(f"{where}: {spec!r} needs one length, e.g. {name}(100) or {name}(max).")
        return name, f"{name}({a})"
    if name in _PRECISION and a != "max":
        return name, f"{name}({int(a or 18)},{int(b or 0)})"
    if name in _SCALE and a != "max" and b is None:
        return name, f"{name}({int(a or 7)})"
    if a is not None:
        raise DexCareSchemaError(f"{where}: {spec!r}: SQL Server's {name} takes no such arguments.")
    return name, name


class MsSqlTypes:
    text = TEXT
    identity = "bigint IDENTITY(1, 1)"
    _LINEAGE: ClassVar[dict[str, str]] = {"text": "nvarchar(64)", "date": "date", "timestamp": "datetimeoffset(7)"}

    def key_text(self, keys: int) -> str:
        return f"nvarchar({KEY_UNITS // keys})"

    def lineage(self, kind: str) -> str:
        return self._LINEAGE[kind]

    def is_text(self, sql_type: str) -> bool:
        return is_text(sql_type)


# --- Errors -----------------------------------------------------------------------------------------------

#: Errors whose server text names objects and permissions but never a row value: kept in our message.
_SAFE_MESSAGES = {229, 230, 262, 297, 300, 916, 2760, 15247}
_DEADLOCK = 1205
#: The session is gone: killed (596), or the transport broke under it (64, 121, 233, 10053, 10054). FreeTDS's
#: own "DB-Lib" errors (20000-20999: unreachable, timed out, connection dead) mean the same.
_SESSION_LOST = {64, 121, 233, 596, 10053, 10054}
_NUMBER = re.compile(r"\((\d+), b?['\"]")


def error_number(exc: BaseException) -> int | None:
    """SQL Server's (or FreeTDS's, 20000-20999) error number of a pymssql exception."""
    number = getattr(exc, "number", None)
    if isinstance(number, int):
        return number
    arg = exc.args[0] if exc.args else None
    if isinstance(arg, tuple) and arg and isinstance(arg[0], int):
        return arg[0]
    # pymssql's commit() re-raises as OperationalError("Cannot commit transaction: (20047, b'...')").
    match = _NUMBER.search(arg) if isinstance(arg, str) else None
    return int(match.group(1)) if match else None


def _server_text(exc: BaseException) -> str:
    arg = exc.args[0] if exc.args else None
    text = arg[1] if isinstance(arg, tuple) and len(arg) > 1 else arg
    text = text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text or "")
    return text.strip().splitlines()[0] if text.strip() else ""


def statements_for(plan: LoadPlan, index: int) -> MsSqlStatements:
    """The plan's statements, staging in ``#dexcare_stage_<index>``. Each key is staged as bounded NVARCHAR
    (the table's own bound, or its share of :data:`KEY_UNITS`), which is what each key value is checked against;
    a key column of unbounded text is refused, since SQL Server cannot index it."""
    key_types = {}
    for key in plan.keys:
        sql_type = plan.types[key]
        units = text_units(sql_type) if is_text(sql_type) else KEY_UNITS // len(plan.keys)
        if units is None:
            raise DexCareSchemaError(
                f"{plan.schema}.{plan.table}: key column {key!r} is {sql_type}, which SQL Server cannot index; "
                f"alter it to nvarchar({KEY_UNITS // len(plan.keys)}) or configure another key."
            )
        key_types[key] = f"nvarchar({units})"
    return MsSqlStatements(plan, stage=f"#dexcare_stage_{index}", key_types=key_types)


def batches(st: MsSqlStatements, header: Header, stream: BinaryIO, *, opener: Opener, block_size: int,
            batch_rows: int) -> Iterator[list[list[Any]]]:
    """The file's records as bulk-copy rows (values, then the line the record starts on), ``batch_rows`` at a
    time. Every record of a batch is checked before the batch is handed out, so a bad record stops the load
    between two bulk copies, with the connection in a clean state, and the worker holds one batch at most."""
    plan, source = st.plan, st.plan.source
    checks = [(plan.columns.index(k), text_units(t) or 0, plan.header_of(k), t) for k, t in st.key_types.items()]
    # An undeclared version is ordered as instants: each value must name one (checked here, where the line is).
    version = plan.columns.index(plan.version) if plan.version is not None and plan.version_instant else None
    batch: list[list[Any]] = []
    for line, record in records(header, stream, source=source, columns=len(plan.columns), opener=opener,
                                block_size=block_size):
        row: list[Any] = [value or None for value in record]  # an empty field is NULL
        for position, units, name, sql_type in checks:
            key = row[position]
            if key is None:
                raise diagnostics.empty_key_error(source, line, plan.keys)
            # NVARCHAR counts UTF-16 code units: a character outside the BMP takes two.
            if len(key) > units // 2 and (len(key) > units or len(key.encode("utf-16-le")) > 2 * units):
                raise diagnostics.key_too_long_error(source, line, name, units, sql_type)
        if version is not None and row[version] is not None and not is_instant(row[version]):
            raise diagnostics.version_error(source, line, plan.header_of(plan.columns[version]))
        row.append(line)
        batch.append(row)
        if len(batch) >= batch_rows:
            yield batch
            batch = []
    if batch:
        yield batch


class MsSqlDialect(Dialect):
    conn_types = ("mssql",)
    types = MsSqlTypes()

    @staticmethod
    def accepts(conn: Any) -> bool:
        try:
            import pymssql
        except ImportError:  # pragma: no cover - a dependency; only a broken install lacks it
            return False
        return isinstance(conn, pymssql.Connection)

    quote = staticmethod(quote)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._baselines: dict[int, int] = {}

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """pymssql keeps a transaction open whenever autocommit is off (it sends BEGIN TRAN after every
        commit and rollback); an autocommit connection is switched off for the load and back afterwards."""
        autocommit = bool(getattr(self.conn, "autocommit_state", False))
        if autocommit:
            self.conn.autocommit(False)
        try:
            yield
            self.conn.commit()
        except BaseException:
            self._rollback()
            raise
        finally:
            if autocommit:
                with suppress(Exception):
                    self.conn.autocommit(True)

    def _rollback(self) -> None:
        try:
            self.conn.rollback()
        except Exception as exc:
            # Most likely the connection is gone, and the server rolled back when the session ended. If it is
            # not, closing it makes sure: an open transaction must not outlive a failed load.
            log.warning("Rollback failed (%s); closing the connection so SQL Server rolls back.",
                        type(exc).__name__)
            with suppress(Exception):
                self.conn.close()

    def begin(self) -> None:
        schema = self.options.schema
        quote(schema)  # refuse an unusable name before taking anything
        self.cursor.execute(SESSION)
        self.cursor.execute(LOCK, (f"dexcare-load:{schema}",))
        row = self.cursor.fetchone()
        if row is None or row[0] is None or row[0] < 0:
            raise DexCareWarehouseError(
                f"SQL Server did not grant the load's lock on schema {schema!r} (sp_getapplock returned "
                f"{row[0] if row else None}); retry the task."
            )
        self.cursor.execute("SELECT SCHEMA_ID(%s) AS schema_id", (schema,))
        found = self.cursor.fetchone()
        if found is None or found[0] is None:
            self.cursor.execute(f"CREATE SCHEMA {quote(schema)}")
        if self.existing_columns(AUDIT_TABLE) is None:
            self.cursor.execute(AUDIT_DDL.format(table=quote(schema, AUDIT_TABLE)))

    def resolve_type(self, name: str, *, where: str) -> str:
        base, canonical = canonical_type(name, where=where)
        self.cursor.execute("SELECT name FROM sys.types WHERE name = %s AND is_user_defined = 0", (base,))
        if self.cursor.fetchone() is None:
            raise DexCareSchemaError(f"{where}: type {name!r} is not a SQL Server type.")
        return canonical

    def existing_columns(self, table: str) -> dict[str, str] | None:
        self.cursor.execute(
            "SELECT c.name, TYPE_NAME(c.user_type_id), c.max_length, c.[precision], c.scale FROM sys.columns AS c "
            "WHERE c.object_id = OBJECT_ID(%s, N'U') ORDER BY c.column_id",
            (quote(self.options.schema, table),),
        )
        rows = self.cursor.fetchall()
        if not rows:
            return None
        return {name: render_type(typ, length, precision, scale) for name, typ, length, precision, scale in rows}

    # --- Staging ------------------------------------------------------------------------------------------

    def stage(self, plan: LoadPlan, header: Header, stream: BinaryIO, index: int) -> int:
        st = statements_for(plan, index)
        if plan.create:
            self.cursor.execute(st.create_table())
        elif plan.adds:
            self.cursor.execute(st.add_columns())
        if plan.history is not None:
            if plan.history.create:
                self.cursor.execute(st.create_history())
            elif plan.history.adds:
                self.cursor.execute(st.add_history_columns())
            if plan.history.baseline:  # before anything changes: the state its history starts from
                self.cursor.execute(st.copy_to_history(CHANGE_BASELINE))
                self._baselines[index] = max(self.cursor.rowcount, 0)
        self.cursor.execute(st.create_stage())
        return self._bulk_copy(st, header, stream)

    def _bulk_copy(self, st: MsSqlStatements, header: Header, stream: BinaryIO) -> int:
        sent = 0
        for batch in batches(st, header, stream, opener=self.opener, block_size=self.options.block_size,
                             batch_rows=self.options.batch_rows):
            # The raw '#name' (ours, letters, digits and '_'): pymssql looks a temp table's columns up in tempdb
            # only when the name starts with '#', and that lookup is what makes it send text as NVARCHAR.
            self.conn.bulk_copy(st.stage, batch, batch_size=len(batch))
            sent += len(batch)
        return sent

    # --- Dedupe and upsert --------------------------------------------------------------------------------

    def merge(self, plan: LoadPlan, rows_in_file: int, index: int) -> MergeCounts:
        st = statements_for(plan, index)
        cursor = self.cursor
        if plan.casts:
            cursor.execute(st.first_bad_casts())
            lines = cursor.fetchone() or ()
            bad = [(line, column) for line, column in zip(lines, plan.casts, strict=False) if line is not None]
            if bad:
                line, column = min(bad)
                raise diagnostics.cast_error(plan.source, line, plan.header_of(column), plan.types[column])
        # Dates and times as ISO 8601 text: SQL Server converts it to date/datetimeoffset independent of the
        # session's language, and pymssql's own datetime quoting would drop the offset.
        params = {name: iso(value) for name, value in plan.lineage.items()}
        cursor.execute(st.dedupe())
        duplicates = max(cursor.rowcount, 0)
        updated = 0
        update = st.update()
        if update is not None:
            cursor.execute(update, params)
            updated = max(cursor.rowcount, 0)
        cursor.execute(st.insert(), params)
        inserted = max(cursor.rowcount, 0)
        self._ensure_key_index(st)
        cursor.execute(st.drop_stage())
        history = inserted + updated + self._baselines.pop(index, 0) if plan.history is not None else 0
        return MergeCounts(duplicates, inserted, updated, history)

    def _ensure_key_index(self, st: MsSqlStatements) -> None:
        plan = st.plan
        self.cursor.execute(st.unique_indexes(), (quote(plan.schema, plan.table),))
        indexes: dict[int, list[str]] = {}
        for index_id, column in self.cursor.fetchall():
            indexes.setdefault(index_id, []).append(column)
        if list(plan.keys) in indexes.values():
            return
        try:
            self.cursor.execute(st.create_key_index())
        except Exception as exc:
            if error_number(exc) == 1505:  # CREATE UNIQUE INDEX found duplicate keys
                raise diagnostics.duplicate_keys_error(plan.schema, plan.table, plan.keys) from None
            raise

    def record_audit(self, entry: dict[str, Any]) -> None:
        values = {f: iso(entry[f]) for f in AUDIT_FIELDS}  # ISO text, for the same reasons as in merge
        values["new_columns"] = json.dumps(entry["new_columns"], ensure_ascii=False)
        self.cursor.execute(
            "INSERT INTO {} ({}) VALUES ({})".format(
                quote(self.options.schema, AUDIT_TABLE),
                ", ".join(quote(f) for f in AUDIT_FIELDS),
                ", ".join(f"%({f})s" for f in AUDIT_FIELDS),
            ),
            values,
        )

    # --- Errors -------------------------------------------------------------------------------------------

    def translate(self, exc: BaseException, *, current: str, committing: bool) -> DexCareLoadError | None:
        import pymssql
        from pymssql import _mssql

        if not isinstance(exc, pymssql.Error | _mssql.MSSQLException):
            return None
        number = error_number(exc)
        lost = isinstance(exc, pymssql.InterfaceError | _mssql.MSSQLDriverException) or (
            number is not None and (20000 <= number < 21000 or number in _SESSION_LOST)
        )
        if lost or number == _DEADLOCK:
            if committing:
                return diagnostics.commit_lost_error(f"SQL Server/FreeTDS error {number}")
            what = "was chosen as a deadlock victim" if number == _DEADLOCK else "lost the warehouse connection"
            return diagnostics.load_interrupted_error(f"The load {what}", current,
                                                      f"{type(exc).__name__}, error {number}")
        # Anything else SQL Server refused. Its messages can quote row values (conversion and truncation
        # errors do), so only the error number is kept, and the text only for permission errors.
        detail = f": {_server_text(exc)}" if number in _SAFE_MESSAGES else ""
        return diagnostics.load_refused_error("SQL Server", current, f"error {number}, {type(exc).__name__}{detail}")
