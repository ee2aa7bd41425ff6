"""The warehouses the correctness scenarios run against, read and sabotaged through their own drivers.

The scenarios are written once and parametrised over these: PostgreSQL always (the embedded pgserver, or
``DEXCARE_TEST_POSTGRES_URI``), SQL Server when ``DEXCARE_TEST_MSSQL_URI`` names a real server
(``mssql://user:password@host:1433/database``; ``make test-mssql``). Everything here reads what the load
wrote with plain SQL, never through the code under test.

The warehouse in DAG-level tests: a scratch schema per test, and reading what the load wrote, never through
the code under test.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote, urlparse

import psycopg
from psycopg import sql

MSSQL_URI_VARIABLE = "DEXCARE_TEST_MSSQL_URI"
#: Columns a scenario adds to watch for rewrites; like lineage, left out of ``rows()``.
ROW_VERSION = "_test_row_version"


class Warehouse:
    """What a scenario needs of a warehouse, whatever it is."""

    name: str

    def connect(self) -> Any:
        """A fresh connection as the loader gets it (not autocommit)."""
        raise NotImplementedError

    def query(self, statement: str, params: tuple = ()) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def dict_query(self, statement: str, params: tuple = ()) -> list[dict[str, Any]]:
        raise NotImplementedError

    def quote(self, *parts: str) -> str:
        raise NotImplementedError

    def new_schema(self) -> str:
        return f"dexcare_t_{uuid.uuid4().hex[:12]}"

    def create_schema(self, schema: str) -> None:
        self.query(f"CREATE SCHEMA {self.quote(schema)}")

    def drop_schema(self, schema: str) -> None:
        raise NotImplementedError

    def tables(self, schema: str) -> list[str]:
        return [r[0] for r in self.query(
            "SELECT TABLE_NAME FROM INFORMATION_SCHEMA.TABLES WHERE TABLE_SCHEMA = %s ORDER BY TABLE_NAME",
            (schema,))]

    def columns(self, schema: str, table: str) -> dict[str, str]:
        """Column -> data type (as INFORMATION_SCHEMA spells it), in table order."""
        return dict(self.query(
            "SELECT COLUMN_NAME, DATA_TYPE FROM INFORMATION_SCHEMA.COLUMNS WHERE TABLE_SCHEMA = %s "
            "AND TABLE_NAME = %s ORDER BY ORDINAL_POSITION", (schema, table)))

    def is_text(self, data_type: str) -> bool:
        raise NotImplementedError

    def rows(self, schema: str, table: str, *, lineage: bool = False, order: str = "visit_id") -> list[dict[str, Any]]:
        """Every row, ordered by ``order``; lineage columns only when asked."""
        result = self.dict_query(f"SELECT * FROM {self.quote(schema, table)} ORDER BY {self.quote(order)}")
        hidden = ("_test_",) if lineage else ("_dexcare_", "_test_")
        return [{k: v for k, v in r.items() if not k.startswith(hidden)} for r in result]

    def audit(self, schema: str) -> list[dict[str, Any]]:
        """The ``load_audit`` rows, oldest first, ``new_columns`` as a list."""
        raise NotImplementedError

    def snapshot(self, schema: str) -> dict[str, Any]:
        """Every table of the schema with its rows and their physical versions: equal means untouched."""
        raise NotImplementedError

    def watch_rewrites(self, schema: str, table: str) -> None:
        """From now on, a rewritten row shows in :meth:`snapshot` even if its values did not change."""

    def unique_key(self, schema: str, table: str) -> list[str] | None:
        """The columns of the table's unique index, if it has one."""
        raise NotImplementedError

    def session_id(self, conn: Any) -> int:
        raise NotImplementedError

    def holds_load_lock(self, session: int) -> bool:
        raise NotImplementedError

    def waits_for_load_lock(self, session: int) -> bool:
        raise NotImplementedError

    def kill(self, session: int) -> None:
        raise NotImplementedError

    def type_label(self, configured: str) -> str:
        """How the load's messages spell a configured type."""
        raise NotImplementedError

    def instants(self, schema: str, table: str, column: str) -> dict[str, tuple[float, int | None]]:
        """``visit_id -> (seconds since the epoch, stored offset in minutes)`` of a timestamp column, read by
        the server itself; the offset is ``None`` where the type keeps none (PostgreSQL's timestamptz)."""
        raise NotImplementedError

    def probe(self, schema: str, table: str) -> str | None:
        """Read the table as another session would, waiting at most 2 s for locks: ``None`` if it could, else
        the error's class (a reader blocked by a schema lock times out)."""
        raise NotImplementedError

    def airflow_connection(self) -> str:
        """The warehouse as users give it to Airflow: an ``AIRFLOW_CONN_<ID>`` JSON value."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class PostgresWarehouse(Warehouse):
    name = "postgres"

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.admin = psycopg.connect(uri, autocommit=True)

    def connect(self) -> psycopg.Connection:
        return psycopg.connect(self.uri)

    def query(self, statement: str, params: tuple = ()) -> list[tuple[Any, ...]]:
        cur = self.admin.execute(statement, params or None)
        return cur.fetchall() if cur.description else []

    def dict_query(self, statement: str, params: tuple = ()) -> list[dict[str, Any]]:
        from psycopg.rows import dict_row

        with self.admin.cursor(row_factory=dict_row) as cur:
            cur.execute(statement, params or None)
            return cur.fetchall()

    def quote(self, *parts: str) -> str:
        return sql.Identifier(*parts).as_string(None)

    def drop_schema(self, schema: str) -> None:
        self.query(f"DROP SCHEMA IF EXISTS {self.quote(schema)} CASCADE")

    def is_text(self, data_type: str) -> bool:
        return data_type == "text"

    def audit(self, schema: str) -> list[dict[str, Any]]:
        return self.dict_query(f"SELECT * FROM {self.quote(schema, 'load_audit')} ORDER BY id")

    def snapshot(self, schema: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for table in self.tables(schema):
            name = self.quote(schema, table)
            data = self.query(f"SELECT ctid::text, xmin::text, t::text FROM {name} t ORDER BY ctid")
            out[table] = (list(self.columns(schema, table)), data)
        return out

    def unique_key(self, schema: str, table: str) -> list[str] | None:
        found = self.query(
            "SELECT ARRAY(SELECT a.attname::text FROM unnest(i.indkey::int2[]) WITH ORDINALITY k(attnum, ord) "
            "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum ORDER BY k.ord) "
            "FROM pg_index i WHERE i.indrelid = %s::regclass AND i.indisunique", (self.quote(schema, table),))
        return list(found[0][0]) if found else None

    def session_id(self, conn: psycopg.Connection) -> int:
        return conn.info.backend_pid

    def holds_load_lock(self, session: int) -> bool:
        return bool(self.query("SELECT EXISTS (SELECT FROM pg_locks WHERE pid = %s AND locktype = 'advisory' "
                               "AND granted)", (session,))[0][0])

    def waits_for_load_lock(self, session: int) -> bool:
        return bool(self.query("SELECT EXISTS (SELECT FROM pg_stat_activity WHERE pid = %s "
                               "AND wait_event = 'advisory')", (session,))[0][0])

    def kill(self, session: int) -> None:
        self.query("SELECT pg_terminate_backend(%s)", (session,))

    def type_label(self, configured: str) -> str:
        return self.query("SELECT to_regtype(%s)::text", (configured,))[0][0]

    def instants(self, schema: str, table: str, column: str) -> dict[str, tuple[float, int | None]]:
        rows = self.query(f"SELECT visit_id, extract(epoch FROM {self.quote(column)})::float8 "
                          f"FROM {self.quote(schema, table)}")
        return {key: (float(epoch), None) for key, epoch in rows}

    def probe(self, schema: str, table: str) -> str | None:
        try:
            with psycopg.connect(self.uri, autocommit=True) as reader:
                reader.execute("SET lock_timeout = '2s'")
                reader.execute(f"SELECT count(*) FROM {self.quote(schema, table)}")
        except psycopg.Error as exc:
            return type(exc).__name__
        return None

    def airflow_connection(self) -> str:
        from tests.support.airflow_cli import postgres_connection

        return postgres_connection(self.uri)

    def close(self) -> None:
        self.admin.close()


#: What README's "Loading into SQL Server" grants the load's login, and nothing more: the database permissions
#: (the load creates its schema, and owns what it creates) and, on a schema someone else created, these.
LOADER_DATABASE_GRANTS = "CREATE SCHEMA, CREATE TABLE"
LOADER_SCHEMA_GRANTS = "ALTER, SELECT, INSERT, UPDATE"


class MsSqlWarehouse(Warehouse):
    """A real SQL Server, as the URI in ``DEXCARE_TEST_MSSQL_URI`` names it.

    That login (``sa`` in the compose profile) only prepares and inspects: every load runs as a login of its
    own created here with exactly README's grants, so a missing grant fails the suite instead of hiding behind
    ``sa``."""

    name = "mssql"
    _LABELS = {"timestamptz": "datetimeoffset(7)", "integer": "int", "text": "nvarchar(max)"}

    def __init__(self, uri: str) -> None:
        parsed = urlparse(uri)
        if parsed.scheme not in ("mssql", "sqlserver") or not parsed.hostname:
            raise ValueError(f"{MSSQL_URI_VARIABLE} must look like mssql://user:password@host:1433/database")
        self.admin_params = {
            "server": parsed.hostname,
            "port": str(parsed.port or 1433),
            "user": unquote(parsed.username or ""),
            "password": unquote(parsed.password or ""),
            "database": parsed.path.lstrip("/") or "master",
            "login_timeout": 15,
        }
        self.admin = self._connect(self.admin_params, autocommit=True)
        self.loader = f"dexcare_loader_{uuid.uuid4().hex[:10]}"
        self.params = {**self.admin_params, "user": self.loader, "password": f"Dx-{uuid.uuid4().hex}!a1"}
        self.query(f"CREATE LOGIN {self.quote(self.loader)} WITH PASSWORD = %s, CHECK_POLICY = OFF",
                   (self.params["password"],))
        self.query(f"CREATE USER {self.quote(self.loader)} FOR LOGIN {self.quote(self.loader)}")
        self.query(f"GRANT {LOADER_DATABASE_GRANTS} TO {self.quote(self.loader)}")

    @staticmethod
    def _connect(params: dict[str, Any], autocommit: bool) -> Any:
        import pymssql

        return pymssql.connect(**params, autocommit=autocommit)

    def connect(self, autocommit: bool = False) -> Any:
        """A connection as the load's own login (README's grants only)."""
        return self._connect(self.params, autocommit)

    def create_schema(self, schema: str) -> None:
        """A schema the load did not create: the loader gets README's grants on it."""
        super().create_schema(schema)
        self.grant_schema(schema)

    def grant_schema(self, schema: str) -> None:
        self.query(f"GRANT {LOADER_SCHEMA_GRANTS} ON SCHEMA::{self.quote(schema)} TO {self.quote(self.loader)}")

    def _execute(self, statement: str, params: tuple) -> Any:
        cur = self.admin.cursor()
        if params:
            cur.execute(statement, params)
        else:
            cur.execute(statement)
        return cur

    def query(self, statement: str, params: tuple = ()) -> list[tuple[Any, ...]]:
        cur = self._execute(statement, params)
        return cur.fetchall() if cur.description else []

    def dict_query(self, statement: str, params: tuple = ()) -> list[dict[str, Any]]:
        cur = self._execute(statement, params)
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def quote(self, *parts: str) -> str:
        return ".".join("[" + p.replace("]", "]]") + "]" for p in parts)

    def drop_schema(self, schema: str) -> None:
        for table in self.tables(schema):
            self.query(f"DROP TABLE {self.quote(schema, table)}")
        if self.query("SELECT SCHEMA_ID(%s)", (schema,))[0][0] is not None:
            self.query(f"DROP SCHEMA {self.quote(schema)}")

    def is_text(self, data_type: str) -> bool:
        return data_type in ("nvarchar", "varchar")

    def audit(self, schema: str) -> list[dict[str, Any]]:
        rows = self.dict_query(f"SELECT * FROM {self.quote(schema, 'load_audit')} ORDER BY id")
        for row in rows:
            row["new_columns"] = json.loads(row["new_columns"])
        return rows

    def snapshot(self, schema: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for table in self.tables(schema):
            columns = list(self.columns(schema, table))
            data = sorted(self.query(f"SELECT * FROM {self.quote(schema, table)}"), key=repr)
            out[table] = (columns, data)
        return out

    def watch_rewrites(self, schema: str, table: str) -> None:
        # rowversion changes whenever the row is written, even with the same values.
        self.query(f"ALTER TABLE {self.quote(schema, table)} ADD {self.quote(ROW_VERSION)} rowversion")

    def unique_key(self, schema: str, table: str) -> list[str] | None:
        found = self.query(
            "SELECT c.name FROM sys.indexes AS i JOIN sys.index_columns AS ic ON ic.object_id = i.object_id "
            "AND ic.index_id = i.index_id JOIN sys.columns AS c ON c.object_id = ic.object_id "
            "AND c.column_id = ic.column_id WHERE i.object_id = OBJECT_ID(%s) AND i.is_unique = 1 "
            "ORDER BY i.index_id, ic.key_ordinal", (self.quote(schema, table),))
        return [r[0] for r in found] or None

    def session_id(self, conn: Any) -> int:
        cur = conn.cursor()
        cur.execute("SELECT @@SPID")
        return int(cur.fetchone()[0])

    def _app_lock(self, session: int, status: str) -> bool:
        return bool(self.query(
            "SELECT COUNT(*) FROM sys.dm_tran_locks WHERE request_session_id = %s AND resource_type = 'APPLICATION' "
            "AND request_status = %s", (session, status))[0][0])

    def holds_load_lock(self, session: int) -> bool:
        return self._app_lock(session, "GRANT")

    def waits_for_load_lock(self, session: int) -> bool:
        return self._app_lock(session, "WAIT")

    def kill(self, session: int) -> None:
        self.query(f"KILL {int(session)}")

    def type_label(self, configured: str) -> str:
        return self._LABELS[configured]

    def instants(self, schema: str, table: str, column: str) -> dict[str, tuple[float, int | None]]:
        name = self.quote(column)
        rows = self.query(
            f"SELECT visit_id, DATEDIFF_BIG(microsecond, '1970-01-01T00:00:00', "
            f"CONVERT(datetime2(7), SWITCHOFFSET({name}, '+00:00'))), DATEPART(TZOFFSET, {name}) "
            f"FROM {self.quote(schema, table)}")
        return {key: (micros / 1e6, int(offset)) for key, micros, offset in rows}

    def probe(self, schema: str, table: str) -> str | None:
        import pymssql

        reader = self._connect(self.admin_params, autocommit=True)
        try:
            cur = reader.cursor()
            cur.execute("SET LOCK_TIMEOUT 2000")
            cur.execute(f"SELECT COUNT(*) FROM {self.quote(schema, table)} WITH (NOLOCK)")
            cur.fetchall()
        except pymssql.Error as exc:
            return type(exc).__name__
        finally:
            reader.close()
        return None

    def airflow_connection(self) -> str:
        return json.dumps({"conn_type": "mssql", "host": self.params["server"], "port": int(self.params["port"]),
                           "login": self.params["user"], "password": self.params["password"],
                           "schema": self.params["database"]})

    def close(self) -> None:
        try:
            for (session,) in self.query("SELECT session_id FROM sys.dm_exec_sessions WHERE login_name = %s",
                                         (self.loader,)):
                self.kill(session)
            # A schema the loader created is its own; it outlives the login (e.g. the benchmark's) as dbo's.
            for (owned,) in self.query("SELECT name FROM sys.schemas WHERE principal_id = USER_ID(%s)", (self.loader,)):
                self.query(f"ALTER AUTHORIZATION ON SCHEMA::{self.quote(owned)} TO dbo")
            self.query(f"DROP USER IF EXISTS {self.quote(self.loader)}")
            self.query(f"DROP LOGIN {self.quote(self.loader)}")
        finally:
            self.admin.close()


def mssql_uri() -> str | None:
    return os.environ.get(MSSQL_URI_VARIABLE) or None


@contextlib.contextmanager
def scratch_schema(pg_uri: str, prefix: str) -> Iterator[str]:
    """A warehouse schema name nobody has used (the load creates the schema), dropped with everything in it
    afterwards, also when the test fails. The prefix says which tests a leftover came from, should a drop fail."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    try:
        yield name
    finally:
        with psycopg.connect(pg_uri, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


def audit_rows(conn: psycopg.Connection, schema: str) -> list[tuple[Any, ...]]:
    """``(report_type, rows_in_file, duplicates_in_file, inserted, updated, unchanged)`` per load, oldest
    first; empty when no load has created the audit table yet."""
    if conn.execute("SELECT to_regclass(%s)", (f"{schema}.load_audit",)).fetchone()[0] is None:
        return []
    return conn.execute(
        sql.SQL(
            "SELECT report_type, rows_in_file, duplicates_in_file, inserted, updated, unchanged "
            "FROM {}.load_audit ORDER BY id"
        ).format(sql.Identifier(schema))
    ).fetchall()
