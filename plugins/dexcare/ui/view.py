"""The page's HTML: one Jinja template (autoescaped), and the wording and links the template uses.

Links go to Airflow's own UI (a run, a task instance's log), under the api-server's base URL; ``target=_top`` so
that on 3.1+, where the page is shown in a frame of the UI, a link opens in the UI itself.
"""

from __future__ import annotations

import datetime as dt
from functools import cache
from pathlib import Path
from urllib.parse import quote, urlparse

from jinja2 import Environment, FileSystemLoader, select_autoescape

from dexcare.ui.audit import Load
from dexcare.ui.calendar import COVERED, FAILED, LOADED, MISSING, RUNNING, Cell
from dexcare.ui.data import PageData
from dexcare.ui.runs import DAG_ID, TaskRef

TEMPLATES = Path(__file__).with_name("templates")
LEGEND = (
    (LOADED, "a load of the window ending this day committed; its inserted / updated / unchanged rows"),
    (RUNNING, "a run is working on this day's window now"),
    (FAILED, "the run for this day failed; the link opens the log of the task that failed"),
    (COVERED, "no window ends this day, but a later committed window reaches back over it"),
    (MISSING, "nothing loaded this day and no committed window covers it"),
)


def base_path() -> str:
    """The path part of ``[api] base_url`` (a UI served below a prefix), without the trailing slash."""
    from airflow.configuration import conf

    return urlparse(conf.get("api", "base_url", fallback="") or "").path.rstrip("/")


def run_url(run_id: str) -> str:
    return f"{base_path()}/dags/{DAG_ID}/runs/{quote(run_id, safe='')}"


def task_url(run_id: str, task: TaskRef) -> str:
    mapped = f"/mapped/{task.map_index}" if task.map_index >= 0 else ""
    return f"{run_url(run_id)}/tasks/{quote(task.task_id, safe='')}{mapped}"


def day(value: dt.date) -> str:
    return f"{value:%a} {value.day} {value:%b}"


def window(start: object, end: object) -> str:
    return f"{start} to {end}" if start and start != end else str(end)


def counts(load: Load) -> list[str]:
    parts = [f"{load.inserted} inserted", f"{load.updated} updated", f"{load.unchanged} unchanged"]
    if load.kept is not None:
        parts.append(f"{load.kept} kept (newer window)")
    return parts


def age(delta: dt.timedelta | None) -> str:
    if delta is None:
        return "unknown"
    seconds = max(0, int(delta.total_seconds()))
    d, rest = divmod(seconds, 86400)
    h, rest = divmod(rest, 3600)
    m, s = divmod(rest, 60)
    if d:
        return f"{d} d {h} h"
    if h:
        return f"{h} h {m:02d} min"
    return f"{m} min {s:02d} s" if m else f"{s} s"


def volume_text(cell: Cell) -> str | None:
    volume = cell.volume
    if not volume:
        return None
    median = volume.get("baseline_median")
    baseline = f" (median of recent loads {median:g})" if isinstance(median, int | float) else ""
    return f"volume {volume.get('verdict')}: {volume.get('rows')} rows{baseline}"


def freshness(load: Load | None, today: dt.date) -> str:
    if load is None:
        return "No load in the days shown."
    behind = (today - load.window_end).days
    when = "today" if behind == 0 else f"{behind} day{'s' if behind != 1 else ''} before today"
    return (f"Newest loaded window: {window(load.window_start, load.window_end)} (ends {when}; report "
            f"{load.report_id}, committed {load.finished_at.astimezone(dt.UTC):%Y-%m-%d %H:%M} UTC)")


@cache
def environment() -> Environment:
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]),
                      trim_blocks=True, lstrip_blocks=True)
    env.globals.update(run_url=run_url, task_url=task_url, day=day, window=window, counts=counts, age=age,
                       volume_text=volume_text, freshness=freshness, legend=LEGEND, dag_id=DAG_ID,
                       LOADED=LOADED, FAILED=FAILED, RUNNING=RUNNING, COVERED=COVERED, MISSING=MISSING)
    return env


def render(data: PageData) -> str:
    return environment().get_template("page.html").render(data=data)
