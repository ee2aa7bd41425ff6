"""DexCareReportSensor in deferrable, poke and reschedule modes, with resubmission, against the sandbox."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from dexcare.compat import HAS_TASK_STATE_STORE, AirflowRescheduleException, AirflowSensorTimeout, TaskDeferred
from dexcare.exceptions import DexCareError, DexCareNotFoundError, DexCareReportFailedError, DexCareValidationError
from dexcare.operators.start_report import DexCareStartReportOperator
from dexcare.sensors.report import DexCareReportSensor
from dexcare.triggers.report_status import CLASSPATH

from tests.support.helpers import logged, posts
from tests.support.task_runtime import Runtime

DAILY_DAG = Path(__file__).resolve().parents[2] / "dags" / "dexcare_all_visits_report.py"
FAST = {"poll_interval": 0.05, "failed_grace_period": 0.4, "deferrable": True}


def start(rt: Runtime, report_type: str = "virtual", **kwargs) -> str:
    op = DexCareStartReportOperator(
        task_id="start",
        report_type=report_type,
        report_start_date="2026-11-01",
        report_end_date="2026-11-03",
        **kwargs,
    )
    return rt.run(op)


def status_codes(sandbox, report_id: str) -> list[int]:
    """The answers to status requests for one report, in order."""
    return [status for method, path, status in sandbox.request_log if method == "GET" and path.endswith(report_id)]


def sensor(report_id: str, **kwargs) -> DexCareReportSensor:
    return DexCareReportSensor(task_id="wait", report_id=report_id, request_task_id="start", **{**FAST, **kwargs})


# --- deferrable (the default) ---------------------------------------------------------------------------


async def test_deferrable_waits_in_the_trigger_and_returns_the_id(dexcare_conn_id, sandbox):
    rt = Runtime()
    report_id = start(rt)
    wait = sensor(report_id, timeout=30)
    assert wait.deferrable is True
    result = await rt.run_deferrable(wait)
    assert result == report_id
    assert len(rt.deferrals) == 1
    classpath, kwargs, backstop = rt.deferrals[0]
    assert classpath == CLASSPATH and kwargs["report_id"] == report_id
    assert abs(kwargs["deadline"] - (time.time() + 30)) < 5  # absolute, computed on the worker
    assert backstop > dt.timedelta(seconds=25)
    assert rt.xcoms[("wait", "report_id")] == report_id
    assert rt.xcoms[("wait", "request")] == {
        "report_type": "virtual",
        "start_date": "2026-11-01",
        "end_date": "2026-11-03",
    }
    assert posts(sandbox) == 1


async def test_the_wait_state_is_kept_in_one_place(dexcare_conn_id, sandbox):
    """The deferral carries nothing (``airflow dags test`` would drop it): with a task state store the store is
    the one copy; without one (Airflow before 3.3) the task's own XCom, which Airflow keeps while it is deferred."""
    sandbox.inject("fail", count=1)
    rt = Runtime()
    first = start(rt)
    result = await rt.run_deferrable(sensor(first, max_resubmits=1), store=True)
    assert rt.resume_kwargs == [{}, {}]
    assert rt.stores["wait"].get("dexcare_wait")["report_ids"] == [first, result]

    sandbox.inject("fail", count=1)
    rt = Runtime()
    first = start(rt)
    result = await rt.run_deferrable(sensor(first, max_resubmits=1), store=False)
    assert result != first and "wait" not in rt.stores
    assert rt.resume_kwargs == [{}, {}]
    assert rt.xcoms[("wait", "dexcare_wait")]["report_ids"] == [first, result]


async def test_does_not_defer_for_a_report_that_is_already_final(dexcare_conn_id, sandbox):
    rt = Runtime()
    report_id = start(rt)
    await asyncio.sleep(0.6)  # SUCCEEDED by now
    assert await rt.run_deferrable(sensor(report_id)) == report_id
    assert rt.deferrals == []


async def test_cancelled_without_resubmits_fails_before_deferring_with_advice(dexcare_conn_id, sandbox):
    sandbox.inject("cancel")
    rt = Runtime()
    report_id = start(rt)
    await asyncio.sleep(0.3)
    with pytest.raises(DexCareReportFailedError) as failed:
        await rt.run_deferrable(sensor(report_id))
    assert rt.deferrals == []
    message = str(failed.value)
    assert report_id in message and "was CANCELLED" in message
    assert "What to do" in message and "set max_resubmits" in message


