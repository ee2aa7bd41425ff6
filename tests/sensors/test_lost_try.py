"""A sensor try that Airflow loses after its wait has ended is retried and resumes the same report.

Airflow's scheduler can fail a deferred try whose trigger has already fired, when it processes the stale
"success" of the worker's exit at deferral after the task was requeued (apache/airflow#71580, #67287,
#72716). Here the first try defers, the real trigger runs against the sandbox and fires SUCCEEDED, and then
the resume is lost (never called), as in that race: Airflow's task retry starts a second try afresh, as the
scheduler would. That try must end SUCCESS with the same report, without another POST, and say why.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest
from dexcare.compat import HAS_TASK_STATE_STORE, TaskDeferred
from dexcare.sensors.report import DexCareReportSensor
from dexcare.wait.state import STATE_KEY

from tests.sensors.test_report_sensor import sensor, start
from tests.support.airflow_compat import deserialize, import_string, serialize
from tests.support.helpers import logged, posts, run_trigger
from tests.support.task_runtime import Runtime

RACE = "apache/airflow#71580"
MITIGATION = "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL=1"


async def defer_and_fire(rt: Runtime, wait: DexCareReportSensor, try_number: int = 1) -> tuple[Any, dict]:
    """Run a try until it defers, then the trigger it handed over, rebuilt from its serialized kwargs as the
    triggerer does; return the context and the event, whose resume the caller may call or lose."""
    ctx = rt.context("wait", try_number)
    with pytest.raises(TaskDeferred) as deferred:
        wait.execute(ctx)
    classpath, kwargs = deferred.value.trigger.serialize()
    event = await run_trigger(import_string(classpath)(**deserialize(serialize(kwargs))))
    return ctx, event


def spend_nothing(sandbox: Any) -> dict[str, Any]:
    return {}


def spend_the_resubmission(sandbox: Any) -> dict[str, Any]:
    """The given report ends CANCELLED at the first check: try 1 uses its one resubmission on it."""
    sandbox.inject("cancel", count=1)
    return {"max_resubmits": 1}


def spend_the_failed_checks(sandbox: Any) -> dict[str, Any]:
    """Try 1's first status check fails: one of its two failed checks in a row is spent before it defers."""
    sandbox.inject("http_500", endpoint="status", count=1)
    return {"max_consecutive_errors": 2}


def pass_the_deadline(sandbox: Any) -> dict[str, Any]:
    """Try 1's deadline passes while the task is being requeued (before try 2 starts)."""
    return {"timeout": 1.5}


@pytest.mark.parametrize(
    "spend", [spend_nothing, spend_the_resubmission, spend_the_failed_checks, pass_the_deadline]
)
async def test_a_try_lost_after_its_trigger_fired_succeeded_is_resumed_by_the_next(
    spend, dexcare_conn_id, sandbox, caplog, capfd
):
    rt = Runtime()
    options = spend(sandbox)
    resubmitted = spend is spend_the_resubmission
    origin = start(rt)
    if resubmitted:
        await asyncio.sleep(0.3)  # CANCELLED by the first check
    _, event = await defer_and_fire(rt, sensor(origin, **options))
    deferred_on = event["report_id"]
    assert event["status"] == "success" and (deferred_on != origin) == resubmitted
    before = posts(sandbox)
    assert before == 1 + resubmitted
    if spend is spend_the_failed_checks:
        assert next(status for method, _, status in sandbox.request_log if method == "GET") == 500
    if spend is pass_the_deadline:
        deadline = rt.stores["wait"].get(STATE_KEY) if HAS_TASK_STATE_STORE else rt.xcoms[("wait", STATE_KEY)]
        await asyncio.sleep(max(deadline["deadline"] - time.time(), 0.0) + 0.1)
        assert time.time() > deadline["deadline"]
    capfd.readouterr()  # only the second try's log below
    caplog.clear()

    # The resume is lost: Airflow fails the try and its retry starts the task afresh.
    with caplog.at_level(logging.INFO):
        result = await rt.run_deferrable(sensor(origin, **options), try_number=2)
    text = logged(caplog, capfd)

    if HAS_TASK_STATE_STORE or not resubmitted:
        assert result == deferred_on
        assert posts(sandbox) == before  # nothing requested again
        assert rt.deferrals == []  # the first check saw SUCCEEDED
        assert rt.xcoms[("wait", "report_id")] == deferred_on
        assert RACE in text and MITIGATION in text
        if HAS_TASK_STATE_STORE:
            assert "Try 1 of this task was lost after its wait had already ended" in text
            # The summary counts the whole chain, not this try's budget.
            assert f"reports tried: {', '.join(dict.fromkeys([origin, deferred_on]))} ({int(resubmitted)} " in text
            assert f"the trigger had fired with SUCCEEDED for report {deferred_on}" in text
        else:  # nothing of try 1 was kept: the line says what may have happened
            assert f"This is try 2 and DexCare report {deferred_on} is already SUCCEEDED: if try 1 deferred" in text
    else:
        # Airflow before 3.3 keeps nothing across tries (the XCom stand-in lasts one try): try 2 waits on the
        # report it was given, finds it CANCELLED and requests it again. The run still succeeds.
        assert result not in (origin, deferred_on)
        assert posts(sandbox) == before + 1
        assert f"the next one waits on report {origin} again" in text
        assert RACE not in text


async def test_a_resumed_try_whose_success_airflow_discarded_is_explained(dexcare_conn_id, sandbox, caplog, capfd):
    """apache/airflow#72716: the resumed try is already RUNNING when the stale success fails it, so its own
    success is refused. The next try finds the wait recorded as ended and the report SUCCEEDED."""
    rt = Runtime()
    origin = start(rt)
    wait = sensor(origin)
    ctx, event = await defer_and_fire(rt, wait)
    assert wait.resume_execution("execute_complete", {"event": event}, ctx) == origin
    capfd.readouterr()
    with caplog.at_level(logging.INFO):
        result = await rt.run_deferrable(sensor(origin), try_number=2)
    text = logged(caplog, capfd)
    assert result == origin and posts(sandbox) == 1 and rt.deferrals == []
    assert RACE in text and MITIGATION in text
    if HAS_TASK_STATE_STORE:
        assert f"Try 1 of this task had already returned DexCare report {origin} SUCCEEDED" in text


async def test_a_try_lost_for_another_reason_is_not_blamed_on_the_race(dexcare_conn_id, slow_sandbox, caplog, capfd):
    """The earlier try deferred and was lost, but its report is still RUNNING: the race is not mentioned."""
    rt = Runtime()
    origin = start(rt)
    ctx = rt.context("wait", 1)
    with pytest.raises(TaskDeferred):
        sensor(origin).execute(ctx)
    # Saved as the trigger takes over: what the next try reads to know this try never resumed.
    saved = rt.stores["wait"].get(STATE_KEY) if HAS_TASK_STATE_STORE else rt.xcoms[("wait", STATE_KEY)]
    assert saved["stage"] == "deferred"
    with caplog.at_level(logging.INFO), pytest.raises(TaskDeferred):
        sensor(origin).execute(rt.context("wait", 2))
    assert RACE not in logged(caplog, capfd)
    assert posts(slow_sandbox) == 1
