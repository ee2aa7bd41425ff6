"""The daily DAG on real Airflow processes: api-server, scheduler, dag-processor and triggerer, each separate.

``airflow dags test`` (tests/dags) runs triggers inline, in one process. What users depend on needs the real
split: the scheduler schedules the DAG the dag-processor parsed, the sensor really defers and a *separate*
triggerer process imports and runs ``DexCareReportStatusTrigger``, a run started through the REST API (what the
UI's trigger button calls) and a backfill both complete, and a triggerer that dies while reports are pending
loses neither the wait nor its deadline. The DexCare sandbox runs in this process on a loopback port; the
warehouse is the embedded PostgreSQL of ``pg_uri``.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dexcare.sandbox import SandboxServer
from dexcare.triggers.report_status import CLASSPATH as TRIGGER_CLASSPATH

from tests.e2e.stack import (
    DAG_ID,
    DEXCARE_KEY,
    FINAL_STATES,
    LOOKBACK_DAYS,
    SENSOR,
    VISITS_PER_DAY,
    AirflowStack,
    audit_rows,
    component_outputs,
    days,
    deployment_env,
    log_events,
    reports_of,
    running,
    task_logs,
    ti_log_dir,
    trigger_run,
    visit_ids,
)
from tests.support.processes import wait_for

TIMINGS: dict[str, float] = {}
# RACE_NOTE: Airflow 3.3.2's scheduler fails a resumed sensor ("finished with state success, but the task
# instance's state attribute is queued") when the trigger fires before the executor has reported the exit of
# the worker process that deferred: its guard covers a TI still SCHEDULED, not one already QUEUED again. A worker's
# supervisor can take up to [workers] min_heartbeat_interval (5 s by default) to notice that exit, so the stack
# lowers it to 1 s and the reports here take several seconds.


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, sandbox: SandboxServer, pg_uri: str, metadata_db: str
) -> Iterator[AirflowStack]:
    """Migrate, start the four components, wait until healthy and the DAG is parsed, unpause it.

    The finalizer stops every process group and fails the module if any process it started survives.
    """
    home = tmp_path_factory.mktemp("real-airflow-home")
    stack = AirflowStack(home, deployment_env(metadata_db, sandbox.url, pg_uri))
    with running(stack, TIMINGS, "real-airflow e2e"):
        yield stack


# --- scenarios helpers ------------------------------------------------------------------------------------


def base_conf(schema: str, tmp: Path, **params: Any) -> dict[str, Any]:
    return {
        "schema": schema,
        "poll_interval": 1,
        "lookback_days": LOOKBACK_DAYS,
        "failed_grace_minutes": 0.05,
        "storage": f"{tmp}/csv/",
        **params,
    }


def trigger_log_files(stack: AirflowStack, run_id: str, map_index: int) -> list[Path]:
    """Trigger logs of a sensor's first try: the triggerer writes ``attempt=1.log.trigger.<its job id>.log``."""
    return sorted(ti_log_dir(stack.home, run_id, SENSOR, map_index).glob("attempt=1.log.trigger.*.log"))


# --- scenarios --------------------------------------------------------------------------------------------