async def test_resubmits_a_failed_report_from_the_worker(dexcare_conn_id, sandbox, caplog, capfd):
    sandbox.inject("fail", count=1)
    rt = Runtime()
    first = start(rt)
    with caplog.at_level(logging.INFO):
        result = await rt.run_deferrable(sensor(first, max_resubmits=2))
    assert result != first
    assert rt.xcoms[("wait", "report_ids")] == [first, result]
    assert rt.xcoms[("wait", "report_id")] == result
    assert posts(sandbox) == 2  # one by the start task, one resubmission: none from the trigger
    assert len(rt.deferrals) == 2 and rt.deferrals[1][1]["report_id"] == result
    assert rt.deferrals[0][1]["deadline"] == rt.deferrals[1][1]["deadline"]  # the same clock goes on
    text = logged(caplog, capfd)
    assert "Resubmission 1 of 2" in text and "stayed FAILED" in text


async def test_resubmissions_run_out_with_a_clear_message(dexcare_conn_id, sandbox):
    sandbox.inject("fail", count=2)
    rt = Runtime()
    first = start(rt)
    with pytest.raises(DexCareReportFailedError) as failed:
        await rt.run_deferrable(sensor(first, max_resubmits=1))
    ids = rt.xcoms[("wait", "report_ids")]
    assert len(ids) == 2 and ids[0] == first
    message = str(failed.value)
    assert all(i in message for i in ids) and "1 resubmission(s), max_resubmits=1" in message
    assert "virtual report for 2026-11-01..2026-11-03" in message and "What to do" in message
    assert posts(sandbox) == 2


async def test_deadline_fails_as_sensor_timeout(slow_sandbox):
    rt = Runtime()
    report_id = start(rt)
    started = time.monotonic()
    with pytest.raises(AirflowSensorTimeout, match="still RUNNING"):
        await rt.run_deferrable(sensor(report_id, timeout=0.8, poll_interval=0.2))
    assert 0.7 <= time.monotonic() - started < 3


async def test_a_report_that_expires_while_waited_on_ends_the_wait_naming_404(dexcare_conn_id, sandbox):
    rt = Runtime()
    bogus = str(uuid.uuid4())
    with pytest.raises(DexCareNotFoundError, match="404"):
        await rt.run_deferrable(sensor(bogus))


async def test_resume_rejects_a_missing_event(dexcare_conn_id, sandbox):
    rt = Runtime()
    report_id = start(rt)
    wait = sensor(report_id)
    ctx = rt.context("wait")
    with pytest.raises(TaskDeferred) as deferred:
        wait.execute(ctx)
    with pytest.raises(DexCareError, match="without a trigger event"):
        wait.resume_execution("execute_complete", {**deferred.value.kwargs, "event": None}, ctx)


# --- non-deferrable --------------------------------------------------------------------------------------


def test_poke_mode_rides_out_a_failed_flip(dexcare_conn_id, sandbox, caplog, capfd):
    sandbox.inject("fail_then_retry", failed_seconds=0.3)
    rt = Runtime()
    report_id = start(rt)
    with caplog.at_level(logging.INFO):
        result = rt.run(sensor(report_id, deferrable=False, failed_grace_period=3, timeout=20))
    assert result == report_id
    assert "FAILED -> QUEUED" in logged(caplog, capfd)
    assert posts(sandbox) == 1


def test_poke_mode_resubmits(dexcare_conn_id, sandbox):
    sandbox.inject("cancel", count=1)
    rt = Runtime()
    first = start(rt)
    result = rt.run(sensor(first, deferrable=False, max_resubmits=1, timeout=20))
    assert result not in (None, first) and rt.xcoms[("wait", "report_ids")] == [first, result]


def test_reschedule_mode_keeps_grace_and_resubmissions_across_pokes(dexcare_conn_id, sandbox):
    sandbox.inject("fail", count=1)
    rt = Runtime()
    first = start(rt)
    if not HAS_TASK_STATE_STORE:  # nothing would keep them, so reschedule mode is refused before any request
        with pytest.raises(DexCareValidationError, match=r"has no task state store \(Airflow 3.3 and later"):
            sensor(first, deferrable=False, mode="reschedule", max_resubmits=1).execute(rt.context("wait"))
        assert posts(sandbox) == 1 and len(sandbox.request_log) == 1
        return
    reschedules = 0
    first_poke = None
    while True:
        wait = sensor(first, deferrable=False, mode="reschedule", max_resubmits=1, timeout=20)  # fresh process
        rt.xcoms = {k: v for k, v in rt.xcoms.items() if k[0] != "wait"}  # Airflow clears XCom per reschedule
        ctx = rt.context("wait")
        ctx["ti"].first_reschedule_date = first_poke
        try:
            result = wait.execute(ctx)
            break
        except AirflowRescheduleException:
            reschedules += 1
            first_poke = first_poke or dt.datetime.now(dt.UTC)
            assert reschedules < 100
            time.sleep(0.05)
    assert result not in (None, first)
    assert rt.stores["wait"].get("dexcare_wait")["report_ids"] == [first, result]
    assert rt.stores["wait"].get("dexcare_wait")["resubmits"] == 1
    assert posts(sandbox) == 2  # a grace period forgotten between pokes would never resubmit
    assert reschedules >= 3


