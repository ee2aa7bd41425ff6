"""Helpers every test area shares: the DexCare connection, a fast hook, running a trigger, reading the logs.

The fixtures built on them (``sandbox``, ``slow_sandbox``, ``dexcare_conn_id``, ``forward_proxy``, ``pg_uri``)
are in ``tests/conftest.py``; a task runtime for operator tests is in ``tests/support/task_runtime.py``, the real
``airflow`` command in ``tests/support/airflow_cli.py``.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

# Distinctive, so token-hygiene tests can search captured output for it.
SANDBOX_TOKEN = "dc-SECRET-test-key-7f3a9c41"


def dexcare_connection(host: str, key: str | None = SANDBOX_TOKEN, **extra: Any) -> str:
    """A DexCare connection the way users give one: ``AIRFLOW_CONN_<ID>`` in JSON form. The one way the
    tests set up a DexCare connection, in this process (``set_connection``) or for an ``airflow`` command."""
    conn: dict[str, Any] = {"conn_type": "dexcare", "host": host}
    if key is not None:
        conn["password"] = key
    if extra:
        conn["extra"] = extra
    return json.dumps(conn)


def set_connection(monkeypatch: Any, conn_id: str, host: str, key: str | None = "k-12345", **extra: Any) -> None:
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", dexcare_connection(host, key, **extra))


def fast_hook(conn_id: str = "dexcare_default", *, attempts: int = 4, total: float = 30.0, **kwargs: Any) -> Any:
    """A hook whose own backoff is a few milliseconds, so any long wait in a test comes from Retry-After."""
    # Imported here: the root conftest imports this module before Airflow may be imported (AIRFLOW_HOME).
    from dexcare.hooks.dexcare import DexCareHook
    from dexcare.hooks.retry import RetryPolicy

    hook = DexCareHook(conn_id, max_attempts=attempts, max_retry_seconds=total, **kwargs)
    hook.retry_policy = RetryPolicy(max_attempts=attempts, max_total_seconds=total, initial_delay=0.01, max_delay=0.05)
    return hook


def requests_to(sandbox: Any, method: str, suffix: str = "") -> list[tuple[str, str, int]]:
    return [r for r in sandbox.request_log if r[0] == method and r[1].endswith(suffix)]


def posts(sandbox: Any) -> int:
    """Reports started: a resubmission or a retry that starts a second report shows here."""
    return sum(1 for method, _path, _status in sandbox.request_log if method == "POST")


async def run_trigger(trigger: Any, limit: float = 30.0) -> dict[str, Any]:
    """The first event's payload, as the triggerer would hand it to the task."""

    async def first() -> dict[str, Any]:
        async for event in trigger.run():
            return event.payload
        raise AssertionError("the trigger ended without an event")

    return await asyncio.wait_for(first(), limit)


def logged(caplog: Any, capfd: Any) -> str:
    """Everything logged so far, whether Airflow routed it through stdlib logging or structlog's stdout."""
    captured = capfd.readouterr()
    return caplog.text + captured.out + captured.err
