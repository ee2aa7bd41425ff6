"""The two warehouses the load speaks to, and which one a connection gets: decided once, here.

The Airflow connection's type picks the dialect through :data:`CONN_TYPES` (as common-sql's hooks pick their
SQL dialect from the connection): the operator resolves it with the connection (:mod:`dexcare.load.connection`)
and hands the name to :func:`dexcare.load.loader.load_reports`; nothing guesses from a driver's class. Each
dialect is the package of that name beside this module (``dialect``: the :class:`~.base.Dialect`; ``sql``: its
statements; ``staging``: how the file reaches the warehouse; PostgreSQL's ``diagnostics``: its error path),
imported on first use, so a PostgreSQL load never imports the SQL Server code and the other way round, and
the DAG file's connection check reads this table without importing any of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib import import_module
from types import MappingProxyType
from typing import TYPE_CHECKING, cast

from dexcare.exceptions import DexCareLoadError

if TYPE_CHECKING:
    from dexcare.load.dialects.base import Dialect

#: Airflow ``conn_type`` -> the dialect that speaks to it: the one place a warehouse type is named. A dialect's
#: name is its package beside this module.
CONN_TYPES: Mapping[str, str] = MappingProxyType({"postgres": "postgres", "postgresql": "postgres", "mssql": "mssql"})
#: The dialects' names, as ``load_reports(dialect=...)`` takes them.
DIALECTS = tuple(dict.fromkeys(CONN_TYPES.values()))


def dialect_name(conn_type: str | None, *, conn_id: str | None = None) -> str:
    """The dialect for an Airflow connection type (a dialect's own name is one too); a type no dialect serves
    is refused, naming the connection when there is one."""
    key = (conn_type or "").lower()
    name = CONN_TYPES.get(key)
    if name is not None:
        return name
    if conn_id is not None:
        raise DexCareLoadError(
            f"Connection {conn_id!r} is of type {key!r}; the warehouse must be a 'postgres' or an 'mssql' "
            "connection."
        )
    raise DexCareLoadError(f"Unknown warehouse dialect {conn_type!r}; choose one of: {', '.join(DIALECTS)}.")


def dialect_for(conn_type: str | None) -> type[Dialect]:
    """The dialect class for an Airflow connection type or a dialect's name (see :func:`dialect_name`)."""
    module = import_module(f"{__name__}.{dialect_name(conn_type)}.dialect")
    return cast("type[Dialect]", module.DIALECT)
