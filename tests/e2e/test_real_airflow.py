"""The daily DAG on real Airflow processes: api-server, scheduler, dag-processor and triggerer, each separate.

``airflow dags test`` (tests/dag) runs triggers inline, in one process. What users depend on needs the real
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
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import psycopg
import pytest
from dexcare.sandbox import SandboxServer
from dexcare.triggers.report_status import CLASSPATH as TRIGGER_CLASSPATH
from psycopg import sql

from tests.airflow_cli import postgres_connection
from tests.e2e.stack import AirflowStack, component_outputs, wait_for
from tests.helpers import dexcare_connection
from tests.warehouse import audit_rows as warehouse_audit_rows

DAG_ID = "dexcare_all_visits_report"
SENSOR = "fetch.wait_for_report"
# Distinctive, so a leak into any log is unmistakable; it appears only in the connection env var.
DEXCARE_KEY = "dc-E2E-real-airflow-key-5b81d0e2c7"
VISITS_PER_DAY = 5
LOOKBACK_DAYS = 3
FINAL_STATES = {"success", "failed"}
TIMINGS: dict[str, float] = {}
# RACE_NOTE: Airflow 3.3.2's scheduler fails a resumed sensor ("finished with state success, but the task
# instance's state attribute is queued") when the trigger fires before the executor has reported the exit of
# the worker process that deferred: its guard covers a TI still SCHEDULED, not one already QUEUED again. A worker's
# supervisor can take up to [workers] min_heartbeat_interval (5 s by default) to notice that exit, so the stack
# lowers it to 1 s and the reports here take several seconds.


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SandboxServer]:
    """One sandbox for the module; each scenario sets how long its reports stay QUEUED and RUNNING."""
    with SandboxServer(token=DEXCARE_KEY, seed=0, visits_per_day=VISITS_PER_DAY) as server:
        yield server


@pytest.fixture(scope="module")
def metadata_db(pg_uri: str) -> Iterator[str]:
    """Airflow's metadata database: its own database on the embedded PostgreSQL, beside the warehouse's.

    SQLite is what ``airflow standalone`` uses, but with four components and the CLI writing at once it fails
    them at random with "database is locked" (seen here on ``airflow backfill create``).
    """
    name = f"airflow_e2e_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_uri, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    parsed = urlparse(pg_uri)
    yield parsed._replace(scheme="postgresql+psycopg2", path=f"/{name}").geturl()
    with psycopg.connect(pg_uri, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, sandbox: SandboxServer, pg_uri: str, metadata_db: str
) -> Iterator[AirflowStack]:
    """Migrate, start the four components, wait until healthy and the DAG is parsed, unpause it.

    The finalizer stops every process group and fails the module if any process it started survives.
    """
    home = tmp_path_factory.mktemp("real-airflow-home")
    stack = AirflowStack(
        home,
        {
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata_db,
            # The embedded server allows 100 connections; five processes with default pools could take 75.
            "AIRFLOW__DATABASE__SQL_ALCHEMY_POOL_SIZE": "2",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_MAX_OVERFLOW": "6",
            "AIRFLOW_CONN_DEXCARE_DEFAULT": dexcare_connection(sandbox.url, DEXCARE_KEY),
            "AIRFLOW_CONN_DEXCARE_WAREHOUSE": postgres_connection(pg_uri),
            # Failures surface at once instead of after minutes of retries.
            "DEXCARE_DAG_RETRIES": "0",
            "DEXCARE_DAG_RETRY_DELAY_SECONDS": "1",
        },
    )
    started = time.monotonic()
    try:
        with stack.timed("db migrate"):
            stack.cli("db", "migrate", timeout=240)
        with stack.timed("components healthy"):
            for name in ("api-server", "scheduler", "dag-processor", "triggerer"):
                stack.start(name)
            stack.wait_healthy(timeout=150)
        with stack.timed("DAG parsed"):
            dag = stack.wait_dag(DAG_ID)
        stack.api("PATCH", f"/dags/{DAG_ID}", json={"is_paused": False})
        assert dag["is_paused"] is True, "a new DAG should start paused, so the test unpauses it like a user"
        TIMINGS["startup"] = round(time.monotonic() - started, 1)
        yield stack
    finally:
        with stack.timed("shutdown"):
            survivors = stack.close()
        TIMINGS.update({f"stack {k}": v for k, v in stack.timings.items()})
        print(f"\nreal-airflow e2e timings (s): {json.dumps(TIMINGS)}; outputs in {stack.outputs}")
        assert not survivors, f"processes left running: {survivors}"


@pytest.fixture
def schema(pg_uri: str) -> Iterator[str]:
    """A fresh warehouse schema per scenario, dropped afterwards."""
    name = f"dexcare_e2e_{uuid.uuid4().hex[:8]}"
    yield name
    with psycopg.connect(pg_uri, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


# --- observing runs ---------------------------------------------------------------------------------------


@dataclass
class RunWatch:
    """What polling the API saw of one run: each task instance's states in order, and its triggers."""

    run_id: str
    states: dict[tuple[str, int], list[str]] = field(default_factory=dict)
    triggers: dict[tuple[str, int], list[tuple[int, str, int | None]]] = field(default_factory=dict)
    run: dict[str, Any] = field(default_factory=dict)

    def observe(self, stack: AirflowStack) -> list[dict[str, Any]]:
        tis = stack.api("GET", f"/dags/{DAG_ID}/dagRuns/{self.run_id}/taskInstances", params={"limit": 100})
        for ti in tis["task_instances"]:
            key = (ti["task_id"], ti["map_index"])
            seen = self.states.setdefault(key, [])
            if ti["state"] and (not seen or seen[-1] != ti["state"]):
                seen.append(ti["state"])
            trigger = ti.get("trigger")
            if trigger:
                entry = (trigger["id"], trigger["classpath"], trigger["triggerer_id"])
                known = self.triggers.setdefault(key, [])
                if entry not in known:
                    known.append(entry)
        self.run = stack.api("GET", f"/dags/{DAG_ID}/dagRuns/{self.run_id}")
        return tis["task_instances"]

    def sensors(self) -> dict[int, list[str]]:
        """Per map index; before expansion the mapped task shows up once more as map index -1, stateless."""
        return {m: s for (t, m), s in self.states.items() if t == SENSOR and m >= 0}

    def wait(self, stack: AirflowStack, timeout: float) -> dict[str, Any]:
        def finished() -> bool:
            stack.assert_running()
            self.observe(stack)
            return self.run["state"] in FINAL_STATES

        wait_for(f"run {self.run_id} to finish (seen so far: {self.states})", finished, timeout, interval=0.3)
        return self.run

    def failure_detail(self, stack: AirflowStack) -> str:
        return f"run {self.run_id}: {self.run.get('state')}; task states {self.states}\n{task_logs(stack)[-6000:]}"


