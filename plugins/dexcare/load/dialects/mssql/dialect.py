"""Microsoft SQL Server (2019+, Azure SQL Database) through pymssql, whose wheel bundles FreeTDS.

The run takes ``sp_getapplock`` on its schema, owned by the transaction, so loads on one schema queue and
the lock goes with the commit or rollback. The file is parsed in Python (SQL Server has no client-fed CSV
parser like COPY) and sent in batches of :attr:`LoadOptions.batch_rows` with pymssql's ``bulk_copy`` into a
session temp table on the same connection (:mod:`.staging`), so the stage is inside the transaction and the
worker's memory stays at one batch. Then, set-based: check the casts, delete the rows superseded within the
file, update the rows that changed, insert the new keys (see :mod:`.sql` for why not MERGE), audit, commit.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any, BinaryIO, ClassVar

from dexcare.exceptions import DexCareLoadError, DexCareSchemaError, DexCareWarehouseError
from dexcare.load import diagnostics
from dexcare.load.audit import AUDIT_FIELDS, AUDIT_TABLE, iso
from dexcare.load.csv_stream import Header
from dexcare.load.dialects.base import Dialect, MergeCounts
from dexcare.load.dialects.mssql.sql import KEY_UNITS, TEXT, MsSqlStatements, is_text, quote, text_units
from dexcare.load.dialects.mssql.staging import bulk_copy
from dexcare.load.plan import CHANGE_BASELINE, WINDOW_END_PARAM, LoadPlan

log = logging.getLogger(__name__)

#: Set on the load's session. XACT_ABORT: any error (or a client cancel) aborts the whole transaction on the
#: server, so nothing half-done can be committed later; the ANSI options make a too-long value an error
#: instead of a silent truncation (pymssql sets them by default, a connection's ``conn_properties`` may not).
#: LANGUAGE then DATEFORMAT (in that order: SET LANGUAGE resets the date order): strings convert to dates the
#: same way whatever language the login defaults to (a British or French login reads ``2026-11-12 10:00``
#: as year-day-month into ``datetime``).
SESSION = (
    "SET XACT_ABORT ON; SET NOCOUNT OFF; SET ANSI_WARNINGS ON; SET ANSI_NULLS ON; SET ANSI_PADDING ON; "
    "SET ARITHABORT ON; SET CONCAT_NULL_YIELDS_NULL ON; SET QUOTED_IDENTIFIER ON; "
    "SET LANGUAGE us_english; SET DATEFORMAT ymd"
)
#: Exclusive, owned by the transaction (released by its commit or rollback), waiting at most ``@LockTimeout``
#: ms. sp_getapplock compares resource names as binary, while the database compares schema names by its
#: catalog collation: on a case-insensitive catalog the name is upper-cased first, so ``Dexcare`` and
#: ``dexcare`` (one schema there) take one lock.
LOCK = (
    "DECLARE @result int, @resource nvarchar(255) = N'dexcare-load:' + CASE WHEN N'a' COLLATE CATALOG_DEFAULT "
    "= N'A' COLLATE CATALOG_DEFAULT THEN UPPER(%(schema)s) ELSE %(schema)s END; "
    "EXEC @result = sp_getapplock @Resource = @resource, @LockMode = 'Exclusive', @LockOwner = 'Transaction', "
    "@LockTimeout = %(timeout_ms)s; SELECT @result AS result"
)
#: Who holds the load's lock, when it timed out. Reading the lock DMVs needs VIEW SERVER STATE (VIEW DATABASE
#: STATE on Azure SQL); without it the statement answers a row of NULLs instead of failing, since under
#: XACT_ABORT a permission error would doom the transaction before the load could say what it waited for.
LOCK_HOLDER = (
    "IF HAS_PERMS_BY_NAME(NULL, NULL, 'VIEW SERVER STATE') = 1 "
    "OR HAS_PERMS_BY_NAME(DB_NAME(), 'DATABASE', 'VIEW DATABASE STATE') = 1 "
    "SELECT TOP (1) l.request_session_id, s.login_name, s.host_name, s.program_name FROM sys.dm_tran_locks AS l "
    "LEFT JOIN sys.dm_exec_sessions AS s ON s.session_id = l.request_session_id "
    "WHERE l.resource_type = N'APPLICATION' AND l.request_mode = N'X' AND l.request_status = N'GRANT' "
    "AND l.resource_database_id = DB_ID() AND l.request_session_id <> @@SPID "
    "AND CHARINDEX(N'dexcare-load:', l.resource_description) > 0 "
    "ELSE SELECT NULL, NULL, NULL, NULL"
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
    finished_at        datetimeoffset(7) NOT NULL,
    kept_newer         bigint NOT NULL DEFAULT 0
)
"""

