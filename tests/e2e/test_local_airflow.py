"""``make airflow``: one command starts a local Airflow that runs the DAG, and Ctrl-C leaves nothing behind.

The first start goes through ``make airflow`` exactly as a user types it, in its own process group, and is
stopped the way a terminal's Ctrl-C stops it: SIGINT to the whole foreground group (make and the launcher).
Which processes it started is found independently of the launcher's own bookkeeping, by the state directory
in their environment or command line, before the stop; afterwards none may be alive and no port it listened on
may still be bound. The second start, through the Python API other tests build on, must find the first run's
history. Before the run, the triggerer is killed: the launcher must restart it, or the run's deferred sensor
never resumes. ``AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE=False`` (passed through like any user AIRFLOW__* setting) keeps
the scheduled run for the latest day, which polls every 60 s, from running ahead of the triggered one.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import psycopg
import pytest

from scripts.local_airflow import DAG_ID, LocalAirflow, Options, port_in_use
from tests.support.processes import wait_for

REPO = Path(__file__).resolve().parents[2]
VENV = Path(sys.executable).parent.parent
QUICK_RUN = {"poll_interval": 1, "lookback_days": 1, "report_types": ["virtual"]}
LOGICAL_DATE = "2026-11-20T00:00:00+00:00"


class Output:
    """The launcher's stdout, read on a thread so a full pipe never blocks it."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    def value(self, label: str) -> str | None:
        for line in self.lines:
            if line.strip().startswith(label):
                return line.strip()[len(label) :].strip()
        return None


def processes_of(state: Path, root: int) -> dict[int, str]:
    """Every live process below ``root`` (make), and every one whose environment or command line names the state
    directory: the launcher and the sandbox (LOCAL_AIRFLOW_STATE), the Airflow components and their workers
    (AIRFLOW_HOME; not the api-server, whose process title overwrites its environment), PostgreSQL
    (-D <state>/pgdata, started in a session of its own)."""
    found = {}
    with contextlib.suppress(psutil.Error):
        for proc in psutil.Process(root).children(recursive=True):
            with contextlib.suppress(psutil.Error):
                if proc.status() != psutil.STATUS_ZOMBIE:
                    found[proc.pid] = " ".join(proc.cmdline())[:160]
    for proc in psutil.process_iter(["pid", "cmdline", "status"]):
        with contextlib.suppress(psutil.Error):
            if proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            cmdline = " ".join(proc.info["cmdline"] or [])
            environ = proc.environ()
            home = environ.get("AIRFLOW_HOME", "")
            if str(state) in cmdline or home.startswith(str(state)) or environ.get("LOCAL_AIRFLOW_STATE") == str(state):
                found[proc.pid] = cmdline[:160]
    return found


def alive(pids: set[int]) -> dict[int, str]:
    result = {}
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(pid)
            if proc.status() != psutil.STATUS_ZOMBIE:
                result[pid] = " ".join(proc.cmdline())[:160]
    return result


@pytest.fixture
def state() -> Iterator[Path]:
    """Not under pytest's tmp_path: as root, PostgreSQL runs as user ``pgserver``, which must traverse the parents
    of its data directory, and a concurrent pytest session closes ``/tmp/pytest-of-root`` again (0700)."""
    parent = Path(tempfile.mkdtemp(prefix="dexcare-local-airflow-"))
    yield parent / "state"
    shutil.rmtree(parent, ignore_errors=True)


