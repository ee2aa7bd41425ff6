"""What the page reads from Airflow's metadata database: each run's try at each report type's window.

``load_audit`` knows only loads that committed; a failed, running or never-started day is known only to
Airflow. A run's ``plan`` task returns one entry per report type with its window (its XCom), the mapped fetch
tasks run in that order (map index = position in the plan), and ``load_reports`` returns the run's summary with
each table's volume verdict. Read-only, one short session per page; no report row is ever in any of these.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from dexcare.load.options import table_for
from dexcare.report import ReportType

DAG_ID = "dexcare_all_visits_report"
PLAN, LOAD = "plan", "load_reports"
START, WAIT, DOWNLOAD = "fetch.start_report", "fetch.wait_for_report", "fetch.download_report"
#: The tasks one report type goes through in a run, in order; the first that failed is the cause.
CHAIN = (PLAN, START, WAIT, DOWNLOAD, LOAD)
FAILED = frozenset({"failed", "upstream_failed"})
#: Verdicts of the volume guard (dexcare.load.volume) the page flags.
VOLUME_FLAGS = frozenset({"warn", "empty", "accepted"})
#: At most this many runs are read for one page (30 daily runs plus backfills and retries).
MAX_RUNS = 400


@dataclass(frozen=True)
class TaskRef:
    """A task instance the page links to (its log)."""

    task_id: str
    map_index: int = -1


@dataclass(frozen=True)
class Attempt:
    """One run's try at one report type's window: what happened, and where its log is."""

    run_id: str
    report_type: str
    table: str
    window_start: dt.date | None
    window_end: dt.date
    #: ``success`` (the load committed), ``failed`` or ``running``.
    state: str
    task: TaskRef
    #: The volume guard's verdict on the table in this run (``dexcare.load.volume.Volume.as_dict``), if any.
    volume: Mapping[str, Any] | None = None


def read_attempts(since: dt.date, dag_id: str = DAG_ID) -> list[Attempt]:
    """Every run's attempt at a window ending on or after ``since``, oldest run first."""
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import or_, select

    start = dt.datetime.combine(since, dt.time(), tzinfo=dt.UTC)
    with create_session() as session:
        runs = session.execute(
            select(DagRun.run_id, DagRun.state, DagRun.conf, DagRun.data_interval_end, DagRun.logical_date,
                   DagRun.run_after)
            .where(DagRun.dag_id == dag_id)
            .where(or_(DagRun.run_after >= start, DagRun.start_date >= start, DagRun.state.in_(["running", "queued"])))
            .order_by(DagRun.id.desc())
            .limit(MAX_RUNS)
        ).all()
        run_ids = [r.run_id for r in runs]
        tis = session.execute(
            select(TaskInstance.run_id, TaskInstance.task_id, TaskInstance.map_index, TaskInstance.state)
            .where(TaskInstance.dag_id == dag_id, TaskInstance.run_id.in_(run_ids))
        ).all()
        values = xcom_values(session, dag_id, run_ids, (PLAN, LOAD))
    states: dict[str, dict[tuple[str, int], str]] = {}
    for ti in tis:
        states.setdefault(ti.run_id, {})[(ti.task_id, ti.map_index)] = str(ti.state or "")
    attempts = []
    for run in reversed(runs):
        plan = values.get((run.run_id, PLAN, -1))
        summary = values.get((run.run_id, LOAD, -1))
        for index, entry in enumerate(windows(plan, run)):
            attempt = judge(run.run_id, str(run.state or ""), index, entry, states.get(run.run_id, {}), summary)
            if attempt.window_end >= since:
                attempts.append(attempt)
    return attempts


def xcom_values(session: Any, dag_id: str, run_ids: list[str], task_ids: Iterable[str],
                map_index: int | None = None) -> dict[tuple[str, str, int], Any]:
    """The ``return_value`` XComs of these tasks, by ``(run_id, task_id, map_index)``."""
    from airflow.models.xcom import XComModel
    from sqlalchemy import select

    if not run_ids:
        return {}
    query = select(XComModel).where(
        XComModel.dag_id == dag_id, XComModel.run_id.in_(run_ids), XComModel.task_id.in_(list(task_ids)),
        XComModel.key == "return_value",
    )
    if map_index is not None:
        query = query.where(XComModel.map_index == map_index)
    found = {}
    for xcom in session.scalars(query):
        try:
            found[(xcom.run_id, xcom.task_id, xcom.map_index)] = XComModel.deserialize_value(xcom)
        except Exception:  # noqa: S112 (a value another version wrote: the page shows the run without it)
            continue
    return found


def windows(plan: Any, run: Any) -> list[dict[str, Any]]:
    """The run's report types and windows: its plan's, else (the plan never returned) the types its conf asked
    for, or every type, each ending on the run's day as the plan would have made it."""
    if isinstance(plan, list) and all(isinstance(e, Mapping) and "report_type" in e for e in plan):
        return [dict(e) for e in plan]
    conf = run.conf if isinstance(run.conf, Mapping) else {}
    asked = conf.get("report_types")
    types = [str(t) for t in asked] if isinstance(asked, list) and asked else [t.value for t in ReportType]
    end = conf.get("end_date") or run_day(run).isoformat()
    return [{"report_type": t, "report_start_date": conf.get("start_date"), "report_end_date": end} for t in types]


def run_day(run: Any) -> dt.date:
    """The day a run's window ends by default (``dexcare.task_support.run_end_date``'s rule)."""
    for value in (run.data_interval_end, run.logical_date, run.run_after):
        if value is not None:
            return value.date()
    return dt.datetime.now(dt.UTC).date()


def judge(run_id: str, run_state: str, index: int, entry: Mapping[str, Any], tis: Mapping[tuple[str, int], str],
          summary: Any) -> Attempt:
    """Which state one report type of a run is in, and which task's log says why."""
    report_type = str(entry["report_type"])
    try:
        table = table_for(ReportType.parse(report_type))
    except Exception:
        table = f"avr_{report_type}"
    chain = [TaskRef(t, index if t.startswith("fetch.") else -1) for t in CHAIN]
    failed = next((t for t in chain if tis.get((t.task_id, t.map_index)) == "failed"), None)
    if failed is None and (tis.get((LOAD, -1)) in FAILED or run_state == "failed"):
        # Another type's task failed and took the load with it: that task's log explains this day too.
        failed = next((TaskRef(t, m) for (t, m), s in sorted(tis.items()) if s == "failed"), TaskRef(LOAD))
    loaded = tis.get((LOAD, -1)) == "success"
    state = "success" if loaded else "failed" if failed is not None else "running"
    task = TaskRef(LOAD) if loaded else failed if failed is not None else current_task(chain, tis)
    volume = None
    if isinstance(summary, Mapping):
        volume = ((summary.get("tables") or {}).get(table) or {}).get("volume")
    return Attempt(
        run_id=run_id,
        report_type=report_type,
        table=table,
        window_start=_day(entry.get("report_start_date")),
        window_end=_day(entry.get("report_end_date")) or dt.datetime.now(dt.UTC).date(),
        state=state,
        task=task,
        volume=volume if isinstance(volume, Mapping) else None,
    )


def current_task(chain: list[TaskRef], tis: Mapping[tuple[str, int], str]) -> TaskRef:
    """The furthest task of the chain that has started, for a running attempt's link."""
    started = [t for t in chain if tis.get((t.task_id, t.map_index)) not in (None, "", "scheduled", "none")]
    return started[-1] if started else chain[0]


def _day(value: Any) -> dt.date | None:
    if not value:
        return None
    try:
        return dt.date.fromisoformat(str(value)[:10])
    except ValueError:
        return None
