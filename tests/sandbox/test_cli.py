"""``python -m dexcare.sandbox`` as other processes use it: parse the line, call it, signal it, and the
memory it needs to stream a big report."""

from __future__ import annotations

import datetime as dt
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from dexcare.sandbox import visits_per_day_for
from dexcare.sandbox.__main__ import build_parser, main, resolve_token

from tests.support.helpers import SANDBOX_TOKEN
from tests.support.sandbox_api import Api

LINE = re.compile(r"^DexCare sandbox listening on (http://127\.0\.0\.1:(\d+))$")


def _readline(stream, limit: float = 30.0) -> str:
    """A line from the child, or an AssertionError instead of a hung test if it never prints."""
    box: list[str] = []
    reader = threading.Thread(target=lambda: box.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(limit)
    assert box, "the sandbox printed nothing"
    return box[0]


@contextmanager
def cli(*args: str, env_token: str | None = SANDBOX_TOKEN) -> Iterator[tuple[subprocess.Popen, str]]:
    env = {k: v for k, v in os.environ.items() if k != "DEXCARE_SANDBOX_TOKEN"}
    if env_token is not None:
        env["DEXCARE_SANDBOX_TOKEN"] = env_token
    proc = subprocess.Popen(
        [sys.executable, "-m", "dexcare.sandbox", "--host", "127.0.0.1", "--port", "0", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        line = _readline(proc.stdout)
        match = LINE.match(line.rstrip("\n"))
        assert match, f"unexpected first line {line!r}; stderr: {proc.stderr.read() if proc.poll() else ''}"
        yield proc, match.group(1)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        proc.stdout.close()
        proc.stderr.close()


def test_cli_serves_until_sigterm():
    with cli("--queue-seconds", "0", "--run-seconds", "0", "--visits-per-day", "3",
             "--fault", "http_500:endpoint=start", "--fault", "http_429:count=2,retry_after=1,endpoint=status"
             ) as (proc, url):
        api = Api(url)
        assert Api(url, "sandbox-token").start().status_code == 403  # the token came from the environment
        assert api.start().status_code == 500
        report_id = api.start_id()
        assert [api.status(report_id).status_code for _ in range(3)] == [429, 429, 200]
        assert api.data(report_id).status_code == 200
        assert api.request("POST", "/_sandbox/faults", json={"kind": "http_500"}).status_code == 200
        assert api.start().status_code == 500
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        out, err = proc.stdout.read(), proc.stderr.read()
    assert out == ""  # the listening line was the only output
    assert SANDBOX_TOKEN not in err


def test_token_comes_from_the_flag_then_the_environment_then_the_default(monkeypatch):
    monkeypatch.setenv("DEXCARE_SANDBOX_TOKEN", "from-env")
    assert resolve_token("from-argv") == "from-argv"
    assert resolve_token(None) == "from-env"
    monkeypatch.delenv("DEXCARE_SANDBOX_TOKEN")
    assert resolve_token(None) == "sandbox-token"


def test_cli_flags(capsys):
    args = build_parser().parse_args(["--port", "8765", "--seed", "3", "--visits-per-day", "7",
                                      "--queue-seconds", "0.5", "--run-seconds", "1.5", "--no-content-length",
                                      "--fault", "slow:delay=2", "--fault", "cancel"])
    assert (args.port, args.seed, args.visits_per_day, args.queue_seconds, args.run_seconds) == (
        8765, 3, 7, 0.5, 1.5)
    assert args.content_length is False and args.fault == ["slow:delay=2", "cancel"]
    with pytest.raises(SystemExit) as exit_info:
        main(["--port", "0", "--fault", "meteor:count=1"])
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert "Unknown fault kind 'meteor'" in captured.err and captured.out == ""


def _memory_kib(pid: int) -> dict[str, int]:
    status = Path(f"/proc/{pid}/status").read_text()
    return {k: int(v.split()[0]) for k, v in re.findall(r"^(VmRSS|VmHWM):\s+(.*)$", status, re.M)}


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc for the server's memory")
def test_a_300k_row_report_streams_in_constant_memory():
    """Content-Length mode, the harder one: a counting pass, then the stream, and neither buffers."""
    window = {"type": "virtual", "startDate": "2026-11-01", "endDate": "2026-11-10"}
    per_day = visits_per_day_for(300_000, dt.date(2026, 11, 1), dt.date(2026, 11, 10))
    with cli("--queue-seconds", "0", "--run-seconds", "0", "--visits-per-day", str(per_day),
             ) as (proc, url):
        api = Api(url)
        # Warm up: import-time and first-download allocations are not what we measure.
        api.data(api.start_id({"type": "virtual", "startDate": "2026-11-01", "endDate": "2026-11-01"}),
                 stream=True).close()
        report_id = api.start_id(window)
        before = _memory_kib(proc.pid)
        received = 0
        lines = 0
        with api.data(report_id, stream=True) as response:
            assert response.status_code == 200
            for chunk in response.iter_content(1 << 16):
                received += len(chunk)
                lines += chunk.count(b"\r\n")
        after = _memory_kib(proc.pid)
        proc.send_signal(signal.SIGINT)  # Ctrl-C is a clean stop too
        assert proc.wait(15) == 0
    assert received == int(response.headers["Content-Length"])
    assert lines > 300_000 and received > 60 * 1024 * 1024
    growth_mib = (after["VmHWM"] - before["VmRSS"]) / 1024
    print(f"streamed {received / 2**20:.0f} MiB, {lines} lines; server peak RSS growth {growth_mib:.1f} MiB")
    assert growth_mib < 20, growth_mib  # a buffered body would cost more than 60 MiB


def test_cli_reports_a_busy_port(fast, capsys):
    assert main(["--port", str(fast.port)]) == 1
    captured = capsys.readouterr()
    assert "cannot listen on 127.0.0.1:" in captured.err and captured.out == ""
