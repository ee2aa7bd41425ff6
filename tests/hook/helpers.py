"""Small helpers shared by the hook tests."""

from __future__ import annotations

import json

from dexcare.hooks.dexcare import DexCareHook
from dexcare.retry import RetryPolicy


def fast_hook(conn_id: str = "dexcare_default", *, attempts: int = 4, total: float = 30.0, **kwargs) -> DexCareHook:
    """A hook whose own backoff is a few milliseconds, so any long wait in a test comes from Retry-After."""
    hook = DexCareHook(conn_id, max_attempts=attempts, max_retry_seconds=total, **kwargs)
    hook.retry_policy = RetryPolicy(max_attempts=attempts, max_total_seconds=total, initial_delay=0.01, max_delay=0.05)
    return hook


def requests_to(sandbox, method: str, suffix: str = "") -> list[tuple[str, str, int]]:
    return [r for r in sandbox.request_log if r[0] == method and r[1].endswith(suffix)]


def set_connection(monkeypatch, conn_id: str, host: str, key: str | None = "k-12345", **extra) -> None:
    """Give a connection the way users do: ``AIRFLOW_CONN_<ID>`` in JSON form."""
    conn = {"conn_type": "dexcare", "host": host}
    if key is not None:
        conn["password"] = key
    if extra:
        conn["extra"] = extra
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))
