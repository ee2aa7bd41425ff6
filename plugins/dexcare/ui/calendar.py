"""One calendar per table: for each of the last days, what became of the window that ends on it.

A day's cell is about the report window ending that day (a daily run's window ends on its data interval's end,
and reaches ``lookback_days`` back). In order of precedence:

- ``loaded``: a load of that window committed (``load_audit``); its counts are the newest such load's.
- ``running``: a run is still working on it.
- ``failed``: every run that tried it failed; the cell links to the log of the task that failed.
- ``covered``: no window ends that day, but a committed one that ends later reaches back over it (a backfill, or
  a later day's lookback), so its visits are in the table.
- ``missing``: nothing ended that day and nothing covers it.

A failed day that a later window covers says so: its data is in the table even though its own run failed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dexcare.ui.audit import Load
from dexcare.ui.runs import LOAD, VOLUME_FLAGS, Attempt, TaskRef

DAYS = 30
LOADED, RUNNING, FAILED, COVERED, MISSING = "loaded", "running", "failed", "covered", "missing"


@dataclass(frozen=True)
class Cell:
    day: dt.date
    state: str
    #: The newest committed load of the window ending this day (``loaded``).
    load: Load | None = None
    #: A committed load whose window ends later and covers this day (``covered``, or a ``failed`` day).
    covered_by: Load | None = None
    #: The run and task the cell links to (its log); none for a ``missing`` day.
    run_id: str | None = None
    task: TaskRef | None = None
    #: The volume guard's verdict when it flagged the load (warn, empty, accepted).
    volume: Mapping[str, Any] | None = None
    #: Runs that tried this window and failed (shown on a loaded day too: a retry or a later run made it).
    failures: int = 0


@dataclass(frozen=True)
class TableCalendar:
    table: str
    cells: list[Cell]
    #: The committed load with the newest window (freshness), within the days shown.
    newest: Load | None


def build(tables: Sequence[str], loads: Sequence[Load], attempts: Sequence[Attempt], today: dt.date,
          days: int = DAYS) -> list[TableCalendar]:
    """The calendars of ``tables`` for the ``days`` days ending ``today``, oldest day first."""
    first = today - dt.timedelta(days=days - 1)
    calendars = []
    for table in tables:
        own = [load for load in loads if load.table == table]
        tries = [a for a in attempts if a.table == table]
        cells = [cell(first + dt.timedelta(days=n), own, tries) for n in range(days)]
        newest = max(own, key=lambda load: (load.window_end, load.finished_at), default=None)
        calendars.append(TableCalendar(table, cells, newest))
    return calendars


def cell(day: dt.date, loads: Sequence[Load], attempts: Sequence[Attempt]) -> Cell:
    ending = [load for load in loads if load.window_end == day]
    tries = [a for a in attempts if a.window_end == day]
    failed = [a for a in tries if a.state == "failed"]
    covering = [load for load in loads if load.window_start <= day < load.window_end]
    covered_by = max(covering, key=lambda load: load.finished_at, default=None)
    if ending:
        load = max(ending, key=lambda load: load.finished_at)
        attempt = next((a for a in tries if a.run_id == load.run_id and a.state == "success"), None)
        volume = attempt.volume if attempt is not None else None
        flagged = volume if volume and volume.get("verdict") in VOLUME_FLAGS else None
        return Cell(day, LOADED, load=load, run_id=load.run_id, task=TaskRef(LOAD), volume=flagged,
                    failures=len(failed))
    running = [a for a in tries if a.state == "running"]
    if running:
        return Cell(day, RUNNING, run_id=running[-1].run_id, task=running[-1].task, covered_by=covered_by,
                    failures=len(failed))
    if failed:
        return Cell(day, FAILED, run_id=failed[-1].run_id, task=failed[-1].task, covered_by=covered_by,
                    failures=len(failed))
    if covered_by is not None:
        return Cell(day, COVERED, covered_by=covered_by, run_id=covered_by.run_id, task=TaskRef(LOAD))
    return Cell(day, MISSING)
