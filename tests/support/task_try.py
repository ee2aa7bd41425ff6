"""One try of a DAG run's fetch tasks in a process of its own, as a worker runs it (``-m tests.support.task_try``).

The clean-up tests need what only separate processes give: a download killed with SIGKILL mid-stream (no
``except`` or ``finally`` block runs), and a run cleared from ``start_report`` whose tries run one after the
other, each with a fresh interpreter. The DexCare connection, the report storage and AIRFLOW_HOME come from the
environment, as on a worker. Prints the download result as one JSON line.

``--report-id`` downloads that report (a retry of download_report); without it the try starts a new report
first, as a cleared run does.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.support.processes import wait_for
from tests.support.task_runtime import FakeTI, Runtime

ROOT = Path(__file__).resolve().parents[2]
DAG_ID = "dexcare_test"
RUN_ID = FakeTI("t", {}).run_id  # the run every tests.support.task_runtime try belongs to


def spawn(start_date: str, end_date: str, *args: str) -> subprocess.Popen[str]:
    """One try in its own interpreter, with this process's environment (connections, report storage)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "plugins"), str(ROOT)])}
    return subprocess.Popen(
        [sys.executable, "-m", "tests.support.task_try", "--start-date", start_date, "--end-date", end_date, *args],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def finished(start_date: str, end_date: str, *args: str) -> dict[str, Any]:
    """A try run to its end: its download result."""
    proc = spawn(start_date, end_date, *args)
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err[-3000:]
    return dict(json.loads(out.strip().splitlines()[-1]))


def kill_mid_stream(proc: subprocess.Popen[str], mid_stream: Callable[[], Any]) -> Any:
    """SIGKILL the try as soon as ``mid_stream()`` sees its download under way; what it saw."""

    def check() -> Any:
        if proc.poll() is not None:
            raise AssertionError(f"the try ended before it was caught mid-stream: {proc.stderr.read()[-2000:]}")
        return mid_stream()

    seen = wait_for("the download to be mid-stream", check, timeout=120, interval=0.005)
    proc.kill()
    proc.communicate(timeout=30)
    assert proc.returncode == -9, proc.returncode
    return seen


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--start-date", required=True)
    parser.add_argument("--end-date", required=True)
    parser.add_argument("--report-id")
    parser.add_argument("--destination")
    args = parser.parse_args()

    from dexcare.hooks.dexcare import DexCareHook
    from dexcare.operators.download_report import DexCareDownloadReportOperator
    from dexcare.operators.start_report import DexCareStartReportOperator
    from dexcare.report import ReportStatus

    rt = Runtime()
    report_id = args.report_id
    if report_id is None:
        report_id = rt.run(DexCareStartReportOperator(
            task_id="start", report_type="virtual", report_start_date=args.start_date, report_end_date=args.end_date
        ))
        hook = DexCareHook("dexcare_default")
        deadline = time.monotonic() + 60
        while hook.get_report_status(report_id) != ReportStatus.SUCCEEDED:
            if time.monotonic() > deadline:
                raise SystemExit(f"report {report_id} did not succeed within a minute")
            time.sleep(0.05)
    result = rt.run(DexCareDownloadReportOperator(
        task_id="download", report_id=report_id, report_type="virtual", report_start_date=args.start_date,
        report_end_date=args.end_date, destination=args.destination,
    ))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