def test_rest_api_run_defers_to_the_triggerer_and_loads(
    stack: AirflowStack, sandbox: SandboxServer, pg_uri: str, schema: str, tmp_path: Path
) -> None:
    # Long enough to be seen deferred, and for the trigger to fire well after the deferring worker process
    # has exited (see RACE_NOTE).
    sandbox.queue_seconds, sandbox.run_seconds = 2.0, 8.0
    since = time.monotonic()
    started = time.monotonic()
    conf = base_conf(schema, tmp_path, report_types=["virtual", "retail"])
    watch = trigger_run(stack, "2026-11-20T00:00:00Z", conf)
    run = watch.wait(stack, timeout=150)
    TIMINGS["REST API run"] = round(time.monotonic() - started, 1)
    assert run["state"] == "success", watch.failure_detail(stack)
    print(f"\nstates seen: {watch.states}\ntriggers seen: {watch.triggers}")

    # The scheduler mapped the group once per requested type, in the order of the conf.
    sensors = watch.sensors()
    assert sorted(sensors) == [0, 1], watch.states
    for map_index, states in sensors.items():
        assert "deferred" in states, f"sensor [{map_index}] never deferred: {states}"
        assert states[-1] == "success"
    # While deferred, each sensor's trigger row named our class and was held by a triggerer.
    for map_index in (0, 1):
        triggers = watch.triggers.get((SENSOR, map_index), [])
        assert triggers, f"no trigger seen for sensor [{map_index}]"
        assert {classpath for _, classpath, _ in triggers} == {TRIGGER_CLASSPATH}
    # The separate triggerer process ran it: it wrote each sensor's trigger log (named by its job id).
    for map_index in (0, 1):
        trigger_logs = trigger_log_files(stack, watch.run_id, map_index)
        assert len(trigger_logs) == 1, trigger_logs
        assert "dexcare.triggers.report_status.DexCareReportStatusTrigger" in trigger_logs[0].read_text()
    assert "Trigger failed" not in (stack.outputs / "triggerer-1.log").read_text(errors="replace")

    # One report per type, over the window that ends on the run's data interval end.
    reports = reports_of(sandbox, since)
    assert sorted(r.report_type.value for r in reports) == ["retail", "virtual"]
    interval_end = dt.datetime.fromisoformat(run["data_interval_end"]).date()
    for report in reports:
        assert report.end_date == interval_end
        assert report.start_date == interval_end - dt.timedelta(days=LOOKBACK_DAYS)

    expected = days(reports[0].start_date, reports[0].end_date) * VISITS_PER_DAY
    for table in ("avr_virtual", "avr_retail"):
        ids = visit_ids(pg_uri, schema, table)
        assert len(ids) == len(set(ids)) == expected, table
    audit = audit_rows(pg_uri, schema)
    assert sorted(r[0] for r in audit) == ["retail", "virtual"]
    for report_type, rows_in_file, duplicates, inserted, updated, unchanged in audit:
        assert inserted == expected and updated == unchanged == 0, report_type
        assert rows_in_file - duplicates == expected, report_type
    assert not list((tmp_path / "csv").rglob("*.csv")), "downloads must be deleted after the load"

    logs = task_logs(stack)
    assert reports[0].id in logs, "the task logs were not found where expected: the key check would be vacuous"
    assert DEXCARE_KEY not in logs, "the DexCare key leaked into a task log"
    assert DEXCARE_KEY not in component_outputs(stack), "the DexCare key leaked into a component's output"


DEADLINE = re.compile(r"(?:deadline|until) (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC)")


def test_triggerer_killed_while_sensors_wait_keeps_the_wait_and_its_deadline(
    stack: AirflowStack, sandbox: SandboxServer, pg_uri: str, schema: str, tmp_path: Path
) -> None:
    # Long enough for the old triggerer to take the triggers, die, and a new one to take over before the end.
    sandbox.queue_seconds, sandbox.run_seconds = 3.0, 12.0
    since = started = time.monotonic()
    watch = trigger_run(stack, "2026-11-21T00:00:00Z", base_conf(schema, tmp_path, report_types=["virtual", "retail"]))

    def both_waiting_in_the_triggerer() -> bool:
        stack.assert_running()
        tis = {(ti["task_id"], ti["map_index"]): ti for ti in watch.observe(stack)}
        sensors = [tis.get((SENSOR, m)) for m in (0, 1)]
        if not all(ti and ti["state"] == "deferred" and (ti["trigger"] or {}).get("triggerer_id") for ti in sensors):
            return False
        # ...and the triggerer has really started them (each wrote its "Waiting ... deadline" line).
        return all(
            any(
                "Waiting for DexCare report" in e
                for f in trigger_log_files(stack, watch.run_id, m)
                for e in log_events(f)
            )
            for m in (0, 1)
        )

    wait_for("both sensors to be deferred and running in the triggerer", both_waiting_in_the_triggerer, 90, 0.3)
    before = {m: watch.triggers[(SENSOR, m)][-1] for m in (0, 1)}
    old_triggerer = {triggerer for _, _, triggerer in before.values()}
    assert len(old_triggerer) == 1, before

    with stack.timed("triggerer restart"):
        stack.kill("triggerer")  # SIGKILL to its process group: no clean shutdown, like a lost node
        after_kill = {(ti["task_id"], ti["map_index"]): ti["state"] for ti in watch.observe(stack)}
        assert after_kill[(SENSOR, 0)] == after_kill[(SENSOR, 1)] == "deferred", after_kill
        stack.start("triggerer")
        run = watch.wait(stack, timeout=150)
    TIMINGS["triggerer restart run"] = round(time.monotonic() - started, 1)
    assert run["state"] == "success", watch.failure_detail(stack)
    print(f"\nstates seen: {watch.states}\ntriggers seen: {watch.triggers}")

    final = {(ti["task_id"], ti["map_index"]): ti for ti in watch.observe(stack)}
    for m in (0, 1):
        # The wait was neither lost nor retried: one deferral, still the first try, the same trigger row.
        states = watch.states[(SENSOR, m)]
        assert states.count("deferred") == 1 and states[-1] == "success", watch.states
        assert not {"up_for_retry", "failed", "up_for_reschedule"} & set(states), watch.states
        assert final[(SENSOR, m)]["try_number"] == 1
        assert {trigger_id for trigger_id, _, _ in watch.triggers[(SENSOR, m)]} == {before[m][0]}

        # Both triggerers ran the same trigger, each writing its own log; the deadline in the stored kwargs,
        # computed once on the worker, is what the new triggerer waited for too.
        files = trigger_log_files(stack, watch.run_id, m)
        assert len(files) == 2, f"expected a trigger log from each triggerer, got {files}"
        job_ids = sorted(int(f.name.rsplit(".", 2)[-2]) for f in files)
        assert job_ids[0] in old_triggerer and job_ids[1] not in old_triggerer, (job_ids, old_triggerer)
        files = sorted(files, key=lambda f: int(f.name.rsplit(".", 2)[-2]))
        waits = [e for f in files for e in log_events(f) if e.startswith("Waiting for DexCare report")]
        assert len(waits) == 2, waits
        deadlines = {DEADLINE.search(e).group(1) for e in waits}  # type: ignore[union-attr]
        sensor_log = log_events(ti_log_dir(stack.home, watch.run_id, SENSOR, m) / "attempt=1.log")
        deferring = [e for e in sensor_log if e.startswith("Deferring:")]
        assert len(deferring) == 1, deferring
        assert deadlines == {DEADLINE.search(deferring[0]).group(1)}, (deadlines, deferring)  # type: ignore[union-attr]
        assert any("SUCCEEDED" in e for e in log_events(files[1])), "the new triggerer did not finish the wait"

    new_output = (stack.outputs / "triggerer-2.log").read_text(errors="replace")
    assert "Trigger failed" not in new_output

    # No report was requested again: one POST per type for the whole run.
    reports = reports_of(sandbox, since)
    assert sorted(r.report_type.value for r in reports) == ["retail", "virtual"]
    expected = days(reports[0].start_date, reports[0].end_date) * VISITS_PER_DAY
    for table in ("avr_virtual", "avr_retail"):
        ids = visit_ids(pg_uri, schema, table)
        assert len(ids) == len(set(ids)) == expected, table
    assert len(audit_rows(pg_uri, schema)) == 2
    assert DEXCARE_KEY not in task_logs(stack) + component_outputs(stack)


