"""DexCareStartReportOperator (including reuse on retry) and DexCareReportStatusOperator."""

from __future__ import annotations

import logging
import time
import uuid

import pytest
from dexcare.compat import HAS_TASK_STATE_STORE
from dexcare.exceptions import DexCareNotFoundError, DexCareValidationError
from dexcare.operators.report_status import DexCareReportStatusOperator
from dexcare.operators.start_report import STATE_KEY, DexCareStartReportOperator

from tests.support.helpers import logged, posts
from tests.support.task_runtime import Runtime


def start_op(**kwargs) -> DexCareStartReportOperator:
    args = {
        "task_id": "start",
        "report_type": "retail",
        "report_start_date": "2026-11-01",
        "report_end_date": "2026-11-07",
    }
    return DexCareStartReportOperator(**{**args, **kwargs})


def test_starts_a_report_and_pushes_the_request(dexcare_conn_id, sandbox):
    rt = Runtime()
    report_id = rt.run(start_op())
    assert str(uuid.UUID(report_id)) == report_id
    assert rt.xcoms[("start", "return_value")] == report_id
    assert rt.xcoms[("start", "request")] == {
        "report_type": "retail",
        "start_date": "2026-11-01",
        "end_date": "2026-11-07",
    }
    if HAS_TASK_STATE_STORE:
        assert rt.stores["start"].get(STATE_KEY)["report_id"] == report_id
    assert posts(sandbox) == 1


def test_retry_reuses_a_report_that_is_still_running_or_succeeded(dexcare_conn_id, sandbox, caplog, capfd):
    rt = Runtime()
    with caplog.at_level(logging.INFO):
        first = rt.run(start_op(), try_number=1)
        again = rt.run(start_op(), try_number=2)  # QUEUED or RUNNING now
        time.sleep(0.6)
        third = rt.run(start_op(), try_number=3)  # SUCCEEDED now
    text = logged(caplog, capfd)
    if HAS_TASK_STATE_STORE:
        assert first == again == third
        assert posts(sandbox) == 1
        assert "Reusing report" in text and "SUCCEEDED" in text
    else:  # nothing survives a retry: every try starts its own report, and each try's log says why
        assert len({first, again, third}) == 3 and posts(sandbox) == 3
        assert "has no task state store (Airflow 3.3 and later have one): a retry" in text


@pytest.mark.parametrize("fault", ["cancel", "fail"])
def test_retry_starts_a_new_report_when_the_old_one_is_dead(dexcare_conn_id, sandbox, fault, caplog, capfd):
    sandbox.inject(fault)
    rt = Runtime()
    first = rt.run(start_op(), try_number=1)
    time.sleep(0.4)
    with caplog.at_level(logging.INFO):
        second = rt.run(start_op(), try_number=2)
    assert second != first and posts(sandbox) == 2
    expected = "starting a new report for the same request" if HAS_TASK_STATE_STORE else "has no task state store"
    assert expected in logged(caplog, capfd)


def test_retry_starts_a_new_report_when_the_old_one_expired(dexcare_conn_id, sandbox):
    sandbox.inject("expire", expire_seconds=0.1)
    rt = Runtime()
    first = rt.run(start_op(), try_number=1)
    time.sleep(0.3)
    second = rt.run(start_op(), try_number=2)
    assert second != first and posts(sandbox) == 2


def test_a_different_request_is_never_answered_with_the_old_report(dexcare_conn_id, sandbox):
    rt = Runtime()
    first = rt.run(start_op(), try_number=1)
    second = rt.run(start_op(report_end_date="2026-11-08"), try_number=2)
    assert second != first and posts(sandbox) == 2


def test_reuse_can_be_turned_off_and_needs_a_state_store(dexcare_conn_id, sandbox):
    rt = Runtime()
    a = rt.run(start_op(reuse_previous=False), try_number=1)
    b = rt.run(start_op(reuse_previous=False), try_number=2)
    ctx = rt.context("start", try_number=3, store=False)  # Airflow < 3.3: no task state store
    c = start_op().execute(ctx)
    assert len({a, b, c}) == 3 and posts(sandbox) == 3


def test_bad_input_fails_at_parse_time_or_before_any_request(dexcare_conn_id, sandbox):
    with pytest.raises(DexCareValidationError, match="Unknown DexCare report type"):
        start_op(report_type="weekly")
    with pytest.raises(DexCareValidationError, match="both start_date and end_date"):
        start_op(report_end_date=None)
    templated = start_op(report_start_date="{{ ds }}")  # fine at parse time; rendered later
    templated.report_start_date = "2026-13-01"  # what a bad template would render to
    with pytest.raises(DexCareValidationError, match="not an ISO date"):
        templated.execute(Runtime().context("start"))
    with pytest.raises(DexCareValidationError, match="use report_start_date"):
        start_op(start_date="2026-11-01")  # the task's own start_date, not the window
    assert sandbox.request_log == []


def test_status_operator_returns_the_status_string(dexcare_conn_id, sandbox):
    rt = Runtime()
    report_id = rt.run(start_op())
    time.sleep(0.6)
    op = DexCareReportStatusOperator(task_id="status", report_id=report_id)
    assert rt.run(op) == "SUCCEEDED"
    with pytest.raises(DexCareNotFoundError):
        DexCareReportStatusOperator(task_id="s2", report_id=str(uuid.uuid4())).execute(rt.context("s2"))
    with pytest.raises(DexCareValidationError):
        DexCareReportStatusOperator(task_id="s3", report_id="abc")