def test_make_airflow_runs_the_dag_and_ctrl_c_stops_everything(state: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update({
        "LOCAL_AIRFLOW_PORT": "0",
        "LOCAL_AIRFLOW_STATE": str(state),
        "LOCAL_AIRFLOW_UNPAUSE": "1",
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
    })  # fmt: skip
    timings: dict[str, float] = {}
    started = time.monotonic()
    # STAMP= : the venv running this test is installed already; make must not (re)install anything into it.
    make = subprocess.Popen(
        ["make", "--no-print-directory", "airflow", f"VENV={VENV}", "STAMP="],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    out = Output(make)
    try:
        url = wait_for("the launcher to print the URL", lambda: _ready(make, out), timeout=300)
        timings["startup"] = round(time.monotonic() - started, 1)
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", url), out.text
        assert out.value("Login") == "admin / admin", out.text
        run_file = json.loads((state / "run.json").read_text())
        timings.update({f"launcher {k}": v for k, v in run_file["startup_seconds"].items()})
        assert "password" not in json.dumps(run_file).lower()

        client = httpx.Client(base_url=url, timeout=30)
        token = client.post("/auth/token", json={"username": "admin", "password": "admin"}).json()["access_token"]
        client.headers["Authorization"] = f"Bearer {token}"
        connection = client.get("/api/v2/connections/dexcare_default").json()
        assert connection["host"] == run_file["sandbox_url"]
        assert client.get("/api/v2/connections/dexcare_warehouse").json()["conn_type"] == "postgres"
        assert client.get(f"/api/v2/dags/{DAG_ID}").json()["is_paused"] is False

        # A component that dies is restarted, as a deployment's supervisor would: the run below needs the triggerer.
        os.killpg(run_file["pids"]["triggerer"], signal.SIGKILL)
        wait_for("the launcher to restart the triggerer", lambda: "triggerer exited with -9; restarting it" in out.text,
                 timeout=30)  # fmt: skip
        restarted = json.loads((state / "run.json").read_text())
        assert restarted["pids"]["triggerer"] != run_file["pids"]["triggerer"]

        run_started = time.monotonic()
        response = client.post(f"/api/v2/dags/{DAG_ID}/dagRuns", json={"logical_date": LOGICAL_DATE, "conf": QUICK_RUN})
        assert response.status_code == 200, response.text
        run_id = response.json()["dag_run_id"]

        def finished() -> dict[str, str] | None:
            run = client.get(f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}").json()
            return run if run["state"] in {"success", "failed"} else None

        run = wait_for(f"run {run_id} to finish", finished, timeout=180)
        timings["run"] = round(time.monotonic() - run_started, 1)
        assert run["state"] == "success", f"{run}\n{_outputs(state)}"
        warehouse = out.value("dexcare_warehouse")
        uri = re.search(r"psql '([^']+)'", warehouse or "")
        assert uri, out.text
        with psycopg.connect(uri.group(1)) as conn:
            loaded = conn.execute("SELECT DISTINCT report_type FROM dexcare.load_audit").fetchall()
        assert [r[0] for r in loaded] == ["virtual"]
        client.close()

        started_here = processes_of(state, make.pid)
        pids = set(started_here) | set(restarted["pids"].values())
        # Both views must agree on the essentials, or the check below could pass by finding nothing.
        assert set(restarted["pids"].values()) <= set(started_here), started_here
        assert run_file["postmaster"] in started_here, started_here
        assert len(pids) >= 8, started_here

        stop_started = time.monotonic()
        os.killpg(make.pid, signal.SIGINT)  # what Ctrl-C in the terminal sends: every process of the foreground group
        make.wait(timeout=90)
        timings["stop"] = round(time.monotonic() - stop_started, 1)
    finally:
        if make.poll() is None:
            os.killpg(make.pid, signal.SIGKILL)
            make.wait(timeout=30)
        leftovers = processes_of(state, make.pid)
        for pid in leftovers:
            with contextlib.suppress(psutil.Error):
                psutil.Process(pid).kill()
    print(f"\nmake airflow timings (s): {json.dumps(timings)}; its output ends:\n" + "\n".join(out.lines[-3:]))
    assert "Stopped; nothing left running." in out.text, out.text
    assert not leftovers, f"left running after Ctrl-C: {leftovers}"
    assert not alive(pids), f"left running after Ctrl-C: {alive(pids)}"
    assert not [p for p in run_file["ports"] if port_in_use(p)], f"ports still bound: {run_file['ports']}"
    assert not (state / "run.json").exists()

    # A second start keeps the history: the run above is still there; the Python API other tests use.
    again = time.monotonic()
    only_triggered = {"AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False"}
    airflow = LocalAirflow(Options(state_dir=state, port=0, extra_env=only_triggered))
    with airflow:
        timings["second startup"] = round(time.monotonic() - again, 1)
        timings.update({f"second {k}": v for k, v in airflow.timings.items()})
        runs = airflow.api("GET", f"/dags/{DAG_ID}/dagRuns")["dag_runs"]
        assert [(r["dag_run_id"], r["state"]) for r in runs] == [(run_id, "success")]
        assert airflow.api("GET", f"/dags/{DAG_ID}")["is_paused"] is False
        second = airflow.pids()
    assert airflow.close() == []
    assert not alive(second), alive(second)
    print(f"make airflow timings (s): {json.dumps(timings)}")


def _ready(make: subprocess.Popen[str], out: Output) -> str | None:
    if make.poll() is not None:
        time.sleep(0.5)  # the reader thread may still be draining the pipe
        pytest.fail(f"make airflow exited with {make.returncode}:\n{out.text}")
    return out.value("UI and REST API")


def _outputs(state: Path) -> str:
    logs = sorted((state / "output").glob("*.log"))
    return "\n".join(f"==> {p}\n{p.read_text(errors='replace')[-3000:]}" for p in logs)
