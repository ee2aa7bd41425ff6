"""Helpers for the servers the tests start as child processes (Airflow components, Redis, SeaweedFS, proxy.py):
a free port, a bounded wait, and stopping a process group."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from typing import TypeVar

import httpx

T = TypeVar("T")


def free_port() -> int:
    """A loopback port nobody listens on now (the server binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(what: str, check: Callable[[], T | None], timeout: float, interval: float = 0.5) -> T:
    """Poll ``check`` until it returns something truthy; a bounded wait that names what never happened."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
        except (httpx.HTTPError, OSError, ValueError, KeyError) as exc:
            last_error, value = exc, None
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"Timed out after {timeout:.0f}s waiting for {what} (last error: {last_error!r})")


def signal_group(proc: subprocess.Popen, sig: int) -> None:
    """Signal the process group of ``proc`` (started with ``start_new_session=True``). A group that is already
    gone is no error; nor is EPERM, which macOS answers for a group left with only zombies."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def stop_group(proc: subprocess.Popen | None, grace: float = 10, *, reap: float = 5, sweep: bool = False) -> None:
    """SIGTERM to the process group of ``proc``, SIGKILL after ``grace`` seconds, and reap it (waiting up to
    ``reap`` seconds after a SIGKILL). ``sweep`` sends the group a SIGKILL even after the parent exited in time:
    for a server whose forked children (proxy.py's acceptors) hold its listening socket and may outlive it."""
    if proc is None:
        return
    signal_group(proc, signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        signal_group(proc, signal.SIGKILL)
        proc.wait(timeout=reap)
    if sweep:
        signal_group(proc, signal.SIGKILL)
