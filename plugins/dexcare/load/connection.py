"""The warehouse connection, resolved the way the official providers do, for the load and the demo.

The Airflow connection's ``conn_type`` picks the warehouse, once (:func:`dexcare.load.dialects.dialect_name`):
``postgres`` (apache-airflow-providers-postgres, psycopg 3) or ``mssql`` (apache-airflow-providers-microsoft-mssql,
pymssql with its bundled FreeTDS, so no system ODBC driver is needed). The dialect then makes the provider's hook
and the driver connection, and its name is what :func:`dexcare.load.loader.load_reports` is told.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dexcare.load.dialects import dialect_for, dialect_name

if TYPE_CHECKING:
    from dexcare.load.dialects.base import Dialect


@dataclass(frozen=True)
class Warehouse:
    """An Airflow warehouse connection, looked up once: its dialect's name and the official provider's hook."""

    conn_id: str
    #: The dialect's name (``load_reports(dialect=...)``), from the connection's ``conn_type``.
    dialect: str
    hook: Any

    @property
    def dialect_class(self) -> type[Dialect]:
        return dialect_for(self.dialect)

    def connect(self) -> Any:
        """A psycopg 3 connection (PostgreSQL) or a pymssql connection (SQL Server) through the hook.

        Not autocommit, as the hooks hand them out; the caller closes it.
        """
        return self.dialect_class.connect(self.hook)


def warehouse_type(conn_id: str, connection: Any | None = None) -> str:
    """``postgres`` or ``mssql``, from the Airflow connection's ``conn_type`` (looked up unless given)."""
    from airflow.providers.common.compat.sdk import BaseHook

    return dialect_name((connection or BaseHook.get_connection(conn_id)).conn_type, conn_id=conn_id)


def warehouse(conn_id: str) -> Warehouse:
    """The warehouse behind an Airflow connection id. The connection is looked up once and handed to the hook:
    in a task each lookup is a round trip to the API server, and maybe to a secrets backend."""
    from airflow.providers.common.compat.sdk import BaseHook

    connection = BaseHook.get_connection(conn_id)
    name = warehouse_type(conn_id, connection)
    return Warehouse(conn_id, name, dialect_for(name).hook(conn_id, connection))


def connect(conn_id: str) -> Any:
    """A driver connection for the Airflow connection (see :meth:`Warehouse.connect`); the caller closes it."""
    return warehouse(conn_id).connect()