def test_reschedule_mode_without_a_state_store_is_refused(dexcare_conn_id, sandbox):
    wait = sensor(str(uuid.uuid4()), deferrable=False, mode="reschedule")
    ctx = Runtime().context("wait", store=False)
    with pytest.raises(DexCareValidationError, match="task state store"):
        wait.execute(ctx)
    assert sandbox.request_log == []


def test_a_new_try_continues_on_the_newest_report_of_the_chain(dexcare_conn_id, sandbox, caplog, capfd):
    sandbox.inject("cancel", count=1)
    rt = Runtime()
    first = start(rt)
    time.sleep(0.3)
    wait = sensor(first, deferrable=False, max_resubmits=1)
    ctx = rt.context("wait", try_number=1)
    # Try 1 sees CANCELLED and resubmits, then its worker dies before the new report finishes.
    assert not wait.poke(ctx)
    second = rt.xcoms[("wait", "report_id")]
    assert second != first and posts(sandbox) == 2
    with caplog.at_level(logging.INFO):
        result = rt.run(sensor(first, deferrable=False, max_resubmits=1), try_number=2)
    if HAS_TASK_STATE_STORE:
        # Try 2 starts from the same templated id but waits on the second report, without another POST.
        assert result == second and posts(sandbox) == 2
    else:
        # Nothing tells try 2 about the second report: it finds the first CANCELLED and requests it again.
        assert result not in (first, second) and posts(sandbox) == 3
        assert f"the next one waits on report {first} again" in logged(caplog, capfd)