def trigger_run(stack: AirflowStack, logical_date: str, conf: dict[str, Any]) -> RunWatch:
    """``POST /dags/{id}/dagRuns``, the call behind the UI's trigger button (with a params form)."""
    run = stack.api(
        "POST",
        f"/dags/{DAG_ID}/dagRuns",
        json={"logical_date": logical_date, "conf": conf, "note": "real-airflow e2e"},
    )
    assert run["conf"] == conf
    return RunWatch(run["dag_run_id"])


def base_conf(schema: str, tmp: Path, **params: Any) -> dict[str, Any]:
    return {
        "schema": schema,
        "poll_interval": 1,
        "lookback_days": LOOKBACK_DAYS,
        "failed_grace_minutes": 0.05,
        "storage": f"{tmp}/csv/",
        **params,
    }


def ti_log_dir(stack: AirflowStack, run_id: str, task_id: str, map_index: int) -> Path:
    return (
        stack.home / "logs" / f"dag_id={DAG_ID}" / f"run_id={run_id}" / f"task_id={task_id}" / f"map_index={map_index}"
    )


def trigger_log_files(stack: AirflowStack, run_id: str, map_index: int) -> list[Path]:
    """Trigger logs of a sensor's first try: the triggerer writes ``attempt=1.log.trigger.<its job id>.log``."""
    return sorted(ti_log_dir(stack, run_id, SENSOR, map_index).glob("attempt=1.log.trigger.*.log"))


def log_events(path: Path) -> list[str]:
    """The ``event`` texts of a JSON-lines task or trigger log."""
    events = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            events.append(str(json.loads(line).get("event", "")))
        except ValueError:
            events.append(line)
    return events


def task_logs(stack: AirflowStack) -> str:
    """Every task (and trigger) log file Airflow wrote under AIRFLOW_HOME/logs."""
    files = sorted(p for p in (stack.home / "logs").rglob("*") if p.is_file())
    return "\n".join(f"==> {p.relative_to(stack.home)}\n{p.read_text(errors='replace')}" for p in files)


# --- the warehouse ----------------------------------------------------------------------------------------


def visit_ids(pg_uri: str, schema: str, table: str) -> list[str]:
    with psycopg.connect(pg_uri) as conn:
        rows = conn.execute(
            sql.SQL("SELECT visit_id FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(table))
        ).fetchall()
    return [r[0] for r in rows]


def audit_rows(pg_uri: str, schema: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(pg_uri) as conn:
        return warehouse_audit_rows(conn, schema)


def reports_of(sandbox: SandboxServer, since: float) -> list[Any]:
    """Reports the sandbox started after ``since`` (time.monotonic()), oldest first."""
    return sorted((r for r in list(sandbox.reports.values()) if r.created >= since), key=lambda r: r.created)


def days(start: dt.date, end: dt.date) -> int:
    return (end - start).days + 1


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
        sensor_log = log_events(ti_log_dir(stack, watch.run_id, SENSOR, m) / "attempt=1.log")
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
