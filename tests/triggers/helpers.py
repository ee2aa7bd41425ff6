"""Helpers for running DexCare triggers and tasks in tests the way Airflow runs them."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from tests.conftest import SANDBOX_TOKEN


async def run_trigger(trigger: Any, limit: float = 30.0) -> dict[str, Any]:
    """The first event's payload, as the triggerer would hand it to the task."""

    async def first() -> dict[str, Any]:
        async for event in trigger.run():
            return event.payload
        raise AssertionError("the trigger ended without an event")

    return await asyncio.wait_for(first(), limit)


def posts(sandbox: Any) -> int:
    return sum(1 for method, _path, _status in sandbox.request_log if method == "POST")


@pytest.fixture
def slow_sandbox(monkeypatch):
    """A sandbox whose reports stay RUNNING for a minute, for deadlines and restarts."""
    from dexcare.sandbox import SandboxServer

    with SandboxServer(token=SANDBOX_TOKEN, queue_seconds=0.1, run_seconds=60, visits_per_day=5) as server:
        monkeypatch.setenv(
            "AIRFLOW_CONN_DEXCARE_DEFAULT",
            json.dumps({"conn_type": "dexcare", "host": server.url, "password": SANDBOX_TOKEN}),
        )
        yield server


def logged(caplog: Any, capfd: Any) -> str:
    """Everything logged so far, whether Airflow routed it through stdlib logging or structlog's stdout."""
    captured = capfd.readouterr()
    return caplog.text + captured.out + captured.err
