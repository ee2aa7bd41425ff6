"""A FAKE pymssql connection that records what the SQL Server dialect sends, for the offline tests.

No SQL Server can run on these machines, so this stands in for one; it is a fake, not an emulator. It keeps
just enough catalog state to answer the dialect's catalog queries (which tables and columns exist, as its
own CREATE/ALTER statements left them), renders every statement with pymssql's real client-side parameter
substitution (``pymssql._mssql.substitute_params``: the exact text pymssql would send), records it with
bulk copies, commits and rollbacks in order, and raises an injected error at a chosen step. It says nothing
about what SQL Server would do with the statements: the live suite (``make test-mssql``) does that.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pymssql
from dexcare.load.audit import AUDIT_FIELDS
from pymssql import _mssql

_NAME = r"\[((?:[^\]]|\]\])+)\]"
_CREATE = re.compile(rf"^CREATE TABLE {_NAME}\.{_NAME} \((.*)\)$", re.S)
_ALTER = re.compile(rf"^ALTER TABLE {_NAME}\.{_NAME} ADD (.*)$", re.S)
_COLUMN = re.compile(rf"{_NAME} (\w+(?:\([^)]*\))?)")
_OBJECT = re.compile(rf"^{_NAME}\.{_NAME}$")

#: Which step of a load a statement belongs to, by what it says (first match wins).
STEPS = (
    ("audit_lookup", re.compile(r"^SELECT OBJECT_ID\(")),
    ("volume", re.compile(r"^SELECT TOP \(\d+\) rows_in_file FROM \[[^\]]+\]\.\[load_audit\]")),
    ("audit_index", re.compile(r"load_audit_volume")),
    ("newest_window", re.compile(r"^SELECT MAX\(window_end\) FROM \[[^\]]+\]\.\[load_audit\]")),
    ("kept_newer", re.compile(r"^SELECT COUNT_BIG\(\*\) FROM ")),
    ("audit_upgrade", re.compile(r"^ALTER TABLE \[[^\]]+\]\.\[load_audit\]")),
    ("audit_read", re.compile(r"^SELECT .* FROM \[[^\]]+\]\.\[load_audit\] WHERE", re.S)),
    ("session", re.compile(r"^SET XACT_ABORT ON")),
    ("lock", re.compile(r"sp_getapplock")),
    ("lock_holder", re.compile(r"sys\.dm_tran_locks")),
    ("schema", re.compile(r"SCHEMA_ID|^CREATE SCHEMA")),
    ("catalog", re.compile(r"FROM sys\.(columns|types)")),
    ("audit_table", re.compile(r"^\s*CREATE TABLE \[[^\]]+\]\.\[load_audit\]")),
    ("history_table", re.compile(r"^CREATE TABLE \[[^\]]+\]\.\[[^\]]*_history\]")),
    ("history_columns", re.compile(r"^ALTER TABLE \[[^\]]+\]\.\[[^\]]*_history\]")),
    ("baseline", re.compile(r"^INSERT INTO \[[^\]]+\]\.\[[^\]]*_history\]")),
    ("create_table", re.compile(r"^CREATE TABLE \[[^#]")),
    ("add_columns", re.compile(r"^ALTER TABLE")),
    ("stage", re.compile(r"^CREATE TABLE \[#dexcare_stage")),
    ("cast_check", re.compile(r"TRY_CONVERT")),
    ("dedupe", re.compile(r"^WITH ranked")),
    ("update", re.compile(r"^UPDATE t ")),
    ("audit", re.compile(r"^INSERT INTO \[[^\]]+\]\.\[load_audit\]")),
    ("insert", re.compile(r"^INSERT INTO ")),
    ("key_index", re.compile(r"FROM sys\.indexes|^CREATE UNIQUE")),
    ("drop_stage", re.compile(r"^DROP TABLE \[#")),
)


def step_of(statement: str) -> str:
    return next((name for name, pattern in STEPS if pattern.search(statement)), "other")


def _date(value: Any) -> dt.date:
    return value if isinstance(value, dt.date) else dt.date.fromisoformat(str(value))


def _unquote(name: str) -> str:
    return name.replace("]]", "]")


@dataclass
class Op:
    """One recorded operation: a statement (as sent), a bulk copy, a commit or a rollback."""

    kind: str  # "execute", "bulk_copy", "commit", "rollback", "close"
    step: str
    sql: str = ""
    rows: int = 0


@dataclass
class RecordingConnection:
    """Stands in for ``pymssql.Connection``: ``cursor()``, ``bulk_copy()``, ``commit()``, ``rollback()``."""

    #: ``"schema.table" -> {column: type}``: tables that exist before the load.
    tables: dict[str, dict[str, str]] = field(default_factory=dict)
    #: Raise this exception when an operation of this step happens (the ``nth`` time, counting from 1).
    fail_step: str | None = None
    fail_with: BaseException | None = None
    fail_nth: int = 1
    #: Answers to ``SELECT MIN(CASE ... TRY_CONVERT ...)``: the first bad line per typed column.
    bad_casts: tuple[int | None, ...] | None = None
    #: What ``sp_getapplock`` returns (0 granted, -1 timed out), and the answer to the lock-holder query.
    lock_result: int = 0
    lock_holder: tuple[Any, ...] | None = None
    autocommit_state: bool = False
    #: The answer to the count of rows the old-window guard kept (asked only when the audit has a newer window).
    kept_newer: int = 0
    ops: list[Op] = field(default_factory=list)
    staged: dict[str, list[list[Any]]] = field(default_factory=dict)
    #: The ``load_audit`` rows the dialect inserted (its parameters, as sent), for a later read of them.
    audit: list[dict[str, Any]] = field(default_factory=list)
    _seen: dict[str, int] = field(default_factory=dict)

    # --- DB-API ---

    def cursor(self) -> RecordingCursor:
        return RecordingCursor(self)

    def commit(self) -> None:
        try:
            self._record(Op("commit", "commit"))
        except Exception as exc:
            # What pymssql's commit() does with any error: one OperationalError carrying the original as text.
            raise pymssql.OperationalError("Cannot commit transaction: " + str(exc.args[0])) from None

    def rollback(self) -> None:
        self._record(Op("rollback", "rollback"))

    def close(self) -> None:
        self._record(Op("close", "close"))

    def autocommit(self, status: bool) -> None:
        self._record(Op("execute", "autocommit", f"autocommit({status})"))
        self.autocommit_state = status

    def bulk_copy(self, table_name: str, elements: Iterable[Any], column_ids: Any = None, batch_size: int = 1000,
                  tablock: bool = False, check_constraints: bool = False, fire_triggers: bool = False) -> None:
        assert table_name.startswith("#"), "pymssql finds a temp table's NVARCHAR columns only by its raw #name"
        rows = [list(row) for row in elements]
        self._record(Op("bulk_copy", "bulk_copy", table_name, len(rows)))
        self.staged.setdefault(table_name, []).extend(rows)

    # --- Recording ---

    def _record(self, op: Op) -> None:
        if self.fail_step == op.step:
            self._seen[op.step] = self._seen.get(op.step, 0) + 1
            if self._seen[op.step] == self.fail_nth:
                op.kind = f"failed {op.kind}"
                self.ops.append(op)
                assert self.fail_with is not None
                raise self.fail_with
        self.ops.append(op)

    @property
    def statements(self) -> list[str]:
        return [op.sql for op in self.ops if op.kind == "execute" and op.step != "autocommit"]

    def staged_text(self) -> dict[str, list[list[Any]]]:
        """What the bulk copies were handed, value columns (sent as UTF-16LE bytes) decoded back to text."""
        return {table: [[v.decode("utf-16-le") if isinstance(v, bytes) else v for v in row] for row in rows]
                for table, rows in self.staged.items()}

    @property
    def steps(self) -> list[str]:
        return [op.step for op in self.ops]


class RecordingCursor:
    def __init__(self, conn: RecordingConnection) -> None:
        self._conn = conn
        self._result: list[tuple[Any, ...]] = []
        self.rowcount = -1
        self.description: Any = None

    def execute(self, operation: str, params: Any = None) -> None:
        text = operation if params is None else _mssql.substitute_params(operation, params).decode("utf-8")
        step = step_of(text)
        self._conn._record(Op("execute", step, text))
        self._result, self.rowcount = self._answer(step, text, params), 0

    def fetchone(self) -> tuple[Any, ...] | None:
        return self._result.pop(0) if self._result else None

    def fetchall(self) -> list[tuple[Any, ...]]:
        result, self._result = self._result, []
        return result

    def _answer(self, step: str, text: str, params: Any) -> list[tuple[Any, ...]]:
        conn = self._conn
        if step == "lock":
            return [(conn.lock_result,)]
        if step == "lock_holder":
            return [conn.lock_holder] if conn.lock_holder else []
        if step == "schema" and text.startswith("SELECT"):
            return [(None,)]
        if step == "catalog" and "sys.types" in text:
            return [(params[0],)]
        if step == "catalog":
            found = _OBJECT.match(params[0])
            key = ".".join(_unquote(p) for p in found.groups()) if found else ""
            columns = conn.tables.get(key)
            return [(c, *_catalog_type(t)) for c, t in columns.items()] if columns else []
        if step == "audit" and isinstance(params, dict):
            conn.audit.append(dict(params))
        if step == "audit_lookup":
            found = _OBJECT.match(params[0])
            key = ".".join(_unquote(p) for p in found.groups()) if found else ""
            columns = conn.tables.get(key)
            # COL_LENGTH of kept_newer: absent from a load_audit made before it (one this load made has it)
            return [(1 if key in conn.tables else None, None if columns and "kept_newer" not in columns else 8)]
        if step == "newest_window":
            ends = [_date(row["window_end"]) for row in conn.audit if row["target_table"] == params["table"]]
            return [(max(ends).isoformat() if ends else None,)]
        if step == "kept_newer":
            return [(conn.kept_newer,)]
        if step == "volume":  # the newest loads of the report type and window length, as SQL Server answers
            days = dict.fromkeys(["limit", "type", "days"]) | params
            found = [row for row in conn.audit if row["report_type"] == days["type"] and (
                _date(row["window_end"]) - _date(row["window_start"])).days == days["days"]]
            return [(row["rows_in_file"],) for row in reversed(found)][: days["limit"]]
        if step == "audit_read":
            fields = [f for f in AUDIT_FIELDS if f"[{f}]" in text]  # the columns the dialect asked for
            return [tuple(row[f] for f in fields) for row in conn.audit if row["report_id"] in params]
        if step == "cast_check":
            return [conn.bad_casts or (None,) * text.count("TRY_CONVERT")]
        if step in ("create_table", "audit_table", "history_table") and (match := _CREATE.match(text.strip())):
            schema, table, body = match.groups()
            conn.tables[f"{_unquote(schema)}.{_unquote(table)}"] = _columns(body)
        if step in ("add_columns", "history_columns", "audit_upgrade") and (match := _ALTER.match(text)):
            schema, table, body = match.groups()
            conn.tables[f"{_unquote(schema)}.{_unquote(table)}"].update(_columns(body))
        return []


def _columns(body: str) -> dict[str, str]:
    return {_unquote(name): typ for name, typ in _COLUMN.findall(body)}


def _catalog_type(sql_type: str) -> tuple[str, int, int, int]:
    """``(TYPE_NAME, max_length, precision, scale)`` as sys.columns reports a type."""
    name, _, args = sql_type.partition("(")
    args = args.rstrip(")")
    if name in ("nvarchar", "nchar"):
        return name, -1 if args == "max" else 2 * int(args), 0, 0
    if name in ("varchar", "char"):
        return name, -1 if args == "max" else int(args), 0, 0
    if name in ("datetimeoffset", "datetime2", "time"):
        return name, 10, 34, int(args or 7)
    if name in ("decimal", "numeric"):
        precision, _, scale = args.partition(",")
        return name, 9, int(precision), int(scale)
    return name, 8, 0, 0