def test_backfill_of_three_days(
    stack: AirflowStack, sandbox: SandboxServer, pg_uri: str, schema: str, tmp_path: Path
) -> None:
    sandbox.queue_seconds, sandbox.run_seconds = 1.5, 4.5  # each run's sensor defers (see RACE_NOTE)
    since = started = time.monotonic()
    conf = base_conf(schema, tmp_path, report_types=["virtual"])
    stack.cli(
        "backfill",
        "create",
        "--dag-id",
        DAG_ID,
        "--from-date",
        "2026-11-01",
        "--to-date",
        "2026-11-03",
        "--dag-run-conf",
        json.dumps(conf),
    )

    def backfill_runs() -> list[dict[str, Any]]:
        stack.assert_running()
        return stack.api("GET", f"/dags/{DAG_ID}/dagRuns", params={"run_type": "backfill", "limit": 50})["dag_runs"]

    def finished() -> list[dict[str, Any]] | None:
        runs = backfill_runs()
        return runs if len(runs) == 3 and all(r["state"] in FINAL_STATES for r in runs) else None

    try:
        runs = wait_for("the three backfill runs to finish", finished, timeout=200, interval=1)
    except TimeoutError as exc:
        raise AssertionError(f"{exc}\n{backfill_runs()}\n{task_logs(stack)[-5000:]}") from None
    TIMINGS["backfill"] = round(time.monotonic() - started, 1)
    assert [r["state"] for r in runs] == ["success"] * 3, (runs, task_logs(stack)[-5000:])
    logical = sorted(dt.datetime.fromisoformat(r["logical_date"]).date().isoformat() for r in runs)
    assert logical == ["2026-11-01", "2026-11-02", "2026-11-03"]
    assert all(r["conf"]["schema"] == schema for r in runs)
    for r in runs:  # every day's sensor waited in the triggerer
        assert trigger_log_files(stack, r["dag_run_id"], 0), f"{r['dag_run_id']}: the sensor never deferred"

    # Each day asked for its own window; together they overlap, and the table holds each visit once.
    reports = reports_of(sandbox, since)
    assert len(reports) == 3 and {r.report_type.value for r in reports} == {"virtual"}
    ends = sorted(r.end_date for r in reports)
    assert [(b - a).days for a, b in itertools.pairwise(ends)] == [1, 1]
    first_day = min(r.start_date for r in reports)
    ids = visit_ids(pg_uri, schema, "avr_virtual")
    assert len(ids) == len(set(ids)) == days(first_day, ends[-1]) * VISITS_PER_DAY
    audit = audit_rows(pg_uri, schema)
    assert len(audit) == 3
    assert sum(inserted for _, _, _, inserted, _, _ in audit) == len(ids)
