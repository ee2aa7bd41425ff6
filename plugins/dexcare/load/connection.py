"""The warehouse connection, resolved the way the official providers do, for the load and the demo.

The Airflow connection's ``conn_type`` picks the warehouse: ``postgres`` (apache-airflow-providers-postgres,
psycopg 3) or ``mssql`` (apache-airflow-providers-microsoft-mssql, pymssql with its bundled FreeTDS, so no
system ODBC driver is needed). :func:`dexcare.load.loader.load_reports` then picks its dialect from the
driver connection it is given.
"""

from __future__ import annotations

from typing import Any

from dexcare.exceptions import DexCareLoadError


def warehouse_type(conn_id: str, connection: Any | None = None) -> str:
    """``postgres`` or ``mssql``, from the Airflow connection's ``conn_type`` (looked up unless given)."""
    from airflow.providers.common.compat.sdk import BaseHook

    conn_type = ((connection or BaseHook.get_connection(conn_id)).conn_type or "").lower()
    if conn_type in ("postgres", "postgresql"):
        return "postgres"
    if conn_type == "mssql":
        return "mssql"
    raise DexCareLoadError(
        f"Connection {conn_id!r} is of type {conn_type!r}; the warehouse must be a 'postgres' or an 'mssql' "
        "connection."
    )


def warehouse_hook(conn_id: str) -> Any:
    """The official provider's hook for the warehouse connection: ``PostgresHook`` or ``MsSqlHook``.

    MsSqlHook passes ``str(port)`` through, so a connection without a port would ask FreeTDS for port "None":
    it gets SQL Server's default, 1433, instead. The connection is looked up once and handed to the hook: in a
    task each lookup is a round trip to the API server, and maybe to a secrets backend.
    """
    from airflow.providers.common.compat.sdk import BaseHook

    connection = BaseHook.get_connection(conn_id)
    if warehouse_type(conn_id, connection) == "mssql":
        from airflow.providers.microsoft.mssql.hooks.mssql import MsSqlHook

        hook = MsSqlHook(mssql_conn_id=conn_id, connection=connection)
        if hook.connection.port is None:
            hook.connection.port = 1433
        return hook
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    return PostgresHook(postgres_conn_id=conn_id, connection=connection)


def connect(conn_id: str, hook: Any | None = None) -> Any:
    """A psycopg 3 connection (PostgreSQL) or a pymssql connection (SQL Server) for the Airflow connection,
    through ``hook`` (default: :func:`warehouse_hook`).

    Not autocommit, as the hooks hand them out; the caller closes it.
    """
    hook = hook or warehouse_hook(conn_id)
    if hook.conn_type == "mssql":
        return hook.get_conn()
    return _connect_postgres(hook)


def _connect_postgres(hook: Any) -> Any:
    """PostgresHook 7 returns a psycopg 3 connection when psycopg 3 and SQLAlchemy 2 are installed;
    otherwise we connect ourselves from the same connection fields."""
    import psycopg

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
