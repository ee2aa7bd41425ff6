"""Load one DAG run's reports into PostgreSQL in a single transaction, without Airflow.

Everything a run does (create or widen tables, stage, merge, audit) happens inside one transaction behind
a transaction-level advisory lock, so after any failure every table is exactly as before and two runs on
the same schema (a backfill next to the daily run) queue instead of interleaving. Re-running the same run
is safe: unchanged rows are not rewritten, so a retry after an unknown commit outcome is harmless.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import psycopg
from psycopg import sql
from psycopg.pq import TransactionStatus

from dexcare.load.audit import ensure_audit_table, record_load
from dexcare.load.csv_stream import (
    Header,
    Opener,
    copy_stream,
    open_report,
    read_header,
    record_line,
    translate_copy_error,
)
from dexcare.load.errors import (
    DexCareCastError,
    DexCareCSVError,
    DexCareLoadError,
    DexCareSchemaError,
    DexCareWarehouseError,
)
from dexcare.load.identifiers import normalize_headers, resolve_columns
from dexcare.load.merge import LINEAGE_PARAMS, MergePlan
from dexcare.load.options import DEFAULT_KEY, DEFAULT_SCHEMA, LoadOptions, ReportFile, table_for
from dexcare.load.target import TEXT, Target, ensure_key_index, ensure_target, existing_columns, resolve_type
from dexcare.report import ReportType

__all__ = ["DEFAULT_KEY", "DEFAULT_SCHEMA", "LoadOptions", "ReportFile", "load_reports", "table_for"]

log = logging.getLogger(__name__)

#: Same constant for every schema; the second half of the lock key is the schema's hash.
_LOCK_NAMESPACE = 0x44455843  # "DEXC"
#: COPY's error context: ``COPY t, line 3, column updated_at: "<value>"`` (the value is never kept).
_COPY_COLUMN = re.compile(r"\bline (\d+), column ([^:\s]+)")
#: Malformed CSV and bad encoding, as opposed to a value that does not fit its column's type.
_CSV_SQLSTATES = {"22P04", "22021", "22P05"}


class _HashingReader:
    """Hash the bytes as they pass, so verifying the file costs no second read."""

    def __init__(self, raw: BinaryIO, hasher: Any) -> None:
        self._raw = raw
        self._hasher = hasher

    def read(self, size: int = -1) -> bytes:
        block = self._raw.read(size)
        if self._hasher is not None:
            self._hasher.update(block)
        return block


def _iso(value: Any) -> Any:
    return value.isoformat() if isinstance(value, dt.date | dt.datetime) else value


def _record_of(cursor: psycopg.Cursor, stage: sql.Composable, tid: Any) -> int:
    """Data record number of a staged row (1 = first after the header): heap order is file order."""
    row = cursor.execute(sql.SQL("SELECT count(*) FROM {} WHERE ctid <= %s::tid").format(stage), [tid]).fetchone()
    return int(row[0]) if row else 0


@dataclass
class _Run:
    conn: psycopg.Connection
    options: LoadOptions
    dag_id: str | None
    run_id: str | None
    opener: Opener
    loaded_at: dt.datetime
    type_cache: dict[str, str] = field(default_factory=dict)

    def resolve_types(self, cursor: psycopg.Cursor, rtype: ReportType, columns: Sequence[str],
                      source: str) -> dict[str, str]:
        resolved = {}
        for column, name in self.options.types_for(rtype).items():
            if column not in columns:
                continue
            if name not in self.type_cache:
                self.type_cache[name] = resolve_type(cursor, name, where=f"column_types[{rtype.value!r}]")
            resolved[column] = self.type_cache[name]
        return resolved

    def load_one(self, cursor: psycopg.Cursor, report: ReportFile, index: int) -> dict[str, Any]:
        started = dt.datetime.now(dt.UTC)
        source = report.uri
        rtype = report.report_type
        schema = self.options.schema
        hasher = hashlib.sha256() if self.options.verify_sha256 and report.sha256 else None
        try:
            raw = self.opener(report.uri)
        except OSError as exc:
            raise DexCareLoadError(f"{source}: cannot open the report file ({exc.strerror or exc}).") from None
        with raw:
            stream = _HashingReader(raw, hasher)
            header = read_header(stream, source=source)  # type: ignore[arg-type]
            columns = normalize_headers(header.fields, source=source)
            keys = resolve_columns(self.options.keys_for(rtype), columns, what="key", source=source)
            version = self.options.version_for(rtype)
            version_col = (
                resolve_columns([version], columns, what="version", source=source)[0] if version else None
            )
            configured = self.resolve_types(cursor, rtype, columns, source)
            table = table_for(rtype)
            params = {
                "report_id": report.report_id,
                "report_type": rtype.value,
                "window_start": report.window_start,
                "window_end": report.window_end,
                "loaded_at": self.loaded_at,
            }
            temp = [sql.Identifier("pg_temp", f"_dexcare_{what}_{index}") for what in ("stage", "dup_keys", "losers")]
            direct = existing_columns(cursor, schema, table) is None
            target, into, types = self._prepare(cursor, direct, table, columns, configured, keys, temp[0], params,
                                                source)
            try:
                # A savepoint, so that after a cast error the transaction can still find the row at fault.
                with self.conn.transaction():
                    rows_in_file = copy_stream(
                        cursor, into, columns, header, stream,  # type: ignore[arg-type]
                        block_size=self.options.block_size,
                        force_null=[c for c in columns if target and target.column_types[c] != TEXT],
                    )
            except psycopg.errors.DataError as exc:
                # Class 22: ragged row, open quote, bad byte, or (direct path) a value of the wrong type.
                raise self._copy_error(cursor, exc, header, columns, target, source) from None
            if direct:
                self._lineage_defaults(cursor, into, None)
        if hasher is not None and report.sha256 and hasher.hexdigest() != report.sha256.lower():
            raise DexCareCSVError(
                f"{source}: sha256 of the file is not the one recorded at download ({report.sha256}); "
                "the file changed or was truncated since: download the report again."
            )
        if report.rows is not None and report.rows != rows_in_file:
            log.warning("%s: the download counted %d rows, COPY read %d", source, report.rows, rows_in_file)
        if target is None:
            target = ensure_target(cursor, schema, table, columns, configured, keys=keys, source=source)
            types = target.column_types
        plan = MergePlan(target.ident, into, columns, keys, types, version_col, dup_keys=temp[1], losers=temp[2])
        duplicates, inserted, updated = self._merge(cursor, plan, params, direct, header.fields, source,
                                                    rows_in_file)
        for name in temp:
            cursor.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(name))
        ensure_key_index(cursor, schema, target.table, keys)
        distinct = rows_in_file - duplicates
        entry = {
            "dag_id": self.dag_id,
            "run_id": self.run_id,
            "report_id": report.report_id,
            "report_type": rtype.value,
            "target_table": target.table,
            "file_uri": report.uri,
            "file_sha256": report.sha256,
            "window_start": report.window_start,
            "window_end": report.window_end,
            "rows_in_file": rows_in_file,
            "duplicates_in_file": duplicates,
            "inserted": inserted,
            "updated": updated,
            "unchanged": distinct - inserted - updated,
            "new_columns": target.new_columns,
            "started_at": started,
            "finished_at": dt.datetime.now(dt.UTC),
        }
        record_load(cursor, schema, entry)
        return entry

    def _merge(self, cursor: psycopg.Cursor, plan: MergePlan, params: dict[str, Any], direct: bool,
               headers: Sequence[str], source: str, rows_in_file: int) -> tuple[int, int, int]:
        """Dedupe and merge; returns (duplicates in file, inserted, updated)."""
        cursor.execute(plan.find_dup_keys())
        has_dups = cursor.rowcount > 0
        duplicates = 0
        if has_dups:
            row = cursor.execute(plan.has_empty_key()).fetchone()
            if row and row[0]:
                found = cursor.execute(
                    sql.SQL("SELECT ctid FROM {} WHERE {} ORDER BY ctid LIMIT 1").format(
                        plan.stage, plan.empty_key()
                    )
                ).fetchone()
                line = self._line_of(cursor, plan.stage, found[0], source) if found else "?"
                raise DexCareSchemaError(
                    f"{source}: line {line}: empty key ({', '.join(plan.keys)}); every row needs its key "
                    "to be deduplicated and merged."
                )
            # The planner knows nothing of a fresh temp table; without statistics it guesses a million
            # duplicate keys and picks a merge join that sorts the whole stage (3x slower).
            cursor.execute(sql.SQL("ANALYZE {}").format(plan.dup_keys))
            try:
                with self.conn.transaction():  # the version column may be cast here
                    cursor.execute(plan.delete_losers() if direct else plan.find_losers())
            except psycopg.errors.DataError as exc:
                raise self._cast_error(cursor, plan.stage, headers, plan.columns, plan.types, exc,
                                       source) from None
            duplicates = cursor.rowcount
        if direct:
            return duplicates, rows_in_file - duplicates, 0
        try:
            with self.conn.transaction():
                if self.conn.info.server_version < 150000:
                    row = cursor.execute(plan.merge(duplicates > 0), params).fetchone()
                    inserted, updated = (int(v) for v in row) if row else (0, 0)
                    return duplicates, inserted, updated
                before = self._inserted_so_far(cursor, plan.target)
                cursor.execute(plan.merge_statement(duplicates > 0), params)
                written = cursor.rowcount
                inserted = self._inserted_so_far(cursor, plan.target) - before
        except psycopg.errors.DataError as exc:
            raise self._cast_error(cursor, plan.stage, headers, plan.columns, plan.types, exc, source) from None
        return duplicates, inserted, written - inserted

    def _prepare(self, cursor: psycopg.Cursor, direct: bool, table: str, columns: Sequence[str],
                 configured: Mapping[str, str], keys: Sequence[str], stage: sql.Composable,
                 params: dict[str, Any], source: str) -> tuple[Target | None, sql.Composable, dict[str, str]]:
        """Where the COPY goes: (target if created now, the table to COPY into, types for the plan).

        A table this load creates has nothing to merge with, so the file goes straight into it (one COPY
        instead of COPY + INSERT ... SELECT, about 40% of a first load) and the few repeats are deleted
        afterwards. An existing table gets a temp stage, all text, dropped with the transaction.
        """
        if direct:
            target = ensure_target(cursor, self.options.schema, table, columns, configured, keys=keys,
                                   source=source)
            self._lineage_defaults(cursor, target.ident, params)
            return target, target.ident, {c: TEXT for c in columns}  # the table itself holds the types
        cursor.execute(
            sql.SQL("CREATE TEMP TABLE {} ({}) ON COMMIT DROP").format(
                stage, sql.SQL(", ").join(sql.SQL("{} text").format(sql.Identifier(c)) for c in columns)
            )
        )
        return None, stage, {}

    @staticmethod
    def _lineage_defaults(cursor: psycopg.Cursor, table: sql.Composable, params: dict[str, Any] | None) -> None:
        """Set (or, with ``None``, drop) the lineage columns' defaults around a direct COPY.

        The values are ours (a validated GUID, the report type, dates), rendered by psycopg's own literal
        quoting; nothing from the file goes into the statement.
        """
        actions = [
            sql.SQL("ALTER COLUMN {} {}").format(
                sql.Identifier(column),
                sql.SQL("SET DEFAULT {}").format(sql.Literal(params[name])) if params else sql.SQL("DROP DEFAULT"),
            )
            for column, name in LINEAGE_PARAMS.items()
        ]
        cursor.execute(sql.SQL("ALTER TABLE {} {}").format(table, sql.SQL(", ").join(actions)))

    def _copy_error(self, cursor: psycopg.Cursor, exc: psycopg.Error, header: Header, columns: Sequence[str],
                    target: Target | None, source: str) -> DexCareLoadError:
        """A value COPY could not convert (direct path) is a cast error; anything else is a broken CSV."""
        if target is not None and exc.sqlstate not in _CSV_SQLSTATES and _COPY_COLUMN.search(exc.diag.context or ""):
            # COPY's own line number is unreliable with multi-line fields: stage the file as text (error
            # path only) and let the same set-based lookup as the merge path name row and column.
            stage = sql.Identifier("pg_temp", "_dexcare_diagnose")
            cursor.execute(
                sql.SQL("CREATE TEMP TABLE {} ({}) ON COMMIT DROP").format(
                    stage, sql.SQL(", ").join(sql.SQL("{} text").format(sql.Identifier(c)) for c in columns)
                )
            )
            try:
                with self.opener(source) as again:
                    copy_stream(cursor, stage, columns, read_header(again, source=source), again)
            except psycopg.errors.DataError as second:
                return self._copy_error(cursor, second, header, columns, None, source)
            return self._cast_error(cursor, stage, header.fields, columns, target.column_types, exc, source)
        return translate_copy_error(exc, source=source, columns=len(columns), header_lines=header.lines,
                                    reopen=self.opener)

    def _line_of(self, cursor: psycopg.Cursor, stage: sql.Composable, tid: Any, source: str) -> int:
        """The physical file line where a staged row starts (error path only)."""
        record = _record_of(cursor, stage, tid)
        try:
            with self.opener(source) as stream:
                line = record_line(stream, record)
        except OSError:
            line = None
        return line if line is not None else record + 1

    @staticmethod
    def _inserted_so_far(cursor: psycopg.Cursor, table: sql.Composable) -> int:
        """Rows this transaction inserted into ``table``: exact and O(1), unlike counting the table."""
        row = cursor.execute(
            sql.SQL("SELECT pg_stat_get_xact_tuples_inserted(%s::regclass)"), [table.as_string(cursor)]
        ).fetchone()
        return int(row[0]) if row else 0

    def _cast_error(self, cursor: psycopg.Cursor, stage: sql.Composable, headers: Sequence[str],
                    columns: Sequence[str], types: Mapping[str, str], exc: psycopg.Error,
                    source: str) -> DexCareLoadError:
        """Pin a failed cast to its row and column; only runs after the fast path failed."""
        worst: tuple[int, str, str] | None = None
        for header, column in zip(headers, columns, strict=True):
            sql_type = types[column]
            if sql_type == TEXT:
                continue
            try:
                with self.conn.transaction():
                    found = cursor.execute(
                        sql.SQL(
                            "SELECT ctid FROM {stage} WHERE {c} <> '' AND NOT pg_input_is_valid({c}, %s) "
                            "ORDER BY ctid LIMIT 1"
                        ).format(stage=stage, c=sql.Identifier(column)),
                        [sql_type],
                    ).fetchone()
            except psycopg.Error:
                continue
            if found is not None:
                line = self._line_of(cursor, stage, found[0], source)
                if worst is None or line < worst[0]:
                    worst = (line, header, sql_type)
        if worst is None:
            return DexCareCastError(
                f"{source}: a value does not convert to its configured column type "
                f"(SQLSTATE {exc.sqlstate}); check column_types."
            )
        line, header, sql_type = worst
        return DexCareCastError(
            f"{source}: line {line}, column {header!r}: the value is not a valid {sql_type}; fix the "
            "report or the column_types setting."
        )


def _set_temp_buffers(conn: psycopg.Connection, cursor: psycopg.Cursor, size: str) -> None:
    """Let the stage live in memory (COPY and scans ~30% faster); only possible before the session's first
    temp table, so on a reused connection it quietly stays as it was."""
    try:
        with conn.transaction():
            cursor.execute("SELECT set_config('temp_buffers', %s, true)", [size])
    except psycopg.errors.InvalidParameterValue:
        log.debug("temp_buffers already fixed for this session; staging uses the server's setting")


def _lock_key(schema: str) -> int:
    return int.from_bytes(hashlib.sha256(schema.encode()).digest()[:4], "big", signed=True)


def load_reports(
    conn: psycopg.Connection,
    reports: Iterable[ReportFile | Mapping[str, Any]],
    *,
    options: LoadOptions | None = None,
    run_date: dt.date | None = None,
    dag_id: str | None = None,
    run_id: str | None = None,
    opener: Opener = open_report,
) -> dict[str, Any]:
    """Load all ``reports`` in one transaction on ``conn`` and return a JSON-ready summary.

    ``conn`` must be idle (no transaction open): the load owns its transaction so that it can promise
    all-or-nothing. ``run_date`` stands in for a missing window end (today in UTC by default).
    The summary has ``schema``, ``dag_id``, ``run_id``, ``started_at``, ``finished_at``, ``reports`` (one
    dict per report, the same fields as the ``load_audit`` row) and ``tables`` (totals per table).
    """
    options = options or LoadOptions()
    run_date = run_date or dt.datetime.now(dt.UTC).date()
    files = [r if isinstance(r, ReportFile) else ReportFile.from_download(r, run_date=run_date) for r in reports]
    if conn.info.transaction_status != TransactionStatus.IDLE:
        raise DexCareLoadError("load_reports needs an idle connection: it commits or rolls back its own "
                               "transaction, so commit or roll back yours first.")
    started = dt.datetime.now(dt.UTC)
    run = _Run(conn, options, dag_id, run_id, opener, started)
    entries: list[dict[str, Any]] = []
    current = "(setup)"
    committing = False
    try:
        with conn.transaction(), conn.cursor() as cursor:
            if options.work_mem:
                cursor.execute("SELECT set_config('work_mem', %s, true), set_config('maintenance_work_mem', %s, true)",
                               [options.work_mem, options.work_mem])
            if options.temp_buffers:
                _set_temp_buffers(conn, cursor, options.temp_buffers)
            cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [_LOCK_NAMESPACE, _lock_key(options.schema)])
            cursor.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(options.schema)))
            ensure_audit_table(cursor, options.schema)
            for index, report in enumerate(files):
                current = report.uri
                entries.append(run.load_one(cursor, report, index))
            current = "(commit)"
            committing = True
    except DexCareLoadError:
        raise
    except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
        if committing:
            raise DexCareWarehouseError(
                f"Lost the warehouse connection while committing ({type(exc).__name__}); the commit may or may "
                "not have happened. The load is idempotent: run it again."
            ) from exc
        raise DexCareWarehouseError(
            f"Lost the warehouse connection while loading {current} ({type(exc).__name__}: "
            f"{(exc.diag.message_primary if isinstance(exc, psycopg.Error) else None) or 'connection closed'}); "
            "the transaction was not committed, nothing was written. Retry the task."
        ) from exc
    except psycopg.Error as exc:
        # Anything else PostgreSQL refused (permissions, a constraint someone added, a full disk). Its
        # detail and context can quote row values, so only the SQLSTATE and, outside data errors, the
        # primary message are kept, and the original is not chained.
        primary = "" if (exc.sqlstate or "").startswith("22") else f": {exc.diag.message_primary}"
        raise DexCareLoadError(
            f"PostgreSQL refused the load of {current} (SQLSTATE {exc.sqlstate}, {type(exc).__name__}{primary}); "
            "the transaction was rolled back, nothing was written."
        ) from None
    finished = dt.datetime.now(dt.UTC)
    return _summary(options.schema, dag_id, run_id, started, finished, entries)


def _summary(schema: str, dag_id: str | None, run_id: str | None, started: dt.datetime,
             finished: dt.datetime, entries: list[dict[str, Any]]) -> dict[str, Any]:
    tables: dict[str, dict[str, Any]] = {}
    for entry in entries:
        totals = tables.setdefault(entry["target_table"], {
            "reports": 0, "rows_in_file": 0, "duplicates_in_file": 0, "inserted": 0, "updated": 0,
            "unchanged": 0, "new_columns": [],
        })
        totals["reports"] += 1
        for name in ("rows_in_file", "duplicates_in_file", "inserted", "updated", "unchanged"):
            totals[name] += entry[name]
        totals["new_columns"] += [c for c in entry["new_columns"] if c not in totals["new_columns"]]
    return {
        "schema": schema,
        "dag_id": dag_id,
        "run_id": run_id,
        "started_at": started.isoformat(),
        "finished_at": finished.isoformat(),
        "reports": [{k: _iso(v) for k, v in e.items()} for e in entries],
        "tables": tables,
    }
