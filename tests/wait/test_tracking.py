"""ReportTracker: what one status means, given the last one and since when (pure; times are passed in)."""

from __future__ import annotations

import pytest
from dexcare.report import ReportStatus
from dexcare.wait.tracking import ReportTracker, Verdict

RID = "3f2b8c1e-4d5a-4b6c-9e7f-0a1b2c3d4e5f"
QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = (
    ReportStatus.QUEUED,
    ReportStatus.RUNNING,
    ReportStatus.SUCCEEDED,
    ReportStatus.FAILED,
    ReportStatus.CANCELLED,
)


def test_first_sight_and_changes_are_announced_once():
    tracker = ReportTracker(RID, failed_grace_period=600)
    assert tracker.observe(QUEUED, 100.0) == (Verdict.WAIT, f"DexCare report {RID} is QUEUED.")
    assert tracker.observe(QUEUED, 130.0) == (Verdict.WAIT, None)
    assert (tracker.status, tracker.status_since) == ("QUEUED", 100.0)  # the clock is the first sight
    verdict, message = tracker.observe(RUNNING, 352.0)
    assert verdict == Verdict.WAIT
    assert message == f"DexCare report {RID}: QUEUED -> RUNNING after 4m 12s in QUEUED."


def test_succeeded_and_cancelled_are_final_at_once():
    assert ReportTracker(RID, 600).observe(SUCCEEDED, 1.0)[0] == Verdict.SUCCEEDED
    assert ReportTracker(RID, 600).observe(CANCELLED, 1.0)[0] == Verdict.CANCELLED


def test_failed_is_provisional_until_the_grace_period_has_passed():
    tracker = ReportTracker(RID, failed_grace_period=600, status="RUNNING", status_since=0.0)
    verdict, message = tracker.observe(FAILED, 100.0)
    assert verdict == Verdict.WAIT
    assert "RUNNING -> FAILED after 1m 40s in RUNNING." in message
    assert "FAILED is provisional: it becomes final after 10m 00s unless DexCare retries the report." in message
    assert tracker.failed_for(400.0) == 300.0 and tracker.grace_remaining(400.0) == 300.0
    assert tracker.observe(FAILED, 699.0) == (Verdict.WAIT, None)
    assert tracker.observe(FAILED, 700.0) == (Verdict.FAILED, None)


def test_a_return_to_queued_resets_the_grace_clock():
    tracker = ReportTracker(RID, failed_grace_period=60)
    tracker.observe(FAILED, 0.0)
    verdict, message = tracker.observe(QUEUED, 50.0)
    assert verdict == Verdict.WAIT
    assert message.endswith("DexCare is retrying it on its own; the FAILED grace period is reset.")
    assert tracker.failed_for(500.0) == 0.0 and tracker.grace_remaining(500.0) is None
    tracker.observe(FAILED, 100.0)
    assert tracker.observe(FAILED, 159.0)[0] == Verdict.WAIT  # counted from 100, not from 0
    assert tracker.observe(FAILED, 160.0)[0] == Verdict.FAILED


def test_a_zero_grace_period_makes_failed_final_at_once():
    assert ReportTracker(RID, failed_grace_period=0).observe(FAILED, 5.0)[0] == Verdict.FAILED


@pytest.mark.parametrize(("status", "since"), [(None, None), ("RUNNING", 10.0), ("FAILED", 3.5)])
def test_round_trips_through_its_stored_form(status, since):
    tracker = ReportTracker(RID, 600.0, status, since)
    assert ReportTracker.from_dict(tracker.to_dict()) == tracker


def test_time_in_status_never_goes_negative():
    tracker = ReportTracker(RID, 600.0)
    assert tracker.time_in_status(10.0) == 0.0
    tracker.observe(RUNNING, 100.0)
    assert tracker.time_in_status(160.0) == 60.0 and tracker.time_in_status(50.0) == 0.0  # clocks differ