#: ``load_audit`` as its first release made it lacks ``kept_newer``: added in the load's transaction (under its
#: lock, like the CREATE), 0 in the rows written before.
AUDIT_ADD_KEPT_NEWER = "ALTER TABLE {table} ADD [kept_newer] bigint NOT NULL DEFAULT 0"

#: The volume guard's one query per report seeks the newest loads of a report type in it (the window length is
#: read from the included columns, so other lengths in between cost a few index rows, no table lookups).
AUDIT_VOLUME_INDEX = (
    "IF INDEXPROPERTY(OBJECT_ID(%(table)s), N'load_audit_volume', 'IndexID') IS NULL "
    "CREATE INDEX load_audit_volume ON {table} (report_type, id DESC) INCLUDE (window_start, window_end, rows_in_file)"
)

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
#: What a file's text can be converted to, stored, and compared in ``EXCEPT`` the same way on every load.
_LOADABLE = frozenset({"bigint", "int", "smallint", "tinyint", "bit", "decimal", "numeric", "money", "smallmoney",
                       "float", "real", "date", "time", "datetime2", "datetimeoffset", "datetime", "smalldatetime",
                       "uniqueidentifier", "nvarchar"})
#: Types refused, and why; anything else outside :data:`_LOADABLE` is refused with the list of what works.
_REFUSED = {
    "varchar": "stores the text in the column's code page (characters outside it become '?', so the row differs "
               "from the file on every load); use nvarchar(n) or nvarchar(max)",
    "char": "pads every value with spaces (the row differs from the file on every load); use nvarchar(n)",
    "nchar": "pads every value with spaces (the row differs from the file on every load); use nvarchar(n)",
    "xml": "cannot be compared, so a change cannot be detected; use nvarchar(max)",
    "text": "cannot be compared and is deprecated; use nvarchar(max)",
    "ntext": "cannot be compared and is deprecated; use nvarchar(max)",
    "image": "cannot be compared and is deprecated; leave the column as text",
    "geography": "cannot be compared; load it as nvarchar(max) and convert in a view",
    "geometry": "cannot be compared; load it as nvarchar(max) and convert in a view",
    "binary": "would store the text's own bytes, not decoded ones; leave the column as text",
    "varbinary": "would store the text's own bytes, not decoded ones; leave the column as text",
}
#: SQL Server's limits, checked here so a bad setting fails before the load instead of at CREATE TABLE.
_MAX_UNITS = {"nvarchar": 4000}
_MAX_PRECISION = 38
_MAX_SCALE = 7


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


def loadable(sql_type: str, *, where: str) -> None:
    """Refuse a column type the load cannot fill and compare faithfully, naming the column, its type and
    what to use instead; a configured type and an existing column's type get the same rule."""
    base = sql_type.partition("(")[0]
    if base in _LOADABLE:
        return
    why = _REFUSED.get(base) or f"is not one the load supports ({', '.join(sorted(_LOADABLE))})"
    raise DexCareSchemaError(f"{where} is {sql_type}, which {why}.")