# --- validation ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("default_deferrable", "expected"), [(None, "False True"), ("True", "True True")])
def test_deferrable_follows_airflows_default_and_the_daily_dag_defers_anyway(default_deferrable, expected, tmp_path):
    """Like the official providers' sensors; in a fresh interpreter, because the default is read at import."""
    env = {k: v for k, v in os.environ.items() if k != "AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE"}
    if default_deferrable is not None:
        env["AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE"] = default_deferrable
    code = (
        "import importlib.util, uuid\n"
        "from dexcare.sensors.report import DexCareReportSensor\n"
        "sensor = DexCareReportSensor(task_id='w', report_id=str(uuid.uuid4()))\n"
        f"spec = importlib.util.spec_from_file_location('daily', {str(DAILY_DAG)!r})\n"
        "daily = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(daily)\n"
        "print(sensor.deferrable, daily.dag.get_task('fetch.wait_for_report').deferrable)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == expected


def test_settings_are_checked_when_the_dag_is_parsed():
    with pytest.raises(DexCareValidationError, match="GUID"):
        DexCareReportSensor(task_id="w", report_id="42")
    with pytest.raises(DexCareValidationError, match="max_resubmits"):
        DexCareReportSensor(task_id="w", report_id=str(uuid.uuid4()), max_resubmits=-1)
    with pytest.raises(DexCareValidationError, match="failed_grace_period"):
        DexCareReportSensor(task_id="w", report_id=str(uuid.uuid4()), failed_grace_period="10m")
    DexCareReportSensor(task_id="w", report_id="{{ ti.xcom_pull('start') }}")  # templates wait for runtime


def test_an_endless_timeout_is_refused_when_the_dag_is_parsed():
    """The trigger needs a finite deadline: refusing "inf" only when the task defers would come after the
    report was started."""
    with pytest.raises(DexCareValidationError, match="timeout must be a finite number of seconds, got 'inf'"):
        DexCareReportSensor(task_id="w", report_id=str(uuid.uuid4()), timeout="inf")
    with pytest.raises(DexCareValidationError, match="timeout must be a finite number"):
        DexCareReportSensor(task_id="w", report_id=str(uuid.uuid4()), timeout=float("inf"))
    with pytest.raises(DexCareValidationError, match="timeout must be at most"):
        DexCareReportSensor(task_id="w", report_id=str(uuid.uuid4()), timeout=dt.timedelta(days=365 * 100))


def test_a_setting_that_renders_to_something_the_trigger_refuses_fails_before_any_request(dexcare_conn_id, sandbox):
    rt = Runtime()
    report_id = start(rt)
    for name, rendered in [("timeout", "inf"), ("poll_interval", "0"), ("failed_grace_period", "nan")]:
        template = "{{ params.value }}"
        wait = DexCareReportSensor(task_id="wait", report_id=report_id, request_task_id="start", **{name: template})
        ctx = rt.context("wait")
        ctx["params"] = {"value": rendered}
        wait.render_template_fields(ctx)
        before = len(sandbox.request_log)
        with pytest.raises(DexCareValidationError, match=name):
            wait.execute(ctx)
        assert len(sandbox.request_log) == before  # not even a status check
    assert posts(sandbox) == 1


def test_resubmission_without_a_known_request_is_refused_before_any_call(dexcare_conn_id, sandbox):
    wait = DexCareReportSensor(task_id="wait", report_id=str(uuid.uuid4()), max_resubmits=1)
    with pytest.raises(DexCareValidationError, match="type and window"):
        wait.execute(Runtime().context("wait"))
    assert sandbox.request_log == []


def test_output_of_the_start_task_is_where_the_request_comes_from():
    from airflow.sdk import DAG

    with DAG("d", schedule=None):
        op = DexCareStartReportOperator(task_id="start_it", report_type="retail")
        wait = DexCareReportSensor(task_id="wait", report_id=op.output)
    assert wait.request_task_id == "start_it"


# --- handoff and transient errors ------------------------------------------------------------------------


async def test_failed_seen_on_the_worker_keeps_its_clock_in_the_trigger(dexcare_conn_id, sandbox):
    sandbox.inject("fail")
    rt = Runtime()
    report_id = start(rt)
    await asyncio.sleep(0.5)  # FAILED by now
    started = time.time()
    with pytest.raises(DexCareReportFailedError, match="stayed FAILED"):
        await rt.run_deferrable(sensor(report_id, failed_grace_period=1.0))
    _classpath, kwargs, _ = rt.deferrals[0]
    assert kwargs["last_status"] == "FAILED" and started <= kwargs["last_status_since"] < started + 0.5
    assert time.time() - started < 1.8  # grace counted from the worker's first sight, not restarted


def test_poke_mode_counts_consecutive_transient_errors(dexcare_conn_id, sandbox):
    rt = Runtime()
    report_id = start(rt)
    sandbox.inject("http_500", count=2, endpoint="status")
    assert rt.run(sensor(report_id, deferrable=False, max_consecutive_errors=3, timeout=20)) == report_id

    rt = Runtime()
    report_id = start(rt)
    sandbox.inject("http_500", count=3, endpoint="status")
    with pytest.raises(DexCareError, match="3 failed status checks in a row"):
        rt.run(sensor(report_id, deferrable=False, max_consecutive_errors=3, timeout=20))
    # Three failed status requests, not three checks of up to five requests each.
    assert status_codes(sandbox, report_id) == [500, 500, 500]


async def test_consecutive_errors_are_counted_across_the_worker_and_the_trigger(dexcare_conn_id, sandbox):
    rt = Runtime()
    report_id = start(rt)
    sandbox.inject("http_500", count=3, endpoint="status")
    with pytest.raises(DexCareError, match="3 transient errors in a row"):
        await rt.run_deferrable(sensor(report_id, max_consecutive_errors=3))
    assert rt.deferrals[0][1]["consecutive_errors"] == 1  # the worker's failed check
    assert status_codes(sandbox, report_id) == [500, 500, 500]

    rt = Runtime()
    report_id = start(rt)
    sandbox.inject("http_500", count=2, endpoint="status")
    assert await rt.run_deferrable(sensor(report_id, max_consecutive_errors=3)) == report_id
    assert status_codes(sandbox, report_id)[:3] == [500, 500, 200]


def test_settings_can_be_templates_rendered_at_run_time(dexcare_conn_id, sandbox):
    sandbox.inject("cancel", count=1)
    rt = Runtime()
    first = start(rt)
    wait = DexCareReportSensor(
        task_id="wait",
        report_id=first,
        request_task_id="start",
        deferrable=False,
        poll_interval="{{ params.poll }}",
        timeout="{{ params.hours * 3600 }}",
        failed_grace_period="{{ params.grace }}",
        max_resubmits="{{ params.resubmits }}",
    )
    ctx = rt.context("wait")
    ctx["params"] = {"poll": 0.05, "hours": 1, "grace": 0.2, "resubmits": 1}
    wait.render_template_fields(ctx)
    result = wait.execute(ctx)
    assert result != first and posts(sandbox) == 2
    assert (wait.poke_interval, wait.timeout, wait.max_resubmits) == (0.05, 3600.0, 1)

    bad = DexCareReportSensor(task_id="wait", report_id=first, max_resubmits="{{ params.resubmits }}")
    ctx["params"] = {"resubmits": "two"}
    bad.render_template_fields(ctx)
    with pytest.raises(DexCareValidationError, match="max_resubmits must be an integer"):
        bad.execute(ctx)
    assert posts(sandbox) == 2
