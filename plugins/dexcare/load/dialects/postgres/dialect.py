"""PostgreSQL: COPY into a temp stage (or straight into a table this load creates), then one upsert.

The run holds ``pg_advisory_xact_lock`` for its schema, so two runs on the same schema queue instead of
interleaving, and everything (DDL included) happens in one transaction. Values travel only as COPY data or
bound parameters; identifiers only through ``psycopg.sql.Identifier``.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any, BinaryIO, ClassVar

import psycopg
from psycopg import sql
from psycopg.pq import TransactionStatus
from psycopg.rows import dict_row

from dexcare.exceptions import DexCareLoadError, DexCareSchemaError
from dexcare.load import diagnostics
from dexcare.load.audit import AUDIT_FIELDS, AUDIT_TABLE
from dexcare.load.csv_stream import Header
from dexcare.load.dialects.base import Dialect, MergeCounts
from dexcare.load.dialects.postgres.diagnostics import pg_cast_error, pg_copy_error, staged_line
from dexcare.load.dialects.postgres.sql import TEXT, PostgresStatements
from dexcare.load.dialects.postgres.staging import copy_stream
from dexcare.load.plan import CHANGE_BASELINE, CHANGE_INSERT, LINEAGE, WINDOW_END_PARAM, LoadPlan, key_index_name

log = logging.getLogger(__name__)

#: Same constant for every schema; the second half of the lock key is the schema's hash.
_LOCK_NAMESPACE = 0x44455843  # "DEXC"

AUDIT_DDL = """
CREATE TABLE IF NOT EXISTS {table} (
    id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    dag_id             text,
    run_id             text,
    report_id          text NOT NULL,
    report_type        text NOT NULL,
    target_table       text NOT NULL,
    file_uri           text NOT NULL,
    file_sha256        text,
    window_start       date,
    window_end         date,
    rows_in_file       bigint NOT NULL,
    duplicates_in_file bigint NOT NULL,
    inserted           bigint NOT NULL,
    updated            bigint NOT NULL,
    unchanged          bigint NOT NULL,
    new_columns        text[] NOT NULL DEFAULT '{{}}',
    started_at         timestamptz NOT NULL,
    finished_at        timestamptz NOT NULL,
    kept_newer         bigint NOT NULL DEFAULT 0
)
"""

#: ``load_audit`` as its first release made it lacks ``kept_newer``: added in the load's transaction, 0 in old rows
#: (a catalog change only, since PostgreSQL 11 fills a constant default without rewriting the table).
AUDIT_ADD_KEPT_NEWER = "ALTER TABLE {table} ADD COLUMN IF NOT EXISTS kept_newer bigint NOT NULL DEFAULT 0"


class PostgresTypes:
    text = TEXT
    identity = "bigint GENERATED ALWAYS AS IDENTITY"
    _LINEAGE: ClassVar[dict[str, str]] = {"text": TEXT, "date": "date", "timestamp": "timestamp with time zone"}

    def key_text(self, keys: int) -> str:
        return TEXT  # indexable at any length; new tables give text keys COLLATE "C" (byte equality)

    def lineage(self, kind: str) -> str:
        return self._LINEAGE[kind]

    def is_text(self, sql_type: str) -> bool:
        return sql_type == TEXT


#: SQLSTATE classes another try can get past: the connection (08), a transaction the server rolled back
#: (40: deadlock, serialization), the server shutting down or cancelling (57); and two states of class 53/55
#: that pass (too many connections, a lock not available). Disk full (53100), out of memory (53200) and the
#: rest of OperationalError's classes need someone to act first, like data (22) and constraint (23) errors.
_RETRY_CLASSES = ("08", "40", "57")
_RETRY_STATES = {"53300", "55P03"}


def _retryable(exc: psycopg.Error) -> bool:
    state = exc.sqlstate
    return state is None or state.startswith(_RETRY_CLASSES) or state in _RETRY_STATES

#: The volume guard's one query per report reads the newest loads of a report type and window length from it.
AUDIT_VOLUME_INDEX = """
CREATE INDEX IF NOT EXISTS load_audit_volume ON {table} (report_type, (window_end - window_start), id DESC)
"""


def _lock_key(schema: str) -> int:
    return int.from_bytes(hashlib.sha256(schema.encode()).digest()[:4], "big", signed=True)


class PostgresDialect(Dialect):
    types = PostgresTypes()
    cursor: psycopg.Cursor

    @staticmethod
    def hook(conn_id: str, connection: Any) -> Any:
        from airflow.providers.postgres.hooks.postgres import PostgresHook

        return PostgresHook(postgres_conn_id=conn_id, connection=connection)

    @staticmethod
    def connect(hook: Any) -> psycopg.Connection:
        """PostgresHook 7 returns a psycopg 3 connection when psycopg 3 and SQLAlchemy 2 are installed;
        otherwise we connect ourselves from the same connection fields."""
        conn = hook.get_conn()
        if isinstance(conn, psycopg.Connection):
            return conn
        conn.close()
        airflow_conn = hook.connection
        extra = {k: v for k, v in airflow_conn.extra_dejson.items() if k not in ("cursor", "iam", "sslcert_path")}
        return psycopg.connect(
            host=airflow_conn.host or None,
            port=airflow_conn.port or None,
            user=airflow_conn.login or None,
            password=airflow_conn.password or None,
            dbname=airflow_conn.schema or None,
            **extra,
        )

    @staticmethod
    def quote(*parts: str) -> str:
        return sql.Identifier(*parts).as_string(None)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        if self.conn.info.transaction_status != TransactionStatus.IDLE:
            raise DexCareLoadError("load_reports needs an idle connection: it commits or rolls back its own "
                                   "transaction, so commit or roll back yours first.")
        with self.conn.transaction(), self.cursor:
            yield

    def begin(self) -> None:
        cursor, options = self.cursor, self.options
        if options.work_mem:
            cursor.execute("SELECT set_config('work_mem', %s, true), set_config('maintenance_work_mem', %s, true)",
                           [options.work_mem, options.work_mem])
        if options.temp_buffers:
            self._set_temp_buffers(options.temp_buffers)
        cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [_LOCK_NAMESPACE, _lock_key(options.schema)])
        cursor.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(options.schema)))
        cursor.execute(sql.SQL(AUDIT_DDL).format(table=sql.Identifier(options.schema, AUDIT_TABLE)))
        if "kept_newer" not in (self.existing_columns(AUDIT_TABLE) or {}):  # ALTER only when needed: owner only
            cursor.execute(sql.SQL(AUDIT_ADD_KEPT_NEWER).format(table=sql.Identifier(options.schema, AUDIT_TABLE)))
        self._ensure_volume_index()

    def _ensure_volume_index(self) -> None:
        """Created by the load when it owns ``load_audit`` (it made it); CREATE INDEX, even IF NOT EXISTS, is
        refused to anyone else, so a table another role made only gets a warning saying what its owner runs."""
        audit = sql.Identifier(self.options.schema, AUDIT_TABLE)
        index = sql.Identifier(self.options.schema, "load_audit_volume")
        found = self.cursor.execute(
            "SELECT to_regclass(%s) IS NOT NULL, pg_has_role(c.relowner, 'USAGE') FROM pg_class c WHERE c.oid = "
            "to_regclass(%s)", [index.as_string(self.conn), audit.as_string(self.conn)]).fetchone()
        exists, owned = found if found is not None else (False, False)  # no row: load_audit is not there
        statement = sql.SQL(AUDIT_VOLUME_INDEX).format(table=audit)
        if exists:
            return
        if owned:
            self.cursor.execute(statement)
            return
        log.warning("%s has no index load_audit_volume and this login does not own the table, so the volume "
                    "guard's query reads the whole table; let its owner run: %s", audit.as_string(self.conn),
                    statement.as_string(self.conn).strip())

    def _set_temp_buffers(self, size: str) -> None:
        """Let the stage live in memory (COPY and scans ~30% faster); only possible before the session's
        first temp table, so on a reused connection it quietly stays as it was."""
        try:
            with self.conn.transaction():
                self.cursor.execute("SELECT set_config('temp_buffers', %s, true)", [size])
        except psycopg.errors.InvalidParameterValue:
            log.debug("temp_buffers already fixed for this session; staging uses the server's setting")

    def resolve_type(self, name: str, *, where: str) -> str:
        """The canonical text comes from PostgreSQL's own ``regtype`` output (``timestamptz`` ->
        ``timestamp with time zone``), which is always valid SQL, so the configured string itself is never
        pasted into a statement."""
        try:
            with self.conn.transaction():
                row = self.cursor.execute("SELECT to_regtype(%s)::text", [name]).fetchone()
        except (psycopg.errors.DataError, psycopg.errors.SyntaxError):
            row = None
        if row is None or row[0] is None:
            raise DexCareSchemaError(f"{where}: type {name!r} is not a PostgreSQL type.")
        return str(row[0])

    def existing_columns(self, table: str) -> dict[str, str] | None:
        rows = self.cursor.execute(
            """
            SELECT a.attname, format_type(a.atttypid, a.atttypmod)
              FROM pg_class c
              JOIN pg_namespace n ON n.oid = c.relnamespace
              LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
             WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p')
             ORDER BY a.attnum
            """,
            [self.options.schema, table],
        ).fetchall()
        if not rows:
            return None
        return {name: typ for name, typ in rows if name is not None}

    # --- Staging ------------------------------------------------------------------------------------------

    def _target(self, plan: LoadPlan) -> sql.Identifier:
        return sql.Identifier(plan.schema, plan.table)

    @staticmethod
    def _temp(what: str, index: int) -> sql.Identifier:
        return sql.Identifier("pg_temp", f"_dexcare_{what}_{index}")

    def _stage(self, plan: LoadPlan, index: int) -> sql.Identifier:
        """Where the file is staged: a table this load creates is filled directly, an existing one via a temp stage."""
        return self._target(plan) if plan.create else self._temp("stage", index)

    def stage(self, plan: LoadPlan, header: Header, stream: BinaryIO, index: int) -> int:
        """A table this load creates has nothing to merge with, so the file goes straight into it (one COPY
        instead of COPY + INSERT ... SELECT, about 40% of a first load) and the few repeats are deleted
        afterwards. An existing table gets a temp stage, all text, dropped with the transaction.
        """
        into = self._stage(plan, index)
        if not plan.create:
            self.cursor.execute(
                sql.SQL("CREATE TEMP TABLE {} ({}) ON COMMIT DROP").format(
                    into, sql.SQL(", ").join(sql.SQL("{} text").format(sql.Identifier(c)) for c in plan.columns)
                )
            )
        try:
            # A savepoint, so that after a cast error the transaction can still find the row at fault.
            with self.conn.transaction():
                if plan.create:
                    # Created in the COPY's own savepoint, so the COPY may write its rows frozen (FREEZE).
                    self._create_table(plan)
                    self._lineage_defaults(into, plan.lineage)
                rows = copy_stream(
                    self.cursor, into, list(plan.columns), header, stream,
                    block_size=self.options.block_size,
                    force_null=plan.casts if plan.create else (),
                    freeze=plan.create,
                )
        except psycopg.errors.DataError as exc:
            # Class 22: ragged row, open quote, bad byte, or (new table) a value of the wrong type.
            raise pg_copy_error(
                self.cursor, exc, header, plan.columns, plan.types if plan.create else None, plan.source,
                self.opener,
            ) from None
        if plan.create:
            self._lineage_defaults(into, None)
        self._refuse_keys_ending_in_space(plan, into)
        return rows

    def _refuse_keys_ending_in_space(self, plan: LoadPlan, stage: sql.Composable) -> None:
        """The rule SQL Server forces (its ``=`` and unique indexes ignore trailing spaces), kept here too so
        a file loads into the same visits on both warehouses: a text key ending in a space stops the load."""
        keys = [k for k in plan.keys if plan.types[k] == TEXT]
        if not keys:
            return
        ends = [sql.SQL("{} LIKE '% '").format(sql.Identifier(k)) for k in keys]  # twice as fast as right()
        row = self.cursor.execute(
            sql.SQL("SELECT ctid, {} FROM {} WHERE {} ORDER BY ctid LIMIT 1").format(
                sql.SQL(", ").join(ends), stage, sql.SQL(" OR ").join(ends))
        ).fetchone()
        if row is None:
            return
        column = next(k for k, found in zip(keys, row[1:], strict=True) if found)
        line = staged_line(self.cursor, stage, row[0], plan.source, self.opener)
        raise diagnostics.key_trailing_space_error(plan.source, line, plan.header_of(column))

    def _create_table(self, plan: LoadPlan) -> None:
        """Text key columns get ``COLLATE "C"``: ids need byte equality, not linguistic order, and the
        index then builds twice as fast."""
        self.cursor.execute(
            sql.SQL("CREATE TABLE {} ({})").format(
                self._target(plan),
                sql.SQL(", ").join(
                    sql.SQL("{} {}{}").format(
                        sql.Identifier(c), sql.SQL(t), sql.SQL(' COLLATE "C"' if c in plan.keys and t == TEXT else "")
                    )
                    for c, t in plan.table_columns
                ),
            )
        )

    def _lineage_defaults(self, table: sql.Composable, values: Any) -> None:
        """Set (or, with ``None``, drop) the lineage columns' defaults around a COPY into a new table.

        The values are ours (a validated GUID, the report type, dates), rendered by psycopg's own literal
        quoting; nothing from the file goes into the statement.
        """
        actions = [
            sql.SQL("ALTER COLUMN {} {}").format(
                sql.Identifier(c.name),
                sql.SQL("SET DEFAULT {}").format(sql.Literal(values[c.param])) if values else sql.SQL("DROP DEFAULT"),
            )
            for c in LINEAGE
        ]
        self.cursor.execute(sql.SQL("ALTER TABLE {} {}").format(table, sql.SQL(", ").join(actions)))

    # --- Dedupe and upsert --------------------------------------------------------------------------------

    def _add_columns(self, table: sql.Composable, adds: tuple[tuple[str, str], ...]) -> None:
        self.cursor.execute(
            sql.SQL("ALTER TABLE {} {}").format(
                table,
                sql.SQL(", ").join(sql.SQL("ADD COLUMN {} {}").format(sql.Identifier(c), sql.SQL(t)) for c, t in adds),
            )
        )

    def _statements(self, plan: LoadPlan, index: int) -> PostgresStatements:
        return PostgresStatements(
            plan,
            stage=self._stage(plan, index),
            # A table filled by COPY holds its own types; the temp stage is all text, cast by the upsert.
            types={c: TEXT for c in plan.columns} if plan.create else plan.types,
            repeats=self._temp("repeats", index),
        )

    def merge(self, plan: LoadPlan, rows_in_file: int, index: int) -> MergeCounts:
        cursor = self.cursor
        if plan.adds:
            self._add_columns(self._target(plan), plan.adds)
        statements = self._statements(plan, index)
        if plan.history is not None:
            if plan.history.create:
                cursor.execute(sql.SQL("CREATE TABLE {} ({})").format(statements.history, sql.SQL(", ").join(
                    sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(t)) for c, t in plan.history.table_columns)))
            elif plan.history.adds and statements.history is not None:
                self._add_columns(statements.history, plan.history.adds)
        baseline = 0
        if plan.history is not None and plan.history.baseline:  # before anything changes: the state it starts from
            baseline = cursor.execute(statements.copy_to_history(CHANGE_BASELINE)).rowcount
        counts = self._dedupe_and_upsert(plan, statements, rows_in_file)
        counts = counts._replace(kept_newer=self._kept_newer(plan, statements))
        # Dropped now, not at commit, so the next file's stage has the temp buffers to itself.
        for name in (statements.repeats,) if plan.create else (statements.stage, statements.repeats):
            cursor.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(name))
        self._ensure_key_index(plan)
        return counts._replace(history=counts.history + baseline)

    def _dedupe_and_upsert(self, plan: LoadPlan, st: PostgresStatements, rows_in_file: int) -> MergeCounts:
        cursor = self.cursor
        if plan.version_instant:
            self._check_versions(plan, st)
        try:
            with self.conn.transaction():  # a typed key is cast here first
                repeats = cursor.execute(st.find_repeats()).rowcount
        except psycopg.errors.DataError as exc:
            raise self._cast_error(plan, st, exc) from None
        if repeats > 0:
            row = cursor.execute(st.has_empty_key()).fetchone()
            if row and row[0]:
                found = cursor.execute(st.first_empty_key()).fetchone()
                line = staged_line(cursor, st.stage, found[0], plan.source, self.opener) if found else "?"
                raise diagnostics.empty_key_error(plan.source, line, plan.keys)
        duplicates = 0
        if plan.create:
            if repeats:
                try:
                    with self.conn.transaction():  # the version column may be cast here
                        duplicates = cursor.execute(st.delete_losers()).rowcount
                except psycopg.errors.DataError as exc:
                    raise self._cast_error(plan, st, exc) from None
            inserted = rows_in_file - duplicates
            # The table holds exactly this file's rows: they all go to the history as they are.
            history = cursor.execute(st.copy_to_history(CHANGE_INSERT)).rowcount if st.history is not None else 0
            return MergeCounts(duplicates, inserted, 0, history)
        try:
            with self.conn.transaction():
                # The losers leave the stage in the upsert's savepoint: after a cast error (the version's here,
                # any column's in the upsert) they are back, and a staged row's line is its place in the heap.
                if repeats:
                    duplicates = cursor.execute(st.delete_losers()).rowcount
                if st.history is not None or self.conn.info.server_version < 150000:
                    row = cursor.execute(st.update_then_insert(), plan.lineage).fetchone()
                    inserted, updated = (int(v) for v in row) if row else (0, 0)
                    return MergeCounts(duplicates, inserted, updated, inserted + updated if st.history else 0)
                before = self._inserted_so_far(st.target)
                cursor.execute(st.merge(), plan.lineage)
                written = cursor.rowcount
                inserted = self._inserted_so_far(st.target) - before
        except psycopg.errors.DataError as exc:
            raise self._cast_error(plan, st, exc) from None
        return MergeCounts(duplicates, inserted, written - inserted)

    def _kept_newer(self, plan: LoadPlan, st: PostgresStatements) -> int:
        """The file's keys whose row a newer window wrote, which the guard therefore kept (after the upsert).

        Only asked when ``load_audit`` shows a newer window for the table (a backfill or an old window): a day
        loaded in order pays one read of the audit, not another pass over the table.
        """
        if plan.create:
            return 0
        newest = self.cursor.execute(
            sql.SQL("SELECT max(window_end) FROM {} WHERE target_table = %s").format(
                sql.Identifier(plan.schema, AUDIT_TABLE)), [plan.table]).fetchone()
        if not newest or newest[0] is None or newest[0] <= plan.lineage[WINDOW_END_PARAM]:
            return 0
        row = self.cursor.execute(st.kept_newer(), plan.lineage).fetchone()
        return int(row[0]) if row else 0

    def _check_versions(self, plan: LoadPlan, st: PostgresStatements) -> None:
        """Every value of an undeclared version column must name an instant (:mod:`dexcare.load.instants`),
        since that is how repeats are ordered; the first that does not fails the load, naming its line."""
        assert plan.version is not None
        header = plan.header_of(plan.version)
        try:
            with self.conn.transaction():
                found = self.cursor.execute(st.first_bad_version()).fetchone()
        except psycopg.errors.DataError:
            # The right shape but no such date (30 February): only PostgreSQL 16+ can say which row it is.
            found = None
            with suppress(psycopg.Error), self.conn.transaction():
                found = self.cursor.execute(st.first_invalid_version()).fetchone()
            if found is None:
                raise diagnostics.version_error(plan.source, "?", header) from None
        if found is not None:
            line = staged_line(self.cursor, st.stage, found[0], plan.source, self.opener)
            raise diagnostics.version_error(plan.source, line, header)

    def _cast_error(self, plan: LoadPlan, st: PostgresStatements, exc: psycopg.Error) -> DexCareLoadError:
        return pg_cast_error(self.cursor, st.stage, plan.headers, plan.columns, st.types, exc,
                                         plan.source, self.opener)

    def _inserted_so_far(self, table: sql.Composable) -> int:
        """Rows this transaction inserted into ``table``: exact and O(1), unlike counting the table."""
        row = self.cursor.execute(
            sql.SQL("SELECT pg_stat_get_xact_tuples_inserted(%s::regclass)"), [table.as_string(self.cursor)]
        ).fetchone()
        return int(row[0]) if row else 0

    def _ensure_key_index(self, plan: LoadPlan) -> None:
        """Add the unique index on the key if the table has none; refuse clearly if the data has duplicates.

        It comes after the upsert: building it once over a freshly filled table is several times cheaper
        than maintaining it row by row.
        """
        row = self.cursor.execute(
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
            [plan.schema, plan.table, list(plan.keys)],
        ).fetchone()
        if row and row[0]:
            return
        try:
            with self.conn.transaction():
                self.cursor.execute(
                    sql.SQL("CREATE UNIQUE INDEX {} ON {} ({})").format(
                        sql.Identifier(key_index_name(plan.table, plan.keys)),
                        self._target(plan),
                        sql.SQL(", ").join(sql.Identifier(k) for k in plan.keys),
                    )
                )
        except psycopg.errors.UniqueViolation:
            raise diagnostics.duplicate_keys_error(plan.schema, plan.table, plan.keys) from None

    def record_audit(self, entry: dict[str, Any]) -> None:
        self.cursor.execute(
            sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
                sql.Identifier(self.options.schema, AUDIT_TABLE),
                sql.SQL(", ").join(sql.Identifier(f) for f in AUDIT_FIELDS),
                sql.SQL(", ").join(sql.Placeholder(f) for f in AUDIT_FIELDS),
            ),
            {f: entry[f] for f in AUDIT_FIELDS},
        )

    def volume_baseline(self, report_type: str, days: int, limit: int) -> list[int]:
        rows = self.cursor.execute(
            sql.SQL("SELECT rows_in_file FROM {} WHERE report_type = %s AND window_end - window_start = %s "
                    "ORDER BY id DESC LIMIT %s").format(sql.Identifier(self.options.schema, AUDIT_TABLE)),
            [report_type, days, limit],
        ).fetchall()
        return [int(row[0]) for row in rows]

    @staticmethod
    def audit_rows(conn: Any, schema: str, report_ids: Sequence[str]) -> list[dict[str, Any]]:
        table = sql.Identifier(schema, AUDIT_TABLE)
        with conn.transaction(), conn.cursor(row_factory=dict_row) as cursor:
            if cursor.execute("SELECT to_regclass(%s) AS audit", [table.as_string(conn)]).fetchone()["audit"] is None:
                return []
            # Every column: a table the upgrade has not reached yet lacks kept_newer (the caller reads it as 0).
            cursor.execute(sql.SQL("SELECT * FROM {} WHERE report_id = ANY(%s) ORDER BY id").format(table),
                           [list(report_ids)])
            return [{f: row[f] for f in AUDIT_FIELDS if f in row} for row in cursor.fetchall()]

    # --- Errors -------------------------------------------------------------------------------------------

    def translate(self, exc: BaseException, *, current: str, committing: bool) -> DexCareLoadError | None:
        if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError) and _retryable(exc):
            if committing:
                return diagnostics.commit_lost_error(type(exc).__name__)
            primary = (exc.diag.message_primary if isinstance(exc, psycopg.Error) else None) or "connection closed"
            what = ("Lost the warehouse connection" if (exc.sqlstate or "08").startswith(("08", "57P"))
                    else f"PostgreSQL interrupted the load (SQLSTATE {exc.sqlstate})")
            return diagnostics.load_interrupted_error(what, current, f"{type(exc).__name__}: {primary}")
        if isinstance(exc, psycopg.Error):
            # Anything else PostgreSQL refused (permissions, a constraint someone added, a full disk): another
            # try fails the same way. Its detail and context can quote row values, so only the SQLSTATE and,
            # outside data errors, the primary message are kept.
            primary = "" if (exc.sqlstate or "").startswith("22") else f": {exc.diag.message_primary}"
            return diagnostics.load_refused_error("PostgreSQL", current,
                                                  f"SQLSTATE {exc.sqlstate}, {type(exc).__name__}{primary}")
        return None


DIALECT = PostgresDialect
