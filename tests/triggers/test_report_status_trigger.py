"""DexCareReportStatusTrigger against the sandbox over loopback: every way a wait can end."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid

import pytest
from airflow.models.trigger import Trigger
from dexcare.exceptions import DexCareError, DexCareValidationError
from dexcare.hooks.dexcare import DexCareHook
from dexcare.triggers.report_status import (
    CLASSPATH,
    EVENT_KEYS,
    DexCareReportStatusTrigger,
    validate_event,
)

from tests.support.airflow_compat import import_string
from tests.support.helpers import logged, posts, run_trigger

FAST = {"poll_interval": 0.05, "backoff_initial": 0.01, "backoff_max": 0.05}


def make(report_id: str, *, deadline_in: float = 20.0, **overrides) -> DexCareReportStatusTrigger:
    kwargs = {**FAST, **overrides}
    return DexCareReportStatusTrigger(report_id=report_id, deadline=time.time() + deadline_in, **kwargs)


def rebuilt(trigger: DexCareReportStatusTrigger) -> DexCareReportStatusTrigger:
    """What the triggerer does: kwargs through the metadata DB's encryption and serde, then the classpath."""
    classpath, kwargs = trigger.serialize()
    stored = Trigger.encrypt_kwargs(kwargs)
    return import_string(classpath)(**Trigger._decrypt_kwargs(stored))


# --- serialization and validation ------------------------------------------------------------------------


def test_round_trips_through_airflow_serialization():
    trigger = make(
        str(uuid.uuid4()),
        last_status="FAILED",
        last_status_since=time.time() - 3,
        request_timeout=5,
        consecutive_errors=2,
    )
    again = rebuilt(trigger)
    assert CLASSPATH == "dexcare.triggers.report_status.DexCareReportStatusTrigger"
    assert again.serialize() == trigger.serialize()
    # Plain JSON values only, as Airflow 3.2+ serde demands.
    json.dumps(trigger.serialize()[1])


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("report_id", "not-a-guid"),
        ("deadline", "tomorrow"),
        ("poll_interval", 0),
        ("poll_interval", True),
        ("failed_grace_period", -1),
        ("max_consecutive_errors", 0),
        ("max_consecutive_errors", 2.5),
        ("consecutive_errors", -1),
        ("consecutive_errors", 10),  # the default budget: the wait should already have failed
        ("last_status", "DONE"),
        ("dexcare_conn_id", ""),
    ],
)
def test_rejects_non_plain_or_bad_kwargs_before_deferring(field, value):
    kwargs = {"report_id": str(uuid.uuid4()), "deadline": time.time() + 5, **FAST, field: value}
    with pytest.raises((DexCareValidationError, ValueError)):
        DexCareReportStatusTrigger(**kwargs)


def test_rejects_timedelta_poll_interval():
    import datetime as dt

    with pytest.raises(DexCareValidationError, match="poll_interval"):
        DexCareReportStatusTrigger(str(uuid.uuid4()), time.time() + 5, poll_interval=dt.timedelta(seconds=5))


def test_event_validation_is_strict():
    rid = str(uuid.uuid4())
    good = {
        "status": "success",
        "report_id": rid,
        "report_status": "SUCCEEDED",
        "status_since": 1.0,
        "message": "ok",
        "error": None,
        "polls": 1,
    }
    assert set(good) == EVENT_KEYS
    assert validate_event(dict(good), rid) == good
    with pytest.raises(DexCareError, match="without a trigger event"):
        validate_event(None, rid)
    with pytest.raises(DexCareError, match="Unknown trigger event status"):
        validate_event({**good, "status": "done"}, rid)
    with pytest.raises(DexCareError, match="missing keys"):
        validate_event({k: v for k, v in good.items() if k != "message"}, rid)
    with pytest.raises(DexCareError, match="unknown keys"):
        validate_event({**good, "extra": 1}, rid)
    with pytest.raises(DexCareError, match="waits for"):
        validate_event(good, str(uuid.uuid4()))
    with pytest.raises(DexCareError, match="says success"):
        validate_event({**good, "report_status": "RUNNING"}, rid)


# --- runs against the sandbox ----------------------------------------------------------------------------


async def test_success_and_no_post_from_the_trigger(dexcare_conn_id, sandbox):
    report_id = DexCareHook().start_report("virtual")
    before = posts(sandbox)
    event = await run_trigger(rebuilt(make(report_id)))
    assert event["status"] == "success" and event["report_status"] == "SUCCEEDED"
    assert event["report_id"] == report_id and event["polls"] >= 2
    assert posts(sandbox) == before == 1


