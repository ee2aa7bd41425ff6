"""When the daily DAG's tables must be fresh, and who is paged when they are not.

A table's freshness is the newest ``window_end`` of a committed load: ``load_audit`` is written in the load's
own transaction, so every row of it is a committed load. A paused DAG, runs queued behind a stuck one, a report
DexCare never finishes or a scheduler that is down fail nothing, so nothing else pages for them.

On Airflow 3.1 and later a Deadline Alert pages when a run is not done N hours after its data interval ended.
Airflow 3.0 has no Deadline Alerts (and no SLAs any more): there a small watchdog DAG reads ``load_audit`` every
hour and sends the same page when a table's newest window is older than the run that was due N hours ago. It
reads the freshness itself rather than run states, so it also pages when no run was ever created (a paused DAG).
"""

from __future__ import annotations

import datetime as dt
import os
import sys
from collections.abc import Mapping
from typing import Any

from dexcare.compat import deadline_alert
from dexcare.daily.paging import Incident, deadline_incident, deliver, notifier_class, page_missed_deadline
from dexcare.exceptions import DexCareValidationError

#: Hours after a run's data interval ends by which it must be done; default 6.
DEADLINE_HOURS_ENV = "DEXCARE_DAG_DEADLINE_HOURS"
DEFAULT_DEADLINE_HOURS = 6.0


def deadline_hours(environ: Mapping[str, str] | None = None) -> float:
    """The deadline from the environment, read at parse time like the other ``DEXCARE_DAG_*`` knobs."""
    environ = os.environ if environ is None else environ
    raw = environ.get(DEADLINE_HOURS_ENV, "").strip()
    try:
        hours = float(raw) if raw else DEFAULT_DEADLINE_HOURS
    except ValueError:
        hours = -1.0
    if not hours > 0:
        raise DexCareValidationError(
            f"{DEADLINE_HOURS_ENV}={raw!r} is not a positive number of hours. Fix: set it to e.g. 6 (the run must "
            "be done 6 hours after its data interval ends), or unset it for the default."
        )
    return hours


def freshness_deadline(schedule_interval: dt.timedelta, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """``{"deadline": DeadlineAlert}`` for the daily DAG on Airflow 3.1+, ``{}`` on 3.0 (see :func:`watchdog`).

    Deadline Alerts count from the run's logical date. Airflow 3's cron schedules (CronTriggerTimetable, the
    default) make that the end of the data interval; with ``[scheduler] create_cron_data_intervals`` it is the
    start, one ``schedule_interval`` earlier, which is added so the deadline is the same either way.
    """
    hours = deadline_hours(environ)
    if under_dags_test():
        return {}
    from airflow.configuration import conf

    starts = conf.getboolean("scheduler", "create_cron_data_intervals", fallback=False)
    offset = schedule_interval if starts else dt.timedelta(0)
    alert = deadline_alert(offset + dt.timedelta(hours=hours), page_missed_deadline, {"hours": hours})
    return {"deadline": alert} if alert is not None else {}


def under_dags_test(argv: list[str] | None = None) -> bool:
    """True in ``airflow dags test``, which runs the DAG in its own process with no scheduler to watch a deadline,
    and which on Airflow 3.1 to 3.3 fails a DAG with a deadline after its run succeeded (apache/airflow#73428):
    there the DAG gets none."""
    argv = sys.argv if argv is None else argv
    return len(argv) >= 3 and os.path.basename(argv[0]) == "airflow" and argv[1:3] == ["dags", "test"]


# --- Airflow 3.0: the watchdog ---------------------------------------------------------------------------------


def due_logical_date(now: dt.datetime, hours: float) -> dt.datetime:
    """The logical date (midnight UTC, the daily data interval's end) of the newest run whose deadline passed."""
    due = (now - dt.timedelta(hours=hours)).astimezone(dt.UTC)
    return due.replace(hour=0, minute=0, second=0, microsecond=0)


def table_freshness(conn_id: str, schema: str) -> dict[str, dt.date]:
    """The newest ``window_end`` of a committed load per table, from ``<schema>.load_audit``: one indexed
    aggregate, no report row read."""
    from dexcare.load.connection import warehouse

    target = warehouse(conn_id)
    conn = target.connect()
    try:
        audit = target.dialect_class.quote(schema, "load_audit")
        cur = conn.cursor()
        cur.execute(f"SELECT target_table, MAX(window_end) FROM {audit} GROUP BY target_table")  # noqa: S608
        rows = cur.fetchall()
        conn.rollback()
    finally:
        conn.close()
    return {str(table): end if isinstance(end, dt.date) else dt.date.fromisoformat(str(end)) for table, end in rows}


def stale_tables(freshness: Mapping[str, dt.date], due: dt.datetime) -> dict[str, dt.date]:
    """Tables whose newest window ends before the day of the run that was due."""
    return {table: end for table, end in sorted(freshness.items()) if end < due.date()}


def watchdog(dag_id: str, conn_id: str, schema: str, now: dt.datetime, hours: float,
             environ: Mapping[str, str] | None = None) -> list[str]:
    """Page once (kind ``deadline``, the due run's logical date: the key a 3.1+ Deadline Alert would use) when a
    table is staler than the run due ``hours`` ago; the stale tables are returned for the task's log."""
    due = due_logical_date(now, hours)
    stale = stale_tables(table_freshness(conn_id, schema), due)
    if stale:
        context = {"dag_run": {"dag_id": dag_id, "run_id": f"scheduled__{due.isoformat()}",
                               "logical_date": due.isoformat()}}
        base = deadline_incident(context, hours)
        lines = ", ".join(f"{schema}.{table} newest window_end {end.isoformat()}" for table, end in stale.items())
        incident = Incident(**{**base.__dict__, "cause": f"{lines}; expected {due.date().isoformat()}. {base.cause}"})
        deliver([incident], notifier_class(environ), context, environ)
    return [f"{table} (newest window_end {end.isoformat()})" for table, end in stale.items()]


def watchdog_task(context: Mapping[str, Any], dag_id: str, hours: float) -> None:
    """The 3.0 watchdog DAG's task: pages, then fails with the stale tables as its last log line (so the grid
    shows it red); green when every table is fresh."""
    from dexcare.compat import AirflowFailException

    params = context["params"]
    stale = watchdog(dag_id, params["warehouse_conn_id"], params["schema"], dt.datetime.now(dt.UTC), hours)
    if stale:
        raise AirflowFailException(
            f"{dag_id} missed its freshness deadline ({hours:g} hours after the data interval): "
            f"{'; '.join(stale)}. On-call was paged; fix: see the run of {dag_id} that is not done (paused DAG, "
            "stuck task, DexCare) and clear it."
        )