def canonical_type(spec: str, *, where: str) -> tuple[str, str]:
    """``(base name, canonical SQL)`` of a configured type, e.g. ``timestamptz`` -> ``datetimeoffset(7)``.

    Only a name of letters, digits and underscores with numeric arguments gets through, so the configured
    text never reaches a statement as it was written; the base name is then checked against ``sys.types``.
    A type the load cannot fill and compare (:func:`loadable`), or with arguments beyond SQL Server's limits,
    is refused here, before the load.
    """
    text = " ".join(spec.strip().lower().split())
    text = ALIASES.get(text, text)
    match = _TYPE.fullmatch(text)
    if match is None:
        raise DexCareSchemaError(f"{where}: {spec!r} is not a SQL Server type.")
    name, a, b = match["name"], match["a"], match["b"]
    name = ALIASES.get(name, name)
    loadable(name, where=where)
    if name in _LENGTH:
        if a is None or b is not None:
            raise DexCareSchemaError(f"{where}: {spec!r} needs one length, e.g. {name}(100) or {name}(max).")
        if a != "max" and not 1 <= int(a) <= _MAX_UNITS[name]:
            raise DexCareSchemaError(f"{where}: {spec!r}: {name} takes 1 to {_MAX_UNITS[name]} characters; "
                                     f"use {name}(max) for longer values.")
        return name, f"{name}({a})"
    if name in _PRECISION and a != "max":
        precision, scale = int(a or 18), int(b or 0)
        if not (1 <= precision <= _MAX_PRECISION and scale <= precision):
            raise DexCareSchemaError(f"{where}: {spec!r}: {name} takes a precision of 1 to {_MAX_PRECISION} and a "
                                     "scale no larger than it; e.g. decimal(38,2).")
        return name, f"{name}({precision},{scale})"
    if name in _SCALE and a != "max" and b is None:
        if int(a or 7) > _MAX_SCALE:
            raise DexCareSchemaError(f"{where}: {spec!r}: {name} keeps 0 to {_MAX_SCALE} fractional digits; "
                                     f"use {name}(7).")
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
#: SQL Server errors another try can get past: the session is gone (killed 596; the transport broke under it:
#: 64, 121, 233, 10053, 10054, 10060), a lock or memory wait timed out (1222, 8645), or Azure SQL moved or
#: throttled the database (40197, 40501, 40613, 49918-49920). Everything else it refuses (conversion,
#: truncation 2628/8152, constraint 547/2627, permission 229, full disk 1105/9002) will fail the same way again.
_SESSION_LOST = {64, 121, 233, 596, 10053, 10054, 10060}
_TRANSIENT = {1222, 8645, 40197, 40501, 40613, 49918, 49919, 49920}
#: FreeTDS's own errors (20000-20999, ``include/sybdb.h``) whose category in its message table
#: (``src/dblib/dblib.c``) is EXCOMM (the connection: unreachable, read/write failed, EOF, DBPROCESS dead) or
#: EXTIME (20003, timed out). Its other categories (EXCONVERSION such as 20049 "data conversion resulted in
#: overflow", EXUSER, EXPROGRAM, EXCONSISTENCY, EXRESOURCE) are deterministic: retrying cannot help.
_FREETDS_LOST = {20001, 20002, 20003, 20004, 20006, 20008, 20009, 20017, 20020, 20022, 20047, 20056, 20058, 20146,
                 20185, 20203, 20210, 20212, 20213}
#: pymssql's message for a FreeTDS error carries FreeTDS's severity: 9 is EXCOMM, 6 EXTIME.
_FREETDS_SEVERITY = re.compile(r"DB-Lib error message (\d+), severity (\d+)")
_FREETDS_LOST_SEVERITIES = {6, 9}
#: What pymssql's driver layer (MSSQLDriverException, InterfaceError) says when there is no session left;
#: its other driver errors are about a value or a call (``Unable to convert value``), not the connection.
_DRIVER_LOST = ("not connected", "connection is closed", "connection to the database failed")
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
    for column in plan.columns:
        loadable(plan.types[column], where=f"{plan.schema}.{plan.table}: column {plan.header_of(column)!r}")
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