def succeeded_report() -> str:
    hook = DexCareHook()
    report_id = hook.start_report("virtual")
    while hook.get_report_status(report_id) != "SUCCEEDED":
        time.sleep(0.05)
    return report_id


async def test_a_status_handed_over_by_the_worker_is_not_asked_again_at_once(dexcare_conn_id, sandbox):
    """The worker just checked; an immediate repeat is redundant and can race Airflow's scheduler."""
    report_id = succeeded_report()
    checks_before = len(sandbox.request_log)
    started = time.monotonic()
    trigger = rebuilt(make(report_id, poll_interval=1.0, last_status="RUNNING", last_status_since=time.time()))
    event = await run_trigger(trigger)
    assert event["status"] == "success" and event["polls"] == 1
    assert len(sandbox.request_log) == checks_before + 1
    assert time.monotonic() - started >= 1.0  # one poll interval before the first check


async def test_failed_then_back_to_queued_inside_grace_is_not_a_failure(dexcare_conn_id, sandbox, caplog, capfd):
    sandbox.inject("fail_then_retry", failed_seconds=0.4)
    report_id = DexCareHook().start_report("virtual")
    with caplog.at_level(logging.INFO):
        event = await run_trigger(make(report_id, failed_grace_period=3.0))
    assert event["status"] == "success"
    text = logged(caplog, capfd)
    assert "FAILED is provisional" in text
    assert "FAILED -> QUEUED after" in text and "grace period is reset" in text
    assert posts(sandbox) == 1


async def test_terminal_failed_after_grace(dexcare_conn_id, sandbox):
    sandbox.inject("fail")
    report_id = DexCareHook().start_report("virtual")
    started = time.monotonic()
    event = await run_trigger(make(report_id, failed_grace_period=0.5))
    elapsed = time.monotonic() - started
    assert event["status"] == "failed" and event["report_status"] == "FAILED"
    assert "stayed FAILED" in event["message"]
    assert 0.5 <= elapsed < 5


async def test_cancelled_is_final_at_once(dexcare_conn_id, sandbox):
    sandbox.inject("cancel")
    report_id = DexCareHook().start_report("virtual")
    event = await run_trigger(make(report_id, failed_grace_period=30))
    assert event["status"] == "cancelled" and event["report_status"] == "CANCELLED"


async def test_rides_out_a_burst_of_500s(dexcare_conn_id, sandbox, caplog, capfd):
    report_id = DexCareHook().start_report("virtual")
    sandbox.inject("http_500", count=4, endpoint="status")
    with caplog.at_level(logging.WARNING):
        event = await run_trigger(make(report_id, max_consecutive_errors=5))
    assert event["status"] == "success"
    assert logged(caplog, capfd).count("DexCareServerError") >= 4
    assert [r[2] for r in sandbox.request_log if r[0] == "GET"][:4] == [500] * 4


async def test_error_budget_is_consecutive_and_then_ends_the_wait(dexcare_conn_id, sandbox):
    report_id = DexCareHook().start_report("virtual")
    sandbox.inject("http_500", count=3, endpoint="status")
    event = await run_trigger(make(report_id, max_consecutive_errors=3))
    assert event["status"] == "error" and event["error"] == "DexCareServerError"
    assert "3 transient errors in a row" in event["message"]


async def test_the_error_count_continues_from_the_worker(dexcare_conn_id, sandbox):
    report_id = DexCareHook().start_report("virtual")
    sandbox.inject("http_500", count=1, endpoint="status")
    event = await run_trigger(make(report_id, max_consecutive_errors=3, consecutive_errors=2))
    assert event["status"] == "error" and "3 transient errors in a row" in event["message"]
    assert [r[2] for r in sandbox.request_log if r[0] == "GET"] == [500]


async def test_a_good_check_resets_the_count_handed_over_by_the_worker(slow_sandbox):
    report_id = DexCareHook().start_report("virtual")  # RUNNING for a minute
    trigger = make(report_id, deadline_in=2.0, poll_interval=0.1, max_consecutive_errors=3, consecutive_errors=2)
    task = asyncio.ensure_future(run_trigger(trigger))
    for _ in range(500):  # the sandbox records requests in its own thread: poll its log
        if any(method == "GET" for method, _path, _status in slow_sandbox.request_log):
            break
        await asyncio.sleep(0.01)
    slow_sandbox.inject("http_500", count=2, endpoint="status")  # two more in a row: 2 of 3, not 4 of 3
    event = await task
    assert event["status"] == "timeout"
    assert [r[2] for r in slow_sandbox.request_log if r[0] == "GET"][:3] == [200, 500, 500]


