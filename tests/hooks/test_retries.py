"""Retry rules: 5xx, 429, connection errors and timeouts retried with bounds; 400/403/404 never."""

from __future__ import annotations

import socket
import time

import pytest
from dexcare.exceptions import DexCareConnectionError, DexCareRateLimitError, DexCareServerError, DexCareTimeoutError
from dexcare.hooks.dexcare import DexCareHook
from dexcare.hooks.retry import RetryPolicy, parse_retry_after
from dexcare.report import ReportStatus

from tests.support.helpers import fast_hook, requests_to, set_connection


def test_burst_of_500_is_ridden_out(dexcare_conn_id, sandbox):
    hook = fast_hook(attempts=4)
    report_id = hook.start_report("virtual")
    sandbox.inject("http_500", count=3, endpoint="status")
    assert hook.get_report_status(report_id) in set(ReportStatus)
    assert [r[2] for r in requests_to(sandbox, "GET", report_id)] == [500, 500, 500, 200]


def test_500_beyond_max_attempts_fails_after_exactly_that_many_tries(dexcare_conn_id, sandbox):
    hook = fast_hook(attempts=3)
    sandbox.inject("http_500", count=50, endpoint="start")
    with pytest.raises(DexCareServerError, match="Unknown error") as info:
        hook.start_report("retail")
    assert info.value.status_code == 500
    assert [r[2] for r in requests_to(sandbox, "POST")] == [500, 500, 500]


def test_429_waits_at_least_retry_after(dexcare_conn_id, sandbox):
    hook = fast_hook(attempts=3)
    sandbox.inject("http_429", count=1, endpoint="start", retry_after=1)
    started = time.monotonic()
    report_id = hook.start_report("virtual")
    waited = time.monotonic() - started
    assert report_id in sandbox.reports
    assert [r[2] for r in requests_to(sandbox, "POST")] == [429, 200]
    # The hook's own backoff is <= 0.05 s here, so a wait of >= 1 s can only be the server's hint.
    assert waited >= 1.0


def test_retry_after_longer_than_the_time_budget_gives_up_instead_of_sleeping(dexcare_conn_id, sandbox):
    hook = fast_hook(attempts=10, total=1.0)
    sandbox.inject("http_429", count=5, endpoint="start", retry_after=30)
    started = time.monotonic()
    with pytest.raises(DexCareRateLimitError) as info:
        hook.start_report("virtual")
    assert info.value.retry_after == 30
    assert len(requests_to(sandbox, "POST")) == 1
    assert time.monotonic() - started < 30


def test_total_time_bound_stops_retries_before_attempts_run_out(dexcare_conn_id, sandbox):
    hook = DexCareHook(max_attempts=1000, max_retry_seconds=1.0)
    hook.retry_policy = RetryPolicy(max_attempts=1000, max_total_seconds=1.0, initial_delay=0.2, max_delay=0.2)
    sandbox.inject("http_500", count=10_000, endpoint="start")
    with pytest.raises(DexCareServerError):
        hook.start_report("virtual")
    tries = len(requests_to(sandbox, "POST"))
    assert 2 <= tries < 1000


def test_timeout_is_retried_then_reported(dexcare_conn_id, sandbox):
    hook = fast_hook(attempts=2, timeout=0.3)
    report_id = hook.start_report("virtual")
    sandbox.inject("slow", count=1, endpoint="status", delay=1.5)
    assert hook.get_report_status(report_id) in set(ReportStatus)  # second try is fast

    sandbox.inject("slow", count=2, endpoint="status", delay=1.5)
    with pytest.raises(DexCareTimeoutError, match="within the timeout"):
        hook.get_report_status(report_id)


def test_unreachable_endpoint_is_a_connection_error_after_retries(monkeypatch, caplog, capfd):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again on exit: nothing listens there
    set_connection(monkeypatch, "dexcare_default", f"http://127.0.0.1:{port}", "k-12345")
    with pytest.raises(DexCareConnectionError, match="Connection refused"):
        fast_hook(attempts=3).get_report_status("3f2b8c1e-4d5a-4b6c-9e7f-0a1b2c3d4e5f")
    # Airflow's structlog setup writes to stdout once configured, to the logging module before: read both.
    assert "attempt 2 of 3 failed" in caplog.text + capfd.readouterr().out


@pytest.mark.parametrize(
    ("header", "expected"),
    [("7", 7.0), (None, None), ("soon", None), ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0)],
)
def test_parse_retry_after(header, expected):
    assert parse_retry_after(header) == expected


def test_backoff_grows_with_jitter_and_respects_hints():
    policy = RetryPolicy(initial_delay=1, max_delay=8)
    assert all(0.5 <= policy.backoff(1) <= 1 for _ in range(50))
    assert all(4 <= policy.backoff(4) <= 8 for _ in range(50))
    assert all(4 <= policy.backoff(10) <= 8 for _ in range(50))
    assert len({policy.backoff(3) for _ in range(20)}) > 1
    assert policy.backoff(1, retry_after=30) == 30