class MsSqlDialect(Dialect):
    types = MsSqlTypes()

    @staticmethod
    def hook(conn_id: str, connection: Any) -> Any:
        """MsSqlHook passes ``str(port)`` through, so a connection without a port would ask FreeTDS for port
        "None": it gets SQL Server's default, 1433, instead."""
        from airflow.providers.microsoft.mssql.hooks.mssql import MsSqlHook

        hook = MsSqlHook(mssql_conn_id=conn_id, connection=connection)
        if hook.connection.port is None:
            hook.connection.port = 1433
        return hook

    @staticmethod
    def connect(hook: Any) -> Any:
        """pymssql, with the FreeTDS its wheel bundles (no system ODBC driver)."""
        return hook.get_conn()

    quote = staticmethod(quote)

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
        schema, timeout = self.options.schema, self.options.lock_timeout_seconds
        quote(schema)  # refuse an unusable name before taking anything
        self.cursor.execute(SESSION)
        self.cursor.execute(LOCK, {"schema": schema, "timeout_ms": max(int(timeout * 1000), 0)})
        row = self.cursor.fetchone()
        result = row[0] if row else None
        if result == -1:
            raise diagnostics.lock_timeout_error(schema, timeout, self._lock_holder())
        if result is None or result < 0:
            raise DexCareWarehouseError(
                f"SQL Server did not grant the load's lock on schema {schema!r} (sp_getapplock returned "
                f"{result}); retry the task."
            )
        self.cursor.execute("SELECT SCHEMA_ID(%s) AS schema_id", (schema,))
        found = self.cursor.fetchone()
        if found is None or found[0] is None:
            self.cursor.execute(f"CREATE SCHEMA {quote(schema)}")
        audit = quote(schema, AUDIT_TABLE)
        existing = self.existing_columns(AUDIT_TABLE)
        if existing is None:
            self.cursor.execute(AUDIT_DDL.format(table=audit))
        elif "kept_newer" not in existing:
            self.cursor.execute(AUDIT_ADD_KEPT_NEWER.format(table=audit))
        self.cursor.execute(AUDIT_VOLUME_INDEX.format(table=audit), {"table": audit})

    def _lock_holder(self) -> str:
        """The session holding the load lock, as far as this login may see (names, never data)."""
        try:
            self.cursor.execute(LOCK_HOLDER)
            row = self.cursor.fetchone()
        except Exception as exc:  # no VIEW SERVER STATE, or the session went: the timeout is the news
            log.debug("Could not read who holds the load lock: %s", type(exc).__name__)
            row = None
        if not row or row[0] is None:
            return "another session (grant VIEW SERVER STATE to see which)"
        session, login, host, program = row
        return f"session {session} (login {login!r}, host {host!r}, program {program!r})"

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
        """Only a new table is created here; an existing table's schema changes wait for :meth:`merge`, since
        ``ALTER TABLE`` takes a schema-modification lock that blocks every reader of the table (NOLOCK and
        snapshot readers too) until the commit: not through the whole upload."""
        st = statements_for(plan, index)
        if plan.create:
            self.cursor.execute(st.create_table())
        self.cursor.execute(st.create_stage())
        return bulk_copy(self.conn, st, header, stream, opener=self.opener, block_size=self.options.block_size,
                         batch_rows=self.options.batch_rows)

    def _change_schemas(self, st: MsSqlStatements) -> int:
        """New columns and the history table, just before the statements that need them; returns the
        baseline rows copied into a history turned on today."""
        plan = st.plan
        if plan.adds:
            self.cursor.execute(st.add_columns())
        if plan.history is None:
            return 0
        if plan.history.create:
            self.cursor.execute(st.create_history())
        elif plan.history.adds:
            self.cursor.execute(st.add_history_columns())
        if not plan.history.baseline:
            return 0
        self.cursor.execute(st.copy_to_history(CHANGE_BASELINE))  # the state its history starts from
        return max(self.cursor.rowcount, 0)

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
        baseline = self._change_schemas(st)  # last: its locks on the table are held only from here to commit
        updated = 0
        update = st.update()
        if update is not None:
            cursor.execute(update, params)
            updated = max(cursor.rowcount, 0)
        cursor.execute(st.insert(), params)
        inserted = max(cursor.rowcount, 0)
        kept_newer = self._kept_newer(st, params)
        self._ensure_key_index(st)
        cursor.execute(st.drop_stage())
        history = inserted + updated + baseline if plan.history is not None else 0
        return MergeCounts(duplicates, inserted, updated, history, kept_newer)

    def _kept_newer(self, st: MsSqlStatements, params: dict[str, Any]) -> int:
        """The file's keys whose row a newer window wrote, which the guard therefore kept (after the upsert).

        Only asked when ``load_audit`` shows a newer window for the table (a backfill or an old window): a day
        loaded in order pays one read of the audit, not another join with the table.
        """
        plan = st.plan
        if plan.create:
            return 0
        self.cursor.execute(
            f"SELECT MAX(window_end) FROM {quote(plan.schema, AUDIT_TABLE)} WHERE target_table = %(table)s",
            {"table": plan.table})
        newest = self.cursor.fetchone()
        if not newest or newest[0] is None or str(newest[0]) <= str(params[WINDOW_END_PARAM]):  # ISO dates
            return 0
        self.cursor.execute(st.kept_newer(), params)
        row = self.cursor.fetchone()
        return int(row[0]) if row else 0

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

    def volume_baseline(self, report_type: str, days: int, limit: int) -> list[int]:
        audit = quote(self.options.schema, AUDIT_TABLE)
        self.cursor.execute(
            f"SELECT TOP (%(limit)s) rows_in_file FROM {audit} WHERE report_type = %(type)s "
            "AND DATEDIFF(day, window_start, window_end) = %(days)s ORDER BY id DESC",
            {"limit": limit, "type": report_type, "days": days},
        )
        return [int(row[0]) for row in self.cursor.fetchall()]

    @staticmethod
    def audit_rows(conn: Any, schema: str, report_ids: Sequence[str]) -> list[dict[str, Any]]:
        """``new_columns`` comes back from its JSON text as a list. The read ends with a rollback: pymssql keeps
        a transaction open whenever autocommit is off, and the load that may follow wants none pending."""
        if not report_ids:
            return []
        table = quote(schema, AUDIT_TABLE)
        cursor = conn.cursor()
        try:
            cursor.execute("SELECT OBJECT_ID(%s, N'U') AS audit_table, COL_LENGTH(%s, 'kept_newer') AS kept_newer",
                           (table, table))
            found = cursor.fetchone()
            if found is None or found[0] is None:
                return []
            # A table the upgrade has not reached yet lacks kept_newer (the caller reads it as 0).
            fields = [f for f in AUDIT_FIELDS if f != "kept_newer" or found[1] is not None]
            cursor.execute(
                "SELECT {} FROM {} WHERE report_id IN ({}) ORDER BY id".format(
                    ", ".join(quote(f) for f in fields), table, ", ".join(["%s"] * len(report_ids))),
                tuple(report_ids),
            )
            rows = [dict(zip(fields, row, strict=True)) for row in cursor.fetchall()]
        finally:
            conn.rollback()
        for row in rows:
            row["new_columns"] = json.loads(row["new_columns"] or "[]")
        return rows

    # --- Errors -------------------------------------------------------------------------------------------

    def translate(self, exc: BaseException, *, current: str, committing: bool) -> DexCareLoadError | None:
        import pymssql
        from pymssql import _mssql

        if not isinstance(exc, pymssql.Error | _mssql.MSSQLException):
            return None
        number = error_number(exc)
        cause = retry_cause(exc, number)
        if cause is not None:
            if committing:
                return diagnostics.commit_lost_error(f"SQL Server/FreeTDS error {number}")
            return diagnostics.load_interrupted_error(f"The load {cause}", current,
                                                      f"{type(exc).__name__}, error {number}")
        # Anything else SQL Server or FreeTDS refused: it will refuse it again. Its messages can quote row
        # values (conversion and truncation errors do), so only the error number is kept, and the text only
        # for permission errors.
        detail = f": {_server_text(exc)}" if number in _SAFE_MESSAGES else ""
        return diagnostics.load_refused_error("SQL Server", current, f"error {number}, {type(exc).__name__}{detail}")


