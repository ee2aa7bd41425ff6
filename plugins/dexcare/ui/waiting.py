"""The reports the daily DAG is waiting on now, from Airflow's metadata database.

A waiting report is a ``fetch.wait_for_report`` task instance that has not finished in a running run. While it
is deferred, its trigger row holds the report id it waits on (after any resubmission) and the DexCare status the
sensor saw when it handed over (the trigger polls in memory and writes nothing back); before that, the id is
``fetch.start_report``'s return value. The window is the run's plan entry at the same map index, and the age
counts from when ``start_report`` asked DexCare for the report.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from dexcare.ui.runs import DAG_ID, PLAN, START, WAIT, TaskRef, xcom_values

#: Sensor states that mean "still waiting" (a deferrable sensor defers; one in reschedule mode sleeps).
WAITING_STATES = ("deferred", "up_for_reschedule", "running", "queued", "scheduled", "up_for_retry")


@dataclass(frozen=True)
class Waiting:
    run_id: str
    report_type: str
    report_id: str | None
    window_start: str | None
    window_end: str | None
    #: The status DexCare last reported (as the sensor saw it before deferring); ``None`` before the first check.
    status: str | None
    status_since: dt.datetime | None
    requested_at: dt.datetime | None
    sensor_state: str
    task: TaskRef

    def age(self, now: dt.datetime) -> dt.timedelta | None:
        return now - self.requested_at if self.requested_at else None


def read_waiting(dag_id: str = DAG_ID) -> list[Waiting]:
    """Every unfinished wait of a running run, oldest request first."""
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.trigger import Trigger
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        columns: list[Any] = [TaskInstance.run_id, TaskInstance.map_index, TaskInstance.state,
                              TaskInstance.trigger_id, TaskInstance.start_date, TaskInstance.rendered_map_index]
        sensors = session.execute(
            select(*columns)
            .join(DagRun, (DagRun.dag_id == TaskInstance.dag_id) & (DagRun.run_id == TaskInstance.run_id))
            .where(TaskInstance.dag_id == dag_id, TaskInstance.task_id == WAIT, TaskInstance.map_index >= 0)
            .where(TaskInstance.state.in_(WAITING_STATES), DagRun.state == "running")
        ).all()
        run_ids = sorted({s.run_id for s in sensors})
        trigger_ids = [s.trigger_id for s in sensors if s.trigger_id is not None]
        rows = session.scalars(select(Trigger).where(Trigger.id.in_(trigger_ids)))
        triggers = {t.id: _trigger_kwargs(t) for t in rows}
        starts = {
            (r.run_id, r.map_index): r.end_date
            for r in session.execute(
                select(TaskInstance.run_id, TaskInstance.map_index, TaskInstance.end_date)
                .where(TaskInstance.dag_id == dag_id, TaskInstance.task_id == START, TaskInstance.run_id.in_(run_ids))
            )
        }
        values = xcom_values(session, dag_id, run_ids, (PLAN, START))
    found = []
    for sensor in sensors:
        plan = values.get((sensor.run_id, PLAN, -1))
        entry = plan[sensor.map_index] if isinstance(plan, list) and sensor.map_index < len(plan) else {}
        entry = entry if isinstance(entry, dict) else {}
        kwargs = triggers.get(sensor.trigger_id, {})
        report_id = kwargs.get("report_id") or values.get((sensor.run_id, START, sensor.map_index))
        since = kwargs.get("last_status_since")
        found.append(Waiting(
            run_id=sensor.run_id,
            report_type=str(entry.get("report_type") or sensor.rendered_map_index or sensor.map_index),
            report_id=None if report_id is None else str(report_id),
            window_start=entry.get("report_start_date"),
            window_end=entry.get("report_end_date"),
            status=kwargs.get("last_status"),
            status_since=dt.datetime.fromtimestamp(float(since), dt.UTC) if isinstance(since, int | float) else None,
            requested_at=starts.get((sensor.run_id, sensor.map_index)) or sensor.start_date,
            sensor_state=str(sensor.state),
            task=TaskRef(WAIT, sensor.map_index),
        ))
    return sorted(found, key=lambda w: (w.requested_at or dt.datetime.max.replace(tzinfo=dt.UTC), w.run_id))


def _trigger_kwargs(trigger: Any) -> dict[str, Any]:
    """The trigger's kwargs; a row it cannot decrypt (another Fernet key) shows as unknown, not as an error."""
    try:
        kwargs = trigger.kwargs
    except Exception:
        return {}
    return dict(kwargs) if isinstance(kwargs, dict) else {}
