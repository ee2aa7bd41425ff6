"""Helpers for the servers the tests start as child processes (Airflow components, Redis, SeaweedFS, proxy.py):
a free port and a bounded wait (the launcher's own, ``scripts/local_airflow.py``, whose timeout is a
``TimeoutError``), and stopping a process group."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess

from scripts.local_airflow import free_port, port_in_use, wait_for

__all__ = ["free_port", "port_in_use", "signal_group", "stop_group", "wait_for"]

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
