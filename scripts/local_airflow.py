"""A local Airflow for this provider in one command (``make airflow``), reusable from tests.

``airflow standalone`` needs about fifteen settings before it runs this DAG, and with SQLite it fails at random
("database is locked") once four components write at once. This launcher starts what a deployment runs, each
as its own process group: the api-server (UI and REST API), scheduler (LocalExecutor), dag-processor and
triggerer, with an embedded PostgreSQL (the ``pgserver`` wheel) for the metadata database and the warehouse and
the DexCare sandbox on a free loopback port. It writes the connections ``dexcare_default`` and
``dexcare_warehouse`` to the metadata database (so they show in Admin > Connections), prints the URL and the
login, restarts a component that exits (up to three times, as a deployment's supervisor would), and stops
everything it started on Ctrl-C (SIGINT), SIGTERM or SIGHUP. Separate processes rather than
``airflow standalone``: each can be waited on until healthy, restarted and stopped by its own process group on
every Airflow 3 minor, and the launcher never depends on how ``standalone`` supervises its children.

State (metadata, warehouse, task logs, process output) lives in a directory, ``.airflow-local/`` by default, so
a second start keeps the history; ``--reset`` (or deleting the directory while stopped) starts afresh.

Python API, for tests and other tools::

    from scripts.local_airflow import LocalAirflow, Options

    with LocalAirflow(Options(state_dir=tmp_path / "airflow", port=0)) as airflow:
        airflow.url                      # "http://127.0.0.1:<port>": UI, /api/v2, /auth/token
        airflow.username, airflow.password
        run_id = airflow.trigger_run({"poll_interval": 1}, logical_date="2026-11-20T00:00:00+00:00")
        airflow.wait_for_run(run_id)     # the final DAG run (state "success" or "failed") as /api/v2 shows it
        airflow.api("GET", "/dags")      # /api/v2 with a JWT; a non-2xx answer raises with its body
        airflow.cli("dags", "list")      # the airflow CLI with the stack's environment
        airflow.warehouse_uri            # libpq URI of the warehouse (None when AIRFLOW_CONN_DEXCARE_WAREHOUSE
                                         # names another one); airflow.sandbox_url likewise
    # leaving the block stops every process; LocalAirflow.close() returns the ones that survived (none)

``Options`` sets the state directory, the api-server port (0: any free one), the login, whether the DAG is
unpaused, the sandbox's arguments and extra environment for every Airflow process (e.g. a plugins folder, or
``AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE=False`` so only runs you trigger run). ``airflow.env`` is that environment,
``airflow.pids()`` the processes started (and their children) still alive, ``airflow.ports()`` the loopback ports
the stack listens on.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import fcntl
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO, Any, TypeVar
from urllib.parse import parse_qs, urlparse

import httpx
import psutil

REPO = Path(__file__).resolve().parent.parent
DAG_ID = "dexcare_all_visits_report"
BIN = Path(sys.executable).parent
AIRFLOW = str(BIN / "airflow")
COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
#: Reports are ready in about 3 s: QUEUED 1 s, RUNNING 2 s.
FAST_SANDBOX = ("--visits-per-day", "40", "--queue-seconds", "1", "--run-seconds", "2")
SANDBOX_READY = "DexCare sandbox listening on "
#: Marks a connection this launcher wrote, so it may replace or delete it (never one a user added).
CONNECTION_MARK = "written by scripts/local_airflow.py; rewritten at every start"
#: Marks a directory as this launcher's state, so ``--reset`` never deletes anything else.
STATE_MARK = ".local-airflow"
#: What a user's own AIRFLOW__* variables may not override: the settings that wire the processes together.
WIRING = (
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
    "AIRFLOW__CORE__EXECUTION_API_SERVER_URL",
    "AIRFLOW__API__BASE_URL",
    "AIRFLOW__API__PORT",
    "AIRFLOW__API__HOST",
    "AIRFLOW__API_AUTH__JWT_SECRET",
    "AIRFLOW__API__SECRET_KEY",
    "AIRFLOW__API_AUTH__JWT_ISSUER",
    "AIRFLOW__CORE__AUTH_MANAGER",
    "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS",
    "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE",
    "AIRFLOW__CORE__DAGS_FOLDER",
    "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT",
    "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT",
)
CONNECTION_ENV = ("AIRFLOW_CONN_DEXCARE_DEFAULT", "AIRFLOW_CONN_DEXCARE_WAREHOUSE")
#: Seconds a component gets between SIGTERM and SIGKILL: the compose stack's stop_grace_period (a triggerer took
#: up to 16 s to stop there, and a whole stop takes 15-20 s here).
STOP_GRACE = 30
ENV_PORT = "LOCAL_AIRFLOW_PORT"
ENV_STATE = "LOCAL_AIRFLOW_STATE"
ENV_PASSWORD = "LOCAL_AIRFLOW_PASSWORD"  # noqa: S105 - the variable's name
ENV_UNPAUSE = "LOCAL_AIRFLOW_UNPAUSE"

T = TypeVar("T")


class LaunchError(RuntimeError):
    """The stack could not start or a component died; the message names the cause and where its output is."""


class LaunchTimeout(LaunchError, TimeoutError):
    """Something never happened within its time: a launch error to the launcher's callers, and a plain
    ``TimeoutError`` to the tests that poll their own servers with :func:`wait_for`."""


@dataclass(frozen=True)
class Options:
    """How to start the stack; the defaults are what ``make airflow`` uses."""

    state_dir: Path = REPO / ".airflow-local"
    #: The api-server's port on 127.0.0.1; 0 picks a free one.
    port: int = 8080
    username: str = "admin"
    password: str = "admin"  # noqa: S105 - the documented local login
    #: Unpause the DAG once it is parsed (it starts paused; a restart keeps whatever it was).
    unpause: bool = False
    sandbox_args: Sequence[str] = FAST_SANDBOX
    #: For every Airflow process, over the launcher's defaults (but not over WIRING). The command passes the
    #: user's AIRFLOW__* here; the API takes none from os.environ (a test session's would leak in).
    extra_env: Mapping[str, str] = field(default_factory=dict)
    #: ``AIRFLOW_CONN_DEXCARE_DEFAULT`` / ``AIRFLOW_CONN_DEXCARE_WAREHOUSE`` values to use instead of the sandbox /
    #: the embedded warehouse.
    connections: Mapping[str, str] = field(default_factory=dict)
    #: Seconds to wait for the migration and for every component to be healthy and the DAG parsed.
    timeout: float = 240

    def __post_init__(self) -> None:
        unknown = sorted(set(self.connections) - set(CONNECTION_ENV))
        if unknown:
            raise ValueError(f"Options.connections takes only {', '.join(CONNECTION_ENV)}; not {unknown}.")
        if not 0 <= self.port < 65536:
            raise ValueError(f"Options.port must be 0 (any free port) or a TCP port, not {self.port}.")


@dataclass
class Process:
    """One started process in its own session (process group); its descendants are remembered so a child that
    left the group is still stopped."""

    name: str
    proc: subprocess.Popen[bytes]
    output: Path
    family: set[int] = field(default_factory=set)

    def remember_children(self) -> None:
        with contextlib.suppress(psutil.Error):
            self.family.update(c.pid for c in psutil.Process(self.proc.pid).children(recursive=True))


def free_port() -> int:
    """A loopback port nobody listens on now (the server binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
        return False


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
    raise LaunchTimeout(f"Timed out after {timeout:.0f}s waiting for {what} (last error: {last_error!r})")


class LocalAirflow:
    """The whole local stack; ``start()`` (or ``with``) boots it, ``close()`` stops everything it started."""

    def __init__(self, options: Options | None = None) -> None:
        self.options = options or Options()
        self.state_dir = self.options.state_dir.expanduser().resolve()
        self.home = self.state_dir / "home"
        self.outputs = self.state_dir / "output"
        self.username = self.options.username
        self.password = self.options.password
        self.port = 0
        self.url = ""
        self.sandbox_url: str | None = None
        self.warehouse_uri: str | None = None
        self.metadata_uri = ""
        self.env: dict[str, str] = {}
        self.startup_seconds = 0.0
        #: Seconds each start-up step took.
        self.timings: dict[str, float] = {}
        #: Processes that had to be killed: they did not stop within STOP_GRACE seconds of SIGTERM.
        self.killed: list[str] = []
        #: Components ``supervise`` restarted, by name, and the processes that exited.
        self.restarts: dict[str, int] = {}
        self.exited: list[Process] = []
        self.processes: list[Process] = []
        self._log_ports: list[int] = []
        self._pg: Any = None
        self._postmaster: psutil.Process | None = None
        self._lock: IO[str] | None = None
        self._client: httpx.Client | None = None
        self._token: str | None = None

    # --- lifecycle ---------------------------------------------------------------------------------------

    def __enter__(self) -> LocalAirflow:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def start(self, say: Callable[[str], None] = lambda _line: None) -> LocalAirflow:
        """Boot everything; on any failure (or a signal's exception) stop what was started, then re-raise.

        ``say`` gets one line per step; ``timings`` gets each step's seconds. The sandbox (whose import of
        Airflow takes seconds) starts while the database is migrated."""
        started = time.monotonic()
        try:
            with self._timed("state and port"):
                self._prepare_state()
                self.port = self._choose_port()
                self.url = f"http://127.0.0.1:{self.port}"
                connections = dict(self.options.connections)
            own_warehouse = "AIRFLOW_CONN_DEXCARE_WAREHOUSE" not in connections
            say("Starting the embedded PostgreSQL" + ("" if own_warehouse else " (for the metadata only)"))
            with self._timed("postgres"):
                pg_uri = self._start_postgres()
            self.metadata_uri = _with_database(pg_uri, "airflow", scheme="postgresql+psycopg2")
            if own_warehouse:
                self.warehouse_uri = _with_database(pg_uri, "warehouse")
            sandbox_token = None
            if "AIRFLOW_CONN_DEXCARE_DEFAULT" not in connections:
                sandbox_token = secrets.token_urlsafe(24)
                sandbox = self._spawn_sandbox(sandbox_token)
            self.env = self._airflow_env(connections)
            with self._timed("db migrate"):
                if self._migrated_by_this_airflow():
                    say("Metadata database already migrated by this Airflow version")
                else:
                    say("Migrating the metadata database (airflow db migrate)")
                    self.cli("db", "migrate", timeout=self.options.timeout)
                    self._remember_migration()
            if sandbox_token is not None:
                with self._timed("sandbox"):
                    self.sandbox_url = self._sandbox_ready(sandbox)
                say(f"DexCare sandbox on {self.sandbox_url}")
            say("Starting " + ", ".join(COMPONENTS))
            with self._timed("components healthy"):
                for name in COMPONENTS:
                    self._start_component(name)
                self._client = httpx.Client(base_url=self.url, timeout=30)
                wait_for("the api-server to answer", self._api_answers, self.options.timeout)
                self._write_connections(sandbox_token)
                wait_for(
                    "the scheduler, dag-processor and triggerer to report healthy", self._healthy, self.options.timeout
                )
            with self._timed("DAG parsed"):
                self._wait_dag_parsed()
            if self.options.unpause:
                self.api("PATCH", f"/dags/{DAG_ID}", json={"is_paused": False})
            self._write_run_file()
        except BaseException:
            self.close()
            raise
        self.startup_seconds = round(time.monotonic() - started, 1)
        return self

    @contextlib.contextmanager
    def _timed(self, step: str) -> Iterator[None]:
        begun = time.monotonic()
        try:
            yield
        finally:
            self.timings[step] = round(time.monotonic() - begun, 1)

    def close(self) -> list[str]:
        """Stop every process group (SIGTERM, then SIGKILL after STOP_GRACE seconds), then PostgreSQL; return the
        survivors, which should be none. Safe to call twice and after a failed start."""
        if self._client is not None:
            self._client.close()
            self._client = None
        running = list(self.processes)
        for process in running:
            process.remember_children()
            _signal_group(process.proc, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        for process in running:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        for process in [*running, *self.exited]:
            if process in running and process.proc.poll() is None:
                self.killed.append(process.name)
            process.remember_children()
            _signal_group(process.proc, signal.SIGKILL)
            for pid in process.family:
                with contextlib.suppress(psutil.Error):
                    psutil.Process(pid).kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.proc.wait(timeout=5)
        self._stop_postgres()
        survivors = self.survivors()
        with contextlib.suppress(FileNotFoundError):
            (self.state_dir / "run.json").unlink()
        if self._lock is not None:
            self._lock.close()
            self._lock = None
        return survivors

    def survivors(self) -> list[str]:
        """Processes started here (or by them), and the PostgreSQL server, still alive; zombies count as gone."""
        alive = []
        for pid in sorted(self.pids()):
            with contextlib.suppress(psutil.Error):
                alive.append(f"pid {pid}: {' '.join(psutil.Process(pid).cmdline())[:160]}")
        return alive

    @property
    def started_anything(self) -> bool:
        return bool(self.processes or self.exited or self._postmaster)

    def pids(self) -> set[int]:
        """Every process this stack started, their descendants and the postmaster, that is alive now."""
        candidates: set[int] = set()
        for process in [*self.processes, *self.exited]:
            process.remember_children()
            candidates |= {process.proc.pid, *process.family}
        if self._postmaster is not None:
            candidates.add(self._postmaster.pid)
            with contextlib.suppress(psutil.Error):
                candidates.update(c.pid for c in self._postmaster.children(recursive=True))
        alive = set()
        for pid in candidates:
            with contextlib.suppress(psutil.Error):
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    alive.add(pid)
        return alive

    def ports(self) -> list[int]:
        """The loopback TCP ports the stack listens on: api-server, sandbox, the two log servers."""
        ports = [self.port, *self._log_ports]
        if self.sandbox_url:
            ports.append(int(urlparse(self.sandbox_url).port or 0))
        return [p for p in ports if p]

    def assert_running(self) -> None:
        """A component that exited on its own is a failure worth its output's tail, not a silent hang."""
        for process in self.processes:
            code = process.proc.poll()
            if code is not None:
                tail = process.output.read_text(errors="replace")[-3000:]
                raise LaunchError(f"{process.name} exited with {code}; its output ({process.output}) ends:\n{tail}")

    def supervise(self, say: Callable[[str], None], limit: int = 3) -> None:
        """Restart an Airflow component that exited, as a deployment's supervisor would (up to ``limit`` times
        each); the sandbox, or a component past its limit, raises ``LaunchError`` with its output's tail."""
        for process in list(self.processes):
            code = process.proc.poll()
            if code is None:
                continue
            restarts = self.restarts.get(process.name, 0)
            if process.name not in COMPONENTS or restarts >= limit:
                self.assert_running()
            _signal_group(process.proc, signal.SIGKILL)  # whatever it left in its group
            self.processes.remove(process)
            self.exited.append(process)
            self.restarts[process.name] = restarts + 1
            say(f"{process.name} exited with {code}; restarting it ({restarts + 1} of {limit}; its output: "
                f"{process.output})")  # fmt: skip
            self._start_component(process.name)
            self._write_run_file()

    # --- REST API and CLI --------------------------------------------------------------------------------

    def token(self) -> str:
        """A JWT from ``/auth/token`` (the simple auth manager's login), cached."""
        if self._token is None:
            response = self._http().post("/auth/token", json={"username": self.username, "password": self.password})
            if response.status_code >= 300:
                raise LaunchError(f"POST /auth/token -> {response.status_code}: the login was refused")
            self._token = str(response.json()["access_token"])
        return self._token

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        """``/api/v2<path>`` with the bearer token; a non-2xx answer raises with its body, which says why."""
        response = self._http().request(
            method, f"/api/v2{path}", headers={"Authorization": f"Bearer {self.token()}"}, **kwargs
        )
        if response.status_code >= 300:
            raise LaunchError(f"{method} /api/v2{path} -> {response.status_code}: {response.text[:2000]}")
        return response.json() if response.content else None

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """``airflow <args>`` with the stack's environment; its output is appended to ``output/cli.log``."""
        done = subprocess.run(
            [AIRFLOW, *args], env=self.env, capture_output=True, text=True, timeout=timeout, check=False,
            cwd=self.home,
        )
        with (self.outputs / "cli.log").open("a") as log:
            log.write(f"$ airflow {' '.join(args)}\n{done.stdout}\n{done.stderr}\n[exit {done.returncode}]\n")
        if done.returncode != 0:
            raise LaunchError(
                f"`airflow {' '.join(args)}` failed ({done.returncode}); see {self.outputs / 'cli.log'}:\n"
                f"{done.stderr[-2000:]}"
            )
        return done

    def trigger_run(self, conf: Mapping[str, Any] | None = None, logical_date: str | None = None,
                    dag_id: str = DAG_ID) -> str:
        """``POST /dags/{id}/dagRuns`` (the UI's Trigger button); returns the run id."""
        body: dict[str, Any] = {"logical_date": logical_date, "conf": dict(conf or {})}
        return str(self.api("POST", f"/dags/{dag_id}/dagRuns", json=body)["dag_run_id"])

    def wait_for_run(self, run_id: str, timeout: float = 180, dag_id: str = DAG_ID) -> dict[str, Any]:
        """The run once it is ``success`` or ``failed``, as ``/api/v2`` shows it; a component that died fails."""

        def finished() -> dict[str, Any] | None:
            self.assert_running()
            run = self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}")
            return run if run["state"] in {"success", "failed"} else None

        return wait_for(f"run {run_id} to finish", finished, timeout, interval=0.5)

    def _http(self) -> httpx.Client:
        if self._client is None:
            raise LaunchError("The stack is not running: call start() (or use `with LocalAirflow(...)`) first.")
        return self._client

    # --- the parts ---------------------------------------------------------------------------------------

    def _prepare_state(self) -> None:
        """Create the state directory and hold its lock: two launchers on one directory would share a database
        and fight over it."""
        if self.state_dir.exists() and any(self.state_dir.iterdir()) and not (self.state_dir / STATE_MARK).exists():
            raise LaunchError(
                f"{self.state_dir} exists and is not a local Airflow state directory: choose an empty or new one "
                f"(--state-dir or {ENV_STATE})."
            )
        for path in (self.state_dir, self.home, self.outputs):
            path.mkdir(parents=True, exist_ok=True)
        if os.geteuid() != 0:
            # As root, pgserver runs PostgreSQL as user "pgserver" and opens every parent of pgdata to others.
            self.state_dir.chmod(0o700)
        (self.state_dir / STATE_MARK).touch()
        lock = (self.state_dir / "lock").open("w")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            raise LaunchError(
                f"Another local Airflow is running on {self.state_dir}: stop it (Ctrl-C in its terminal) or give "
                f"this one another state directory (--state-dir or {ENV_STATE})."
            ) from None
        self._lock = lock
        passwords = self.home / "passwords.json"
        passwords.write_text(json.dumps({self.username: self.password}))
        passwords.chmod(0o600)

    def _choose_port(self) -> int:
        port = self.options.port or free_port()
        if port_in_use(port):
            raise LaunchError(
                f"Port {port} on 127.0.0.1 is in use (another Airflow, the compose stack, `make sandbox`?): stop "
                f"that, or choose another port: {ENV_PORT}=8081 make airflow (0 picks a free one)."
            )
        return port

    def _start_postgres(self) -> str:
        """The embedded server on ``state/pgdata``, with the ``airflow`` and ``warehouse`` databases."""
        import atexit
        import logging
        import warnings

        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")  # pgserver's, at import; harmless
        import pgserver
        import psycopg
        from psycopg import sql

        logging.getLogger("pgserver").setLevel(logging.WARNING)
        pgdata = self.state_dir / "pgdata"
        _forget_dead_handles(pgdata)
        server = pgserver.get_server(pgdata, cleanup_mode="stop")
        atexit.unregister(server._cleanup)  # stopped by close(); its own exit hook would only repeat it
        self._pg = server
        self._postmaster = server.get_postmaster_info().process
        uri = server.get_uri()
        with psycopg.connect(uri, autocommit=True) as conn:
            existing = {row[0] for row in conn.execute("SELECT datname FROM pg_database")}
            for name in ("airflow", "warehouse"):
                if name not in existing:
                    conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return uri

    def _stop_postgres(self) -> None:
        server, self._pg = self._pg, None
        if server is not None:
            with contextlib.suppress(Exception):
                server.cleanup()
        postmaster = self._postmaster
        if postmaster is not None and postmaster.is_running():
            # pgserver stops the server only for its last handle; the lock makes this launcher the only one.
            with contextlib.suppress(psutil.Error):
                postmaster.send_signal(signal.SIGINT)  # PostgreSQL's fast shutdown
                postmaster.wait(10)
            with contextlib.suppress(psutil.Error):
                postmaster.kill()

    def _alembic_revision(self) -> str | None:
        import psycopg

        uri = _with_database(self.metadata_uri, "airflow", scheme="postgresql")
        with psycopg.connect(uri) as conn, contextlib.suppress(psycopg.errors.UndefinedTable):
            row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
            return str(row[0]) if row else None
        return None

    def _migrated_by_this_airflow(self) -> bool:
        """``airflow db migrate`` takes 10-20 s even with nothing to do; a restart skips it when this Airflow
        version migrated the database last and it is still at that revision."""
        with contextlib.suppress(FileNotFoundError, ValueError, KeyError):
            marker = json.loads((self.home / "migrated.json").read_text())
            return marker["airflow"] == _airflow_version() and marker["revision"] == self._alembic_revision()
        return False

    def _remember_migration(self) -> None:
        marker = {"airflow": _airflow_version(), "revision": self._alembic_revision()}
        (self.home / "migrated.json").write_text(json.dumps(marker))

    def _spawn_sandbox(self, token: str) -> Process:
        """``python -m dexcare.sandbox`` in its own session; the token goes through the environment, not argv."""
        output = self.outputs / "sandbox.log"
        env = {**os.environ, "DEXCARE_SANDBOX_TOKEN": token}
        argv = [sys.executable, "-m", "dexcare.sandbox", "--host", "127.0.0.1", "--port", "0",
                *self.options.sandbox_args]  # fmt: skip
        with output.open("ab") as err:
            proc = subprocess.Popen(
                argv, env=env, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL, start_new_session=True
            )
        process = Process("sandbox", proc, output)
        self.processes.append(process)
        return process

    def _sandbox_ready(self, process: Process) -> str:
        """The sandbox's URL from the one line it prints once it accepts connections."""
        stdout = process.proc.stdout
        assert stdout is not None
        line = stdout.readline().decode(errors="replace")
        if not line.startswith(SANDBOX_READY):
            raise LaunchError(f"The DexCare sandbox did not start: it printed {line.strip()!r}; see {process.output}.")
        stdout.close()  # it prints nothing more; closing keeps a full pipe from ever blocking it
        return line[len(SANDBOX_READY) :].strip()

    def _airflow_env(self, connections: Mapping[str, str]) -> dict[str, str]:
        """One environment for every component and CLI call: this process's minus its Airflow settings, the
        defaults here, ``extra_env`` over them, then WIRING. Knobs that only make a laptop responsive are
        commented."""
        self._log_ports = [free_port(), free_port()]
        defaults = {
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__PARALLELISM": "4",
            # Admin > Connections > Test: off by default in Airflow 3; this stack is local and loopback-only.
            "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
            "AIRFLOW__API__WORKERS": "1",
            # The embedded server allows 100 connections; five processes with default pools could take 75.
            "AIRFLOW__DATABASE__SQL_ALCHEMY_POOL_SIZE": "2",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_MAX_OVERFLOW": "6",
            # Against Airflow's scheduler race that can fail a deferred sensor (README: the daily DAG).
            "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "1",
            # A changed DAG file shows up within seconds.
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        }
        wiring = {
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.metadata_uri,
            # Without this, tasks on a non-default API port die with "Connection refused".
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
            "AIRFLOW__API__BASE_URL": self.url,
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__HOST": "127.0.0.1",
            # Every process signs and checks task tokens with the same secret; a new one at every start.
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
            "AIRFLOW__API__SECRET_KEY": secrets.token_hex(16),
            # Airflow 3.0 leaves it unset, and PyJWT >= 2.10 refuses to sign a token without one (login fails).
            "AIRFLOW__API_AUTH__JWT_ISSUER": "dexcare-local-airflow",
            "AIRFLOW__CORE__AUTH_MANAGER": (
                "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
            ),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{self.username}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(self.home / "passwords.json"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            # Fixed by default (8793, 8794): a second stack on the machine would collide.
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(self._log_ports[0]),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(self._log_ports[1]),
        }
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
        env.update({"AIRFLOW_HOME": str(self.home), "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"})
        extra = {k: v for k, v in self.options.extra_env.items() if k not in WIRING}
        env.update({**defaults, **extra, **wiring, **connections})
        return env

    def _start_component(self, name: str) -> None:
        output = self.outputs / f"{name}.log"
        argv = [AIRFLOW, name]
        if name == "api-server":
            argv += ["--port", str(self.port), "--host", "127.0.0.1"]
        with output.open("ab") as out:
            out.write(f"\n==== {dt.datetime.now(dt.UTC).isoformat(timespec='seconds')} start ====\n".encode())
            out.flush()
            proc = subprocess.Popen(
                argv, env=self.env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, cwd=self.home,
            )
        self.processes.append(Process(name, proc, output))

    def _api_answers(self) -> bool:
        self.assert_running()
        return self._http().get("/api/v2/monitor/health").status_code == 200

    def _healthy(self) -> bool:
        self.assert_running()
        report = self._http().get("/api/v2/monitor/health").json()
        return all(
            (report.get(c) or {}).get("status") == "healthy"
            for c in ("metadatabase", "scheduler", "triggerer", "dag_processor")
        )

    def _wait_dag_parsed(self) -> dict[str, Any]:
        """The DAG once serialized; an import error fails the start at once, with its text."""

        def parsed() -> dict[str, Any] | None:
            self.assert_running()
            errors = self.api("GET", "/importErrors")["import_errors"]
            if errors:
                raise LaunchError(f"The DAG folder {REPO / 'dags'} has import errors: {errors}")
            with contextlib.suppress(LaunchError):
                return self.api("GET", f"/dags/{DAG_ID}")
            return None

        return wait_for(f"the DAG {DAG_ID} to be parsed", parsed, self.options.timeout)

    def _write_connections(self, sandbox_token: str | None) -> None:
        """``dexcare_default`` and ``dexcare_warehouse`` in the metadata database, where the UI lists them; the
        sandbox's port and token change at every start, so they are rewritten. One given in the environment
        (AIRFLOW_CONN_*) is used instead, and a stale copy this launcher wrote is deleted so the UI does not
        show it. One someone added under the same id is left alone."""
        wanted: dict[str, dict[str, Any] | None] = {"dexcare_default": None, "dexcare_warehouse": None}
        if sandbox_token is not None and self.sandbox_url:
            wanted["dexcare_default"] = {"conn_type": "dexcare", "host": self.sandbox_url, "password": sandbox_token}
        if self.warehouse_uri:
            wanted["dexcare_warehouse"] = _postgres_connection(self.warehouse_uri)
        for conn_id, fields in wanted.items():
            existing = None
            with contextlib.suppress(LaunchError):
                existing = self.api("GET", f"/connections/{conn_id}")
            if existing is not None:
                if existing.get("description") != CONNECTION_MARK:
                    continue  # added in the UI or the CLI: theirs, kept (and used)
                self.api("DELETE", f"/connections/{conn_id}")
            if fields is not None:
                self.api("POST", "/connections", json={"connection_id": conn_id, "description": CONNECTION_MARK,
                                                       **fields})

    def _write_run_file(self) -> None:
        """``state/run.json``: what is running, for tools and for finding leftovers (no secret in it)."""
        info = {
            "url": self.url,
            "pid": os.getpid(),
            "pids": {p.name: p.proc.pid for p in self.processes},
            "postmaster": self._postmaster.pid if self._postmaster else None,
            "ports": self.ports(),
            "sandbox_url": self.sandbox_url,
            "startup_seconds": self.timings,
        }
        (self.state_dir / "run.json").write_text(json.dumps(info, indent=2))


def _airflow_version() -> str:
    from importlib.metadata import version

    return version("apache-airflow")


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def _forget_dead_handles(pgdata: Path) -> None:
    """pgserver stops its server when the last process holding a handle exits, counting pids in a file; a
    launcher that was SIGKILLed leaves its pid there and the server would never be stopped again."""
    handles = pgdata / ".handle_pids.json"
    with contextlib.suppress(FileNotFoundError, ValueError):
        pids = json.loads(handles.read_text())
        handles.write_text(json.dumps([p for p in pids if psutil.pid_exists(p)]))


def _with_database(uri: str, database: str, scheme: str | None = None) -> str:
    parsed = urlparse(uri)
    return parsed._replace(path=f"/{database}", scheme=scheme or parsed.scheme).geturl()


def _postgres_connection(uri: str) -> dict[str, Any]:
    """A libpq URI (also pgserver's unix-socket form) as the fields of an Airflow connection."""
    parsed = urlparse(uri)
    host = parse_qs(parsed.query).get("host", [parsed.hostname])[0]
    return {"conn_type": "postgres", "host": host, "port": parsed.port, "login": parsed.username,
            "schema": parsed.path.lstrip("/")}  # fmt: skip


# --- the command -------------------------------------------------------------------------------------------


class Stop(Exception):
    """A signal asked the launcher to stop."""


def _on_signal(signum: int, _frame: FrameType | None) -> None:
    raise Stop(signal.Signals(signum).name)


def _while_stopping(_signum: int, _frame: FrameType | None) -> None:
    print(f"Still stopping; please wait (at most {STOP_GRACE + 15} s).", flush=True)


def _reset(state_dir: Path) -> None:
    state_dir = state_dir.expanduser().resolve()
    if not state_dir.exists():
        return
    if not (state_dir / STATE_MARK).exists():
        raise LaunchError(f"Not resetting {state_dir}: it is not a local Airflow state directory.")
    with (state_dir / "lock").open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LaunchError(f"Not resetting {state_dir}: a local Airflow is running on it; stop it first.") from None
        shutil.rmtree(state_dir)
    print(f"Deleted {state_dir} (metadata, warehouse, logs): this start is a fresh one.", flush=True)


def _banner(airflow: LocalAirflow, password_from_env: bool) -> str:
    dag = airflow.api("GET", f"/dags/{DAG_ID}")
    paused = (
        "paused: unpause it in the UI (or start with --unpause); unpausing starts the run for the latest day"
        if dag["is_paused"] else "unpaused: it runs daily; a run for the latest day starts at once"
    )
    password = f"the value of {ENV_PASSWORD}" if password_from_env else airflow.password
    warehouse = (
        f"embedded PostgreSQL, database warehouse (psql '{airflow.warehouse_uri}')"
        if airflow.warehouse_uri else "from AIRFLOW_CONN_DEXCARE_WAREHOUSE"
    )
    dexcare = f"sandbox at {airflow.sandbox_url}" if airflow.sandbox_url else "from AIRFLOW_CONN_DEXCARE_DEFAULT"
    lines = [
        f"Local Airflow {_airflow_version()} is up (started in {airflow.startup_seconds:.0f} s).",
        f"  UI and REST API  {airflow.url}",
        f"  Login            {airflow.username} / {password}",
        f"  DAG              {DAG_ID} ({paused})",
        '  Quick run        Trigger with params {"poll_interval": 1}: the sandbox has a report ready in 3 s',
        f"  dexcare_default  {dexcare}",
        f"  dexcare_warehouse {warehouse}",
        f"  State            {airflow.state_dir} (process output in output/, task logs in home/logs/)",
        "Ctrl-C stops everything. The next start keeps the history; --reset starts afresh.",
    ]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python scripts/local_airflow.py", description=__doc__.splitlines()[0] if __doc__ else None
    )
    parser.add_argument("--port", type=int, default=int(os.environ.get(ENV_PORT, "8080")),
                        help=f"api-server port on 127.0.0.1; 0 picks a free one (default 8080, or {ENV_PORT})")
    parser.add_argument("--state-dir", type=Path,
                        default=Path(os.environ.get(ENV_STATE) or REPO / ".airflow-local"),
                        help=f"where metadata, warehouse and logs live (default .airflow-local, or {ENV_STATE})")
    parser.add_argument("--unpause", action="store_true",
                        default=os.environ.get(ENV_UNPAUSE, "").lower() in {"1", "true", "yes"},
                        help=f"unpause the DAG once it is parsed (or {ENV_UNPAUSE}=1)")
    parser.add_argument("--reset", action="store_true", help="delete the state directory first: a fresh start")
    return parser  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    password = os.environ.get(ENV_PASSWORD) or Options.password
    try:
        options = Options(
            state_dir=args.state_dir, port=args.port, password=password, unpause=args.unpause,
            extra_env={k: v for k, v in os.environ.items() if k.startswith("AIRFLOW__")},
            connections={k: os.environ[k] for k in CONNECTION_ENV if os.environ.get(k)},
        )  # fmt: skip
    except ValueError as exc:
        build_parser().error(f"{exc} (--port or {ENV_PORT})")
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    airflow = LocalAirflow(options)
    code = 0
    try:
        if args.reset:
            _reset(options.state_dir)
        airflow.start(say=lambda line: print(line, flush=True))
        print(_banner(airflow, bool(os.environ.get(ENV_PASSWORD))), flush=True)
        while True:
            airflow.supervise(say=lambda line: print(line, flush=True))
            time.sleep(1)
    except Stop as stop:
        print(f"\n{stop}: stopping everything this launcher started...", flush=True)
    except LaunchError as exc:
        print(f"\nLocal Airflow failed: {exc}", file=sys.stderr, flush=True)
        code = 1
    except Exception:
        traceback.print_exc()
        print(f"\nLocal Airflow failed; each process's output is in {airflow.outputs}", file=sys.stderr, flush=True)
        code = 1
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, _while_stopping)
        survivors = airflow.close()
    if survivors:
        print("Still running after the stop (kill them by hand):\n  " + "\n  ".join(survivors), file=sys.stderr)
        return 1
    if airflow.killed:
        print(f"Killed after {STOP_GRACE} s (they did not stop on SIGTERM): {', '.join(airflow.killed)}", flush=True)
    if airflow.started_anything:
        print("Stopped; nothing left running.", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
