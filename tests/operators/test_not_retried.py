"""Errors README calls "not retried" fail the task for good: no hook retry, and no Airflow task retry either.

A wrong key answers 403 on every try, so Airflow's retries (three, with backoff, in the daily DAG) only page the
on-call engineer later. Each task runs one try through Airflow's own task runner with retries=3
(``tests.support.airflow_task_runner``) against the sandbox: the answer must be FAILED, not UP_FOR_RETRY.
"""

from __future__ import annotations

import uuid

import pytest
from dexcare.compat import TaskDeferred
from dexcare.exceptions import DexCareAuthError, DexCareError, DexCareNotFoundError
from dexcare.hooks.dexcare import DexCareHook
from dexcare.operators.download_report import DexCareDownloadReportOperator
from dexcare.operators.report_status import DexCareReportStatusOperator
from dexcare.operators.start_report import DexCareStartReportOperator
from dexcare.sensors.report import DexCareReportSensor

from tests.support.airflow_task_runner import run_one_try
from tests.support.helpers import run_trigger, set_connection
from tests.support.task_runtime import FakeStateStore, Runtime

REPORT_ID = str(uuid.uuid4())


def operators(tmp_path) -> dict:
    return {
        "start": lambda: DexCareStartReportOperator(task_id="start", report_type="virtual"),
        "status": lambda: DexCareReportStatusOperator(task_id="status", report_id=REPORT_ID),
        "download": lambda: DexCareDownloadReportOperator(
            task_id="download", report_id=REPORT_ID, report_type="virtual", destination=str(tmp_path / "r.csv")
        ),
        "sensor": lambda: DexCareReportSensor(task_id="wait", report_id=REPORT_ID, deferrable=True),
    }


@pytest.mark.parametrize("task", ["start", "status", "download", "sensor"])
def test_a_wrong_key_fails_the_task_with_no_further_try(task, sandbox, monkeypatch, tmp_path):
    set_connection(monkeypatch, "dexcare_default", sandbox.url, "wrong-key-123")
    state, error = run_one_try(operators(tmp_path)[task](), retries=3, context={"task_state_store": FakeStateStore()})
    assert isinstance(error, DexCareAuthError)
    assert state == "failed"
    assert [status for _method, _path, status in sandbox.request_log] == [403]  # the hook did not retry either
    assert not (tmp_path / "r.csv").exists()


async def resume_after_the_trigger(sandbox, **faults) -> tuple[str, BaseException | None]:
    """Start a report, wait on it (the worker's check, then the real trigger), resume the sensor through Airflow's
    runner with the trigger's event as the triggerer stores it."""
    for kind, params in faults.items():
        sandbox.inject(kind, **params)
    report_id = DexCareHook().start_report("virtual")
    rt = Runtime()
    ctx = rt.context("wait", store=True)
    wait = DexCareReportSensor(
        task_id="wait", report_id=report_id, deferrable=True, poll_interval=0.05, max_consecutive_errors=2
    )
    with pytest.raises(TaskDeferred) as deferred:
        wait.execute(ctx)
    event = await run_trigger(deferred.value.trigger)
    assert event["status"] == "error"
    return run_one_try(
        wait,
        retries=3,
        context={"task_state_store": ctx["task_state_store"]},
        next_method=deferred.value.method_name,
        next_kwargs={"event": event},
    )


async def test_a_resumed_sensor_fails_with_no_further_try_on_a_404_in_the_trigger(slow_sandbox):
    state, error = await resume_after_the_trigger(slow_sandbox, expire={"expire_seconds": 0.3})
    assert "404" in str(error)
    assert state == "failed"


async def test_a_resumed_sensor_is_retried_when_transient_errors_spent_its_budget(slow_sandbox):
    """The other side: DexCare was down (5xx in a row); another try may find it up again."""
    state, error = await resume_after_the_trigger(slow_sandbox, http_500={"count": 5, "endpoint": "status"})
    assert isinstance(error, DexCareError) and not isinstance(error, DexCareNotFoundError)
    assert "transient errors in a row" in str(error)
    assert state == "up_for_retry"

