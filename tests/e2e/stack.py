"""Real Airflow components as separate processes, for the end-to-end test.

``airflow dags test`` runs a deferred sensor's trigger inline in one process, so it cannot show that the
scheduler schedules our DAG, that a separate triggerer process imports and runs our trigger, or that a run
started through the REST API (the UI's trigger button) completes. ``AirflowStack`` starts what a deployment
runs: ``api-server``, ``scheduler`` (LocalExecutor), ``dag-processor`` and ``triggerer``, each its own process
group in a private AIRFLOW_HOME, each with its output in a file, and stops all of them (and anything they
spawned) however the test ends.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psutil

from tests.airflow_cli import AIRFLOW
from tests.airflow_cli import airflow_env as base_airflow_env

REPO = Path(__file__).resolve().parents[2]
COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
T = TypeVar("T")


def free_port() -> int:
    """A loopback port nobody listens on now (the api-server binds it a moment later)."""
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
    return base_airflow_env(home, REPO / "dags", **settings, **extra)


@dataclass
class Component:
    """One started process: its own process group, so it and its children are stopped together."""

    name: str
    proc: subprocess.Popen[bytes]
    output: Path
    family: set[int] = field(default_factory=set)

    def remember_children(self) -> None:
        """Note the pids below this process; a child that left the group can still be found and stopped."""
        with contextlib.suppress(psutil.Error):
            self.family.update(c.pid for c in psutil.Process(self.proc.pid).children(recursive=True))


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

    def start(self, name: str) -> Component:
        """Start one component in a new session (process group), output appended to ``<name>-<n>.log``."""
        n = 1 + sum(1 for c in [*self.stopped, *self.components.values()] if c.name == name)
        output = self.outputs / f"{name}-{n}.log"
        argv = [AIRFLOW, name, *(("--port", str(self.port), "--host", "127.0.0.1") if name == "api-server" else ())]
        with output.open("ab") as out:
            proc = subprocess.Popen(
                argv,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                cwd=self.home,
            )
        component = Component(name, proc, output)
        self.components[name] = component
        self.started_pids.add(proc.pid)
        return component

    def kill(self, name: str, sig: signal.Signals = signal.SIGKILL) -> None:
        """Signal a component's whole process group (a crashed container loses its children too)."""
        component = self.components.pop(name)
        component.remember_children()
        self._signal_group(component, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            component.proc.wait(timeout=30)
        self.stopped.append(component)

    def _signal_group(self, component: Component, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(component.proc.pid, sig)

    def close(self) -> list[str]:
        """Stop every component: SIGTERM to each group, then SIGKILL to whatever is left; report survivors."""
        self._client.close()
        running = list(self.components.values())
        self.components.clear()
        for component in running:
            component.remember_children()
            self._signal_group(component, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for component in running:
            with contextlib.suppress(subprocess.TimeoutExpired):
                component.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        everything = [*running, *self.stopped]
        for component in everything:
            component.remember_children()
            self._signal_group(component, signal.SIGKILL)
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
                if (proc.info["environ"] or {}).get("AIRFLOW_HOME") == str(self.home) and proc.info[
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
