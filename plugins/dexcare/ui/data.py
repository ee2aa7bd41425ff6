"""Everything the page shows, gathered per request: the warehouse's loads, Airflow's runs, the waiting reports.

Each request reads the warehouse's ``load_audit`` once and Airflow's metadata database in short sessions. A
warehouse that cannot be reached leaves the calendars without loads and says so; the runs and the waiting reports
still show.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from dexcare.ui.audit import Load
from dexcare.ui.calendar import DAYS, TableCalendar
from dexcare.ui.waiting import Waiting

log = logging.getLogger(__name__)

DEFAULT_CONN_ID, DEFAULT_SCHEMA = "dexcare_warehouse", "dexcare"


@dataclass
class PageData:
    today: dt.date
    now: dt.datetime
    conn_id: str
    schema: str
    calendars: list[TableCalendar]
    waiting: list[Waiting]
    #: Why the loads could not be read (no row value, no connection field), if they could not.
    warehouse_problem: str | None = None
    #: Whether ``load_audit`` has the "kept because newer" column (the cells then show it).
    has_kept: bool = False


def settings() -> tuple[str, str]:
    """The warehouse connection and schema the page reads, from ``[dexcare] page_warehouse_conn_id`` and
    ``page_schema`` (the daily DAG's defaults unless the deployment loads elsewhere)."""
    from airflow.configuration import conf

    conn_id = conf.get("dexcare", "page_warehouse_conn_id", fallback=DEFAULT_CONN_ID) or DEFAULT_CONN_ID
    schema = conf.get("dexcare", "page_schema", fallback=DEFAULT_SCHEMA) or DEFAULT_SCHEMA
    return conn_id, schema


def read_warehouse(conn_id: str, schema: str, since: dt.date) -> list[Load]:
    """The period's loads through the Airflow connection (``postgres`` or ``mssql``), looked up server-side."""
    from airflow.models.connection import Connection

    from dexcare.load.connection import warehouse_type
    from dexcare.load.dialects import dialect_for
    from dexcare.ui.audit import read_loads

    connection = Connection.get_connection_from_secrets(conn_id)
    kind = warehouse_type(conn_id, connection)
    dialect = dialect_for(kind)
    conn = dialect.connect(dialect.hook(conn_id, connection))
    try:
        return read_loads(conn, kind, schema, since)
    finally:
        conn.close()


def gather(now: dt.datetime | None = None) -> PageData:
    from dexcare.load.options import table_for
    from dexcare.report import ReportType
    from dexcare.ui.calendar import build
    from dexcare.ui.runs import read_attempts
    from dexcare.ui.waiting import read_waiting

    now = now or dt.datetime.now(dt.UTC)
    today = now.date()
    since = today - dt.timedelta(days=DAYS - 1)
    conn_id, schema = settings()
    problem = None
    try:
        loads = read_warehouse(conn_id, schema, since)
    except Exception as exc:
        # Only the type: a driver's message can quote a host or a statement; the api-server log has the rest.
        log.warning("The DexCare page cannot read %s.load_audit through %r: %s", schema, conn_id, type(exc).__name__)
        problem = (f"Cannot read {schema}.load_audit through connection {conn_id!r} ({type(exc).__name__}); "
                   "the api-server log says more. Fix the connection, or set [dexcare] page_warehouse_conn_id "
                   "and page_schema to where the DAG loads.")
        loads = []
    tables = [table_for(t) for t in ReportType]
    calendars = build(tables, loads, read_attempts(since), today)
    return PageData(today=today, now=now, conn_id=conn_id, schema=schema, calendars=calendars,
                    waiting=read_waiting(), warehouse_problem=problem,
                    has_kept=any(load.kept is not None for load in loads))