def retry_cause(exc: BaseException, number: int | None) -> str | None:
    """Why another try can succeed (the words for the message), or ``None`` if it cannot: split by cause,
    never by where the error came from (FreeTDS's conversion errors are as final as the server's)."""
    import pymssql
    from pymssql import _mssql

    if number == _DEADLOCK:
        return "was chosen as a deadlock victim"
    if number in _TRANSIENT:
        return "hit a transient SQL Server condition (a timeout, or Azure SQL moving the database)"
    if number in _SESSION_LOST or number in _FREETDS_LOST:
        return "lost the warehouse connection"
    severity = getattr(exc, "severity", None) if isinstance(exc, _mssql.MSSQLDatabaseException) else None
    text = " ".join(str(a.decode("utf-8", "replace") if isinstance(a, bytes) else a) for a in _flat_args(exc))
    found = _FREETDS_SEVERITY.search(text)
    if found and int(found.group(1)) == number:
        severity = int(found.group(2))
    if number is not None and 20000 <= number < 21000 and severity in _FREETDS_LOST_SEVERITIES:
        return "lost the warehouse connection"
    if number is None and isinstance(exc, pymssql.InterfaceError | _mssql.MSSQLDriverException) and any(
        phrase in text.lower() for phrase in _DRIVER_LOST
    ):
        return "lost the warehouse connection"
    return None


def _flat_args(exc: BaseException) -> list[Any]:
    out: list[Any] = []
    for arg in exc.args:
        out.extend(arg if isinstance(arg, tuple) else (arg,))
    return out


DIALECT = MsSqlDialect
