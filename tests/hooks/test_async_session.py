"""The trigger's async status call: one attempt, typed errors that tell the trigger what to do next."""

from __future__ import annotations

import asyncio
import socket

import pytest
from dexcare.exceptions import (
    DexCareAuthError,
    DexCareConnectionError,
    DexCareNotFoundError,
    DexCareRateLimitError,
    DexCareServerError,
    DexCareTimeoutError,
)
from dexcare.hooks.dexcare import DexCareHook
from dexcare.report import ReportStatus

from tests.support.helpers import set_connection

UNKNOWN_ID = "3f2b8c1e-4d5a-4b6c-9e7f-0a1b2c3d4e5f"


async def test_status_progression_in_one_session(dexcare_conn_id, sandbox):
    report_id = DexCareHook().start_report("virtual")
    seen = []
    async with DexCareHook().async_session() as session:
        for _ in range(300):
            status = await session.get_report_status(report_id)
            if not seen or seen[-1] != status:
                seen.append(status)
            if status == ReportStatus.SUCCEEDED:
                break
            await asyncio.sleep(0.02)
    assert seen[-1] == ReportStatus.SUCCEEDED
    assert "dc-SECRET" not in repr(session)


async def test_each_error_is_typed_and_single_attempt(dexcare_conn_id, sandbox):
    report_id = DexCareHook().start_report("virtual")
    async with DexCareHook(timeout=0.3).async_session() as session:
        sandbox.inject("http_429", count=1, endpoint="status", retry_after=4)
        with pytest.raises(DexCareRateLimitError) as limited:
            await session.get_report_status(report_id)
        assert limited.value.retryable and limited.value.retry_after == 4

        sandbox.inject("http_500", count=1, endpoint="status")
        with pytest.raises(DexCareServerError) as failed:
            await session.get_report_status(report_id)
        assert failed.value.retryable

        sandbox.inject("slow", count=1, endpoint="status", delay=1.5)
        with pytest.raises(DexCareTimeoutError) as slow:
            await session.get_report_status(report_id)
        assert slow.value.retryable

        with pytest.raises(DexCareNotFoundError) as missing:
            await session.get_report_status(UNKNOWN_ID)
        assert not missing.value.retryable

        assert await session.get_report_status(report_id) in set(ReportStatus)
    statuses = [r[2] for r in sandbox.request_log if r[0] == "GET"]
    assert statuses[:2] == [429, 500] and statuses[-2:] == [404, 200]


async def test_bad_key_and_unreachable_endpoint(sandbox, monkeypatch):
    set_connection(monkeypatch, "dexcare_default", sandbox.url, "nope-key")
    async with DexCareHook().async_session() as session:
        with pytest.raises(DexCareAuthError, match="Reporting service key") as denied:
            await session.get_report_status(UNKNOWN_ID)
    assert not denied.value.retryable and "nope-key" not in str(denied.value)

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    set_connection(monkeypatch, "dexcare_default", f"http://127.0.0.1:{port}", "k-12345")
    async with DexCareHook().async_session() as session:
        with pytest.raises(DexCareConnectionError) as unreachable:
            await session.get_report_status(UNKNOWN_ID)
    assert unreachable.value.retryable
