"""WaitState: one object that loads, advances and saves the sensor's wait (pure apart from the state store)."""

from __future__ import annotations

import logging
import time
import uuid

import pytest
from dexcare.exceptions import DexCareError
from dexcare.report import ReportStatus
from dexcare.wait.state import STATE_KEY, EarlierTry, Stage, WaitState
from dexcare.wait.tracking import Verdict

from tests.support.task_runtime import Runtime

LOG = logging.getLogger("test")
ORIGIN = str(uuid.uuid4())


def begin(rt: Runtime, try_number: int = 1, *, store: bool = True, origin: str = ORIGIN) -> WaitState:
    return WaitState.begin(
        rt.context("wait", try_number, store=store), origin, timeout=60, grace_period=10, log=LOG
    )


def test_a_fresh_wait_is_saved_at_once_in_its_stable_form():
    rt = Runtime()
    state = begin(rt)
    assert (state.report_id, state.report_ids, state.resubmits, state.errors) == (ORIGIN, [ORIGIN], 0, 0)
    assert abs(state.deadline - (time.time() + 60)) < 5
    stored = rt.stores["wait"].get(STATE_KEY)
    # Tasks retried across an upgrade read this form: its keys do not change (keys are only added).
    assert set(stored) == {
        "origin", "try_number", "report_id", "deadline", "tracker", "report_ids", "resubmits", "errors", "started",
        "stage",
    }  # fmt: skip
    assert stored["stage"] == "worker"
    assert stored["tracker"] == {"report_id": ORIGIN, "failed_grace_period": 10.0, "status": None, "status_since": None}


def test_the_same_try_continues_and_a_new_try_keeps_the_newest_report_with_a_fresh_deadline():
    rt = Runtime()
    state = begin(rt)
    second = str(uuid.uuid4())
    state.resubmitted(second)
    state.deadline -= 30
    state.save()
    again = begin(rt)
    assert (again.report_id, again.resubmits, again.deadline) == (second, 1, state.deadline)
    retried = begin(rt, try_number=2)
    assert (retried.report_id, retried.report_ids, retried.resubmits) == (second, [ORIGIN, second], 0)
    assert retried.deadline > state.deadline
    assert retried.started == state.started  # the summary's "after waiting" counts every try


def test_a_wait_for_another_report_starts_over():
    rt = Runtime()
    begin(rt).resubmitted(str(uuid.uuid4()))
    other = str(uuid.uuid4())
    assert begin(rt, origin=other).report_ids == [other]


def test_advancing_saves_what_another_process_needs():
    rt = Runtime()
    state = begin(rt)
    assert state.check_failed() == 1 and rt.stores["wait"].get(STATE_KEY)["errors"] == 1
    assert state.observe(ReportStatus.RUNNING, 100.0) == (Verdict.WAIT, f"DexCare report {ORIGIN} is RUNNING.")
    stored = rt.stores["wait"].get(STATE_KEY)
    assert stored["errors"] == 0 and stored["tracker"]["status"] == "RUNNING"
    assert state.handoff() == {
        "report_id": ORIGIN,
        "deadline": state.deadline,
        "last_status": "RUNNING",
        "last_status_since": 100.0,
        "consecutive_errors": 0,
    }


def test_the_trigger_event_replaces_the_last_sight():
    rt = Runtime()
    state = begin(rt)
    state.observed_in_trigger(
        {"status": "failed", "report_id": ORIGIN, "report_status": "FAILED", "status_since": 50.0}
    )
    assert (state.tracker.status, state.tracker.status_since, state.tracker.failed_grace_period) == ("FAILED", 50.0, 10)
    assert state.how_it_ended(Verdict.FAILED, 80.0) == "stayed FAILED for 30.0s"
    assert state.how_it_ended("cancelled", 80.0) == "was CANCELLED"
    assert rt.stores["wait"].get(STATE_KEY)["stage"] == Stage.WORKER  # back on the worker, to resubmit or fail


def test_a_new_try_learns_how_far_the_try_before_it_got():
    """Saved at each step, so a try Airflow loses anywhere leaves the next one its stage; a continuing try
    (a reschedule, a resume) learns nothing: it is the same try."""
    rt = Runtime()
    state = begin(rt)
    assert state.earlier is None and begin(rt).earlier is None
    state.deferring()
    assert begin(rt, try_number=2).earlier == EarlierTry(1, ORIGIN, Stage.DEFERRED)
    state = WaitState.resume(rt.context("wait", 2, store=True), None)
    assert state.stage == Stage.WORKER and state.earlier is None  # try 2 began afresh and saved it
    state.deferring()
    state.observed_in_trigger(
        {"status": "success", "report_id": ORIGIN, "report_status": "SUCCEEDED", "status_since": 50.0}
    )
    assert begin(rt, try_number=3).earlier == EarlierTry(2, ORIGIN, Stage.TRIGGER_SUCCEEDED)
    begin(rt, try_number=3).succeeded()
    assert begin(rt, try_number=4).earlier == EarlierTry(3, ORIGIN, Stage.SUCCEEDED)


def test_without_a_store_a_new_try_knows_only_that_one_ran_before():
    rt = Runtime()
    begin(rt, store=False).deferring()
    assert begin(rt, try_number=2, store=False).earlier == EarlierTry(1, None, None)
    assert begin(Runtime(), store=False).earlier is None


def test_a_wait_saved_before_stages_existed_reads_as_on_the_worker():
    rt = Runtime()
    stored = begin(rt)._dump()
    del stored["stage"]
    rt.stores["wait"].set(STATE_KEY, stored)
    assert WaitState.resume(rt.context("wait", store=True), None).stage == Stage.WORKER
    assert begin(rt, try_number=2).earlier == EarlierTry(1, ORIGIN, Stage.WORKER)
    # A stage this version does not know (saved by a newer one) is no reason to fail the wait.
    rt.stores["wait"].set(STATE_KEY, {**stored, "try_number": 2, "stage": "some_future_stage"})
    assert begin(rt, try_number=3).earlier == EarlierTry(2, ORIGIN, Stage.WORKER)


def test_resume_reads_the_one_copy():
    rt = Runtime()
    state = begin(rt)
    assert rt.stores["wait"].get(STATE_KEY) == state._dump()  # the store holds it
    assert WaitState.resume(rt.context("wait", store=True), None).report_id == ORIGIN

    # Before Airflow 3.3 the one copy is the task's XCom, which Airflow keeps while the task is deferred.
    rt = Runtime()
    storeless = begin(rt, store=False)
    assert rt.xcoms[("wait", STATE_KEY)] == storeless._dump() and "wait" not in rt.stores
    assert WaitState.resume(rt.context("wait", store=False), None).report_ids == [ORIGIN]
    # A deferral made by an earlier version of this package carried the state in the resume kwargs.
    carried = storeless._dump()
    assert WaitState.resume(Runtime().context("wait", store=False), carried).report_ids == [ORIGIN]
    with pytest.raises(DexCareError, match="without its wait state"):
        WaitState.resume(Runtime().context("wait", store=False), None)