async def test_429_retry_after_is_honoured(dexcare_conn_id, sandbox):
    report_id = DexCareHook().start_report("virtual")
    sandbox.inject("http_429", count=1, endpoint="status", retry_after=1)
    started = time.monotonic()
    event = await run_trigger(make(report_id))
    assert event["status"] == "success"
    assert time.monotonic() - started >= 1.0  # our own backoff is <= 0.05 s: the wait came from Retry-After


async def test_403_ends_the_wait_at_once_naming_the_key(sandbox, monkeypatch):
    from tests.support.helpers import set_connection

    set_connection(monkeypatch, "dexcare_default", sandbox.url, "wrong-key-123")
    event = await run_trigger(make(str(uuid.uuid4())))
    assert event["status"] == "error" and event["error"] == "DexCareAuthError"
    assert "Reporting service key" in event["message"] and "wrong-key-123" not in event["message"]
    assert len(sandbox.request_log) == 1


async def test_404_ends_the_wait_at_once(dexcare_conn_id, sandbox):
    event = await run_trigger(make(str(uuid.uuid4())))
    assert event["status"] == "error" and event["error"] == "DexCareNotFoundError"
    assert "expired" in event["message"]
    assert len(sandbox.request_log) == 1


async def test_missing_connection_is_an_error_event(monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_DEXCARE_DEFAULT", raising=False)
    event = await run_trigger(make(str(uuid.uuid4()), dexcare_conn_id="no_such_dexcare_conn"))
    assert event["status"] == "error" and "no_such_dexcare_conn" in event["message"]


async def test_deadline_gives_timeout_with_the_last_status(slow_sandbox):
    report_id = DexCareHook().start_report("retail")
    started = time.monotonic()
    event = await run_trigger(make(report_id, deadline_in=0.6, poll_interval=0.2))
    elapsed = time.monotonic() - started
    assert event["status"] == "timeout" and event["report_status"] == "RUNNING"
    assert "still RUNNING" in event["message"] and "deadline" in event["message"]
    assert 0.5 <= elapsed < 2.0


async def test_report_that_finishes_on_the_last_poll_is_not_failed(dexcare_conn_id, sandbox):
    report_id = DexCareHook().start_report("virtual")  # SUCCEEDED after ~0.3 s
    # One poll now (QUEUED), the next only at the deadline: it must see SUCCEEDED, not time out.
    event = await run_trigger(make(report_id, deadline_in=1.0, poll_interval=30))
    assert event["status"] == "success" and event["polls"] == 2


async def test_restart_keeps_the_same_deadline(slow_sandbox):
    report_id = DexCareHook().start_report("virtual")
    first = make(report_id, deadline_in=1.2, poll_interval=0.1)
    started = time.monotonic()
    task = asyncio.ensure_future(run_trigger(first))
    await asyncio.sleep(0.5)
    task.cancel()  # the triggerer dies
    with pytest.raises(asyncio.CancelledError):
        await task
    second = rebuilt(first)  # a new triggerer builds the trigger from the stored kwargs
    assert second.deadline == first.deadline
    event = await run_trigger(second)
    elapsed = time.monotonic() - started
    assert event["status"] == "timeout"
    assert 1.1 <= elapsed < 1.6, elapsed  # not 0.5 + 1.2: the clock did not restart
    assert posts(slow_sandbox) == 1


def test_classpath_imports_in_a_fresh_interpreter():
    """What the triggerer does in its own process: import by classpath, build from stored kwargs."""
    import subprocess
    import sys

    trigger = make(str(uuid.uuid4()))
    classpath, kwargs = trigger.serialize()
    code = (
        "import importlib, json, sys\n"
        f"module, _, name = {classpath!r}.rpartition('.')\n"
        "t = getattr(importlib.import_module(module), name)(**json.loads(sys.argv[1]))\n"
        "print(json.dumps(t.serialize()[1]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, json.dumps(kwargs)], capture_output=True, text=True, timeout=60, check=True
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == kwargs
