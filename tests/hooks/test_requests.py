"""DexCareHook against the sandbox over loopback: every documented answer, mapped to a typed error."""

from __future__ import annotations

import time

import pytest
from dexcare.exceptions import (
    DexCareAuthError,
    DexCareBadRequestError,
    DexCareNotFoundError,
    DexCareValidationError,
)
from dexcare.report import REPORTS_PATH, ReportStatus, ReportType

from tests.support.helpers import fast_hook, requests_to, set_connection

UNKNOWN_ID = "3f2b8c1e-4d5a-4b6c-9e7f-0a1b2c3d4e5f"


def wait_for(hook, report_id: str, want: ReportStatus, limit: float = 15.0) -> list[ReportStatus]:
    seen: list[ReportStatus] = []
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        status = hook.get_report_status(report_id)
        if not seen or seen[-1] != status:
            seen.append(status)
        if status == want:
            return seen
        time.sleep(0.05)
    raise AssertionError(f"report never reached {want}; saw {seen}")


def test_start_report_returns_guid_and_progresses_to_succeeded(dexcare_conn_id, sandbox):
    hook = fast_hook()
    report_id = hook.start_report("virtual")
    assert report_id in sandbox.reports
    seen = wait_for(hook, report_id, ReportStatus.SUCCEEDED)
    assert seen[-1] == ReportStatus.SUCCEEDED
    assert set(seen) <= {ReportStatus.QUEUED, ReportStatus.RUNNING, ReportStatus.SUCCEEDED}
    assert requests_to(sandbox, "POST") == [("POST", REPORTS_PATH, 200)]


@pytest.mark.parametrize("report_type", list(ReportType))
def test_every_report_type_with_a_window_is_accepted(dexcare_conn_id, sandbox, report_type):
    report_id = fast_hook().start_report(report_type.value, "2026-11-01", "2026-11-10")
    report = sandbox.reports[report_id]
    assert str(report.report_type) == report_type.value
    assert str(report.start_date) == "2026-11-01"
    assert str(report.end_date) == "2026-11-10"


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("telehealth",), "Unknown DexCare report type 'telehealth'"),
        (("virtual", "2026-11-01", None), "both start_date and end_date or neither"),
        (("virtual", None, "2026-11-01"), "both start_date and end_date or neither"),
        (("virtual", "2026-11-10", "2026-11-01"), "is after end_date"),
        (("virtual", "11/01/2026", "2026-11-10"), "is not an ISO date"),
    ],
)
def test_bad_input_is_rejected_before_any_request(dexcare_conn_id, sandbox, args, fragment):
    with pytest.raises(DexCareValidationError, match=fragment):
        fast_hook().start_report(*args)
    assert sandbox.request_log == []


@pytest.mark.parametrize("bad_id", ["", "not-a-guid", "3f2b8c1e4d5a4b6c9e7f0a1b2c3d4e5f", "../../etc/passwd", None])
def test_malformed_report_ids_never_reach_dexcare(dexcare_conn_id, sandbox, tmp_path, bad_id):
    hook = fast_hook()
    with pytest.raises(DexCareValidationError, match="is not a GUID"):
        hook.get_report_status(bad_id)
    with pytest.raises(DexCareValidationError, match="is not a GUID"):
        hook.download_report(bad_id, tmp_path / "x.csv")
    assert sandbox.request_log == []


def test_server_side_400_carries_dexcare_message_and_is_not_retried(dexcare_conn_id, sandbox):
    hook = fast_hook()
    with pytest.raises(DexCareBadRequestError, match="'type' is required") as info:
        hook._send("POST", REPORTS_PATH, what="a request without a type", json={})
    assert info.value.status_code == 400
    with pytest.raises(DexCareBadRequestError, match="must be one of"):
        hook._send("POST", REPORTS_PATH, what="a request with a bad type", json={"type": "telehealth"})
    assert len(requests_to(sandbox, "POST")) == 2


def test_unknown_report_is_404_not_retried(dexcare_conn_id, sandbox):
    with pytest.raises(DexCareNotFoundError, match=UNKNOWN_ID) as info:
        fast_hook().get_report_status(UNKNOWN_ID)
    assert "start a new report" in str(info.value)
    assert sandbox.request_log == [("GET", f"{REPORTS_PATH}/{UNKNOWN_ID}", 404)]


def test_bad_key_is_403_naming_the_connection_and_not_retried(sandbox, monkeypatch):
    set_connection(monkeypatch, "dexcare_bad", sandbox.url, "wrong-key-123")
    with pytest.raises(DexCareAuthError) as info:
        fast_hook("dexcare_bad").start_report("retail")
    message = str(info.value)
    assert "Reporting service key" in message and "'dexcare_bad'" in message
    assert "wrong-key-123" not in message
    assert sandbox.request_log == [("POST", REPORTS_PATH, 403)]


def test_download_before_success_is_a_clear_400(dexcare_conn_id, sandbox, tmp_path):
    hook = fast_hook()
    report_id = hook.start_report("virtual")
    with pytest.raises(DexCareBadRequestError, match="QueryExecution did not succeed"):
        hook.download_report(report_id, tmp_path / "early.csv")
    assert list(tmp_path.iterdir()) == []
