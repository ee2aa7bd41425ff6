"""Which state a day's cell is in, from the loads ``load_audit`` holds and the runs Airflow knows."""

from __future__ import annotations

import datetime as dt

from dexcare.ui.audit import Load
from dexcare.ui.calendar import COVERED, FAILED, LOADED, MISSING, RUNNING, build
from dexcare.ui.runs import LOAD, Attempt, TaskRef

TODAY = dt.date.today()


def ago(n: int) -> dt.date:
    return TODAY - dt.timedelta(days=n)


def load(end: int, start: int | None = None, run_id: str | None = None, inserted: int = 5, kept: int | None = None,
         finished: int = 0) -> Load:
    return Load(run_id=run_id or f"run-{end}", report_id=f"r{end}", report_type="virtual", table="avr_virtual",
                window_start=ago(end + 1 if start is None else start), window_end=ago(end), rows_in_file=inserted,
                inserted=inserted, updated=0, unchanged=0,
                finished_at=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=finished), kept=kept)


LOADING = TaskRef(LOAD)


def attempt(end: int, state: str, run_id: str | None = None, task: TaskRef = LOADING, **volume: object) -> Attempt:
    return Attempt(run_id=run_id or f"run-{end}", report_type="virtual", table="avr_virtual", window_start=ago(end + 1),
                   window_end=ago(end), state=state, task=task, volume=volume or None)


def states(loads: list[Load], attempts: list[Attempt]) -> dict[int, str]:
    (calendar,) = build(["avr_virtual"], loads, attempts, TODAY)
    return {(TODAY - c.day).days: c.state for c in calendar.cells}


def test_a_committed_window_wins_over_its_failed_tries_and_a_gap_is_missing() -> None:
    failed = TaskRef("fetch.download_report", 0)
    shown = states([load(5), load(3, run_id="retry")],
                   [attempt(5, "success"), attempt(3, "failed", task=failed), attempt(3, "success", "retry"),
                    attempt(2, "failed", task=failed), attempt(0, "running")])
    assert shown[5] == LOADED and shown[3] == LOADED
    assert shown[2] == FAILED and shown[0] == RUNNING
    assert shown[4] == COVERED  # the retry's two-day window reaches back over it
    assert shown[1] == MISSING and shown[29] == MISSING
    assert len(shown) == 30 and min(shown) == 0 and max(shown) == 29


def test_a_backfill_window_covers_the_days_it_reaches_back_over() -> None:
    (calendar,) = build(["avr_virtual"], [load(2, start=9, run_id="backfill")], [attempt(6, "failed")], TODAY)
    cells = {(TODAY - c.day).days: c for c in calendar.cells}
    assert [cells[n].state for n in (10, 9, 8, 7, 3, 2, 1)] == [MISSING, COVERED, COVERED, COVERED, COVERED,
                                                                   LOADED, MISSING]
    # A failed day whose visits a later window brought in stays failed, and says what covers it.
    assert cells[6].state == FAILED and cells[6].covered_by is not None and cells[6].covered_by.run_id == "backfill"
    assert cells[8].run_id == "backfill" and cells[8].task == TaskRef(LOAD)
    assert calendar.newest is not None and calendar.newest.window_end == ago(2)


def test_the_newest_load_of_a_day_gives_its_counts_and_the_guard_flags_only_warnings() -> None:
    loads = [load(1, inserted=7, finished=30, run_id="first"), load(1, inserted=2, finished=1, run_id="second")]
    warned = attempt(1, "success", "second", verdict="warn", rows=2, baseline_median=40.0)
    (calendar,) = build(["avr_virtual"], loads, [attempt(1, "success", "first", verdict="ok"), warned], TODAY)
    cell = calendar.cells[-2]
    assert cell.state == LOADED and cell.load is not None and cell.load.inserted == 2 and cell.run_id == "second"
    assert cell.volume is not None and cell.volume["verdict"] == "warn"
    (calendar,) = build(["avr_virtual"], loads[:1], [attempt(1, "success", "first", verdict="ok")], TODAY)
    assert calendar.cells[-2].volume is None


def test_other_tables_do_not_leak_into_a_calendar() -> None:
    virtual, retail = build(["avr_virtual", "avr_retail"], [load(1)], [attempt(2, "failed")], TODAY)
    assert {c.state for c in retail.cells} == {MISSING} and retail.newest is None
    assert virtual.cells[-2].state == LOADED
