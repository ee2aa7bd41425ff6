"""Streaming download: complete, verified, private, atomic, and flat in memory."""

from __future__ import annotations

import csv
import hashlib
import io
import stat
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import pytest
from dexcare.exceptions import DexCareIncompleteDownloadError
from dexcare.hooks.dexcare import DexCareHook
from dexcare.report import ReportStatus
from dexcare.sandbox.process import SandboxProcess

from tests.support.helpers import fast_hook, set_connection


def succeeded_report(hook: DexCareHook, report_type: str = "virtual", *window: str) -> str:
    report_id = hook.start_report(report_type, *window)
    deadline = time.monotonic() + 30
    while hook.get_report_status(report_id) != ReportStatus.SUCCEEDED:
        assert time.monotonic() < deadline, "report did not succeed in time"
        time.sleep(0.05)
    return report_id


def test_download_writes_a_private_verified_csv(dexcare_conn_id, sandbox, tmp_path):
    hook = fast_hook()
    report_id = succeeded_report(hook, "retail", "2026-11-01", "2026-11-03")
    target = tmp_path / "nested" / "retail.csv"
    result = hook.download_report(report_id, target)

    data = target.read_bytes()
    assert result.path == str(target)
    assert result.bytes == len(data) > 0
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert sorted(p.name for p in target.parent.iterdir()) == ["retail.csv"]
    rows = list(csv.reader(io.StringIO(data.decode("utf-8"), newline="")))
    assert len(rows) > 1 and len({len(r) for r in rows}) == 1
    assert result.rows == len(rows) - 1


def test_download_is_retried_after_a_dropped_connection(dexcare_conn_id, sandbox, tmp_path):
    hook = fast_hook(attempts=3)
    report_id = succeeded_report(hook)
    clean = hook.download_report(report_id, tmp_path / "clean.csv")
    sandbox.inject("drop_download", count=1)
    result = hook.download_report(report_id, tmp_path / "retried.csv")
    assert (result.bytes, result.sha256) == (clean.bytes, clean.sha256)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clean.csv", "retried.csv"]


def test_a_download_that_breaks_off_leaves_no_file_behind(dexcare_conn_id, sandbox, tmp_path):
    hook = fast_hook(attempts=2)
    report_id = succeeded_report(hook)
    sandbox.inject("drop_download", count=2)
    with pytest.raises(DexCareIncompleteDownloadError, match=r"broke off|announced bytes"):
        hook.download_report(report_id, tmp_path / "broken.csv")
    assert list(tmp_path.iterdir()) == []


def test_an_existing_file_survives_a_failed_download(dexcare_conn_id, sandbox, tmp_path):
    hook = fast_hook(attempts=1)
    report_id = succeeded_report(hook)
    target = tmp_path / "report.csv"
    target.write_bytes(b"yesterday's good file")
    sandbox.inject("drop_download", count=1)
    with pytest.raises(DexCareIncompleteDownloadError):
        hook.download_report(report_id, target)
    assert target.read_bytes() == b"yesterday's good file"
    assert [p.name for p in tmp_path.iterdir()] == ["report.csv"]


def test_a_write_that_fails_mid_download_raises_and_keeps_nothing(dexcare_conn_id, sandbox, tmp_path):
    """The file is written on a thread of its own while the next chunk is received: a real write error (the
    kernel's EFBIG past a file-size limit, as a full disk would) still reaches the caller, and neither a partial
    file nor a changed target is left. In a child process: the limit applies to the whole process."""
    report_id = succeeded_report(fast_hook(), "virtual", "2026-11-01", "2026-11-03")
    target = tmp_path / "report.csv"
    target.write_bytes(b"yesterday's good file")
    child = f"""
import errno, resource, signal
from tests.support.helpers import fast_hook
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of the signal
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
try:
    fast_hook(attempts=1).download_report({report_id!r}, {str(target)!r})
except OSError as exc:
    print("raised", errno.errorcode[exc.errno])
"""
    done = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.stdout.strip().splitlines()[-1:] == ["raised EFBIG"], done.stdout[-2000:] + done.stderr[-2000:]
    assert target.read_bytes() == b"yesterday's good file"
    assert [p.name for p in tmp_path.iterdir()] == ["report.csv"]


@pytest.fixture
def big_sandbox():
    """A sandbox in its own process, so its memory is not counted with the client's."""
    token = "big-download-key-1"
    args = ["--visits-per-day", "25000", "--queue-seconds", "0", "--run-seconds", "0"]
    with SandboxProcess(token=token, args=args) as sandbox:
        yield sandbox.url, token


def test_peak_memory_of_a_large_download_stays_flat(big_sandbox, monkeypatch, tmp_path):
    url, token = big_sandbox
    set_connection(monkeypatch, "dexcare_big", url, token)
    hook = DexCareHook("dexcare_big", timeout=120)
    report_id = succeeded_report(hook, "virtual", "2026-11-01", "2026-11-02")
    tracemalloc.start()
    try:
        result = hook.download_report(report_id, tmp_path / "big.csv")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.bytes > 10 * 2**20
    # 1 MiB chunks: the client's peak is a few chunks, whatever the size of the report.
    assert peak < result.bytes / 4, (peak, result.bytes)
    assert peak < 12 * 2**20
