"""The whole chain under Airflow itself: ``airflow dags test`` in a fresh AIRFLOW_HOME, sandbox on loopback.

This is the only test where Airflow's own task runner provides XCom, the task state store, retries, trigger
serialization and the (inline) triggerer.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest
from dexcare.compat import HAS_TASK_STATE_STORE

from tests.support.airflow_cli import AIRFLOW, airflow_env, lines_showing, migrate
from tests.support.helpers import SANDBOX_TOKEN, dexcare_connection

DAG_FILE = Path(__file__).with_name("dexcare_e2e_dag.py")


@pytest.fixture
def e2e_sandbox():
    """Reports slow enough that the start task's retry still finds the first one QUEUED or RUNNING."""
    from dexcare.sandbox import SandboxServer

    with SandboxServer(token=SANDBOX_TOKEN, queue_seconds=1.0, run_seconds=1.5, visits_per_day=20) as server:
        yield server


def test_start_wait_download_with_airflow_dags_test(e2e_sandbox, tmp_path):
    home, dags = tmp_path / "airflow-home", tmp_path / "dags"
    dags.mkdir()
    shutil.copy(DAG_FILE, dags / DAG_FILE.name)
    result_file = tmp_path / "result.json"
    env = airflow_env(
        home,
        dags,
        AIRFLOW_CONN_DEXCARE_DEFAULT=dexcare_connection(e2e_sandbox.url),
        DEXCARE_E2E_RESULT=str(result_file),
        DEXCARE_E2E_DESTINATION=f"{tmp_path}/reports/",
    )
    migrate(env)
    # DexCare fails the report once and retries it on its own: the sensor must ride that out, not resubmit.
    # Before Airflow 3.3 the start task's retry requests a second report, which fails the same way.
    e2e_sandbox.inject("fail_then_retry", failed_seconds=1.0, count=1 if HAS_TASK_STATE_STORE else 2)
    started = time.monotonic()
    run = subprocess.run(
        [AIRFLOW, "dags", "test", "dexcare_operators_e2e"],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    elapsed = time.monotonic() - started
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-6000:]
    assert result_file.exists(), output[-6000:]
    summary = json.loads(result_file.read_text())

    report_id = summary["start_return"]
    posts = [r for r in e2e_sandbox.request_log if r[0] == "POST"]
    assert "simulated worker loss" in output
    if HAS_TASK_STATE_STORE:
        assert len(posts) == 1, e2e_sandbox.request_log  # try 2 reused the report try 1 started
        assert "Reusing report" in output
    else:  # nothing survives a retry before 3.3: try 2 started its own report, and its log says why
        assert len(posts) == 2, e2e_sandbox.request_log
        assert "has no task state store (Airflow 3.3 and later have one): a retry" in output
    assert summary["start_request"] == {"report_type": "virtual", "start_date": "2026-11-01", "end_date": "2026-11-03"}
    assert summary["wait_return"] == report_id and summary["wait_report_ids"] == [report_id]
    assert "running trigger in line" in output.lower()

    download = summary["download"]
    assert {"uri", "bytes", "sha256", "rows", "report_id", "report_type", "start_date", "end_date"} <= set(download)
    assert download["report_id"] == report_id and download["report_type"] == "virtual"
    data = Path(urlparse(download["uri"]).path).read_bytes()
    assert hashlib.sha256(data).hexdigest() == download["sha256"] and download["rows"] > 0
    assert lines_showing(output, SANDBOX_TOKEN) == []
    print(f"airflow dags test took {elapsed:.1f}s")
    if os.environ.get("DEXCARE_E2E_KEEP_OUTPUT"):
        Path(os.environ["DEXCARE_E2E_KEEP_OUTPUT"]).write_text(output)
