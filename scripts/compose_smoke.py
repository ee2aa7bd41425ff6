"""``make compose-smoke``: docker-compose.airflow.yml brought up on a real Docker engine and run end to end.

It builds the image once, starts the stack with ``--pull never`` (it never pulls anything: the engine needs
only the base images the Dockerfile and the compose file name), waits until every service is healthy,
triggers ``dexcare_all_visits_report`` through the REST API (the UI's trigger button) for all three report
types with a short poll interval, and checks that the run succeeded with every task on its first try, that
each ``avr_*`` table and ``load_audit`` hold exactly what the sandbox's deterministic generator says the
window contains, and that the DexCare key appears in no container log and no task log. Before that it asks
the engine which files the build context really holds (.env and .git must not be among them). It always
tears the stack down (``down -v``), also on failure and on Ctrl-C, and prints how long each phase took.

Everything runs under its own compose project name, with its own generated secrets (a private .env made by
docker/make-env.sh), its own image tag and a free host port, so a stack you run yourself is never touched.
Variables exported in your shell still reach compose as usual (e.g. ``DEXCARE_KEY=wrong make compose-smoke``
shows a failing run end to end). ``--compose`` is the compose command, e.g.
``"../shared/docker/offline-engine.sh compose"`` on hosts without NAT for containers; ``--docker`` the docker
CLI, used only to remove the throw-away image of the build-context probe with its layers.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
COMPOSE_FILE = REPO / "docker-compose.airflow.yml"
DOCKERFILE = REPO / "docker" / "Dockerfile.airflow"
DOCKERIGNORE = REPO / ".dockerignore"
MAKE_ENV = REPO / "docker" / "make-env.sh"
DAG_ID = "dexcare_all_visits_report"
SANDBOX_SERVICE = "dexcare-sandbox"
SCHEDULER_SERVICE = "airflow-scheduler"
POSTGRES_SERVICE = "postgres"
SCHEMA = "compose_smoke"
WINDOW_DAYS = 3
# Files the build context must never hold, whatever .dockerignore says.
FORBIDDEN_IN_CONTEXT = (".env", ".git")
# The daemon removes the .dockerignore itself from the context a build sees (the client sends it along).
REMOVED_BY_DAEMON = frozenset({".dockerignore"})
EXIT_KILLED = 137  # SIGKILL: a container that did not stop within its grace period


class SmokeFailure(Exception):
    """A check failed; the message says which and what was seen."""


# --- pure parts (unit-tested in tests/compose/test_compose_smoke.py) ---------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="compose_smoke.py", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--compose",
        default=os.environ.get("COMPOSE", "docker compose"),
        help='the compose command, split like a shell would (default: $COMPOSE or "docker compose")',
    )
    parser.add_argument("--docker", default=os.environ.get("DOCKER", "docker"), help="the docker CLI (default: docker)")
    parser.add_argument(
        "--project",
        default=f"dexcare-smoke-{secrets.token_hex(3)}",
        help="compose project name (default: dexcare-smoke-<random>, never a stack of yours)",
    )
    parser.add_argument(
        "--image",
        default="airflow-provider-dexcare:compose-smoke",
        help="tag of the image it builds and keeps (default: %(default)s)",
    )
    parser.add_argument("--timeout", type=float, default=900, help="seconds each waiting phase may take")
    args = parser.parse_args(argv)
    args.compose = shlex.split(args.compose)
    args.docker = shlex.split(args.docker)
    if not args.compose:
        parser.error("--compose is empty")
    if not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", args.project):
        parser.error(f"--project {args.project!r}: lowercase letters, digits, '-' and '_' only (compose's rule)")
    return args


def context_files(root: Path, dockerignore: Path, dockerfile: str) -> set[str]:
    """The files a classic ``docker build`` sends from ``root``, by Docker's own .dockerignore rules.

    docker-py's matcher is a port of the one the Docker CLI and Compose use (``**``, ``!`` exceptions, the
    last matching pattern wins, a directory's exclusion covers its contents). As the CLI does, the
    Dockerfile is always sent."""
    from docker.utils.build import exclude_paths

    patterns = [
        line.strip() for line in dockerignore.read_text().splitlines() if line.strip() and not line.startswith("#")
    ]
    return {path for path in exclude_paths(str(root), patterns, dockerfile=dockerfile) if (root / path).is_file()}


def forbidden_in_context(files: Iterable[str]) -> list[str]:
    """The files of a context that are secrets or repository internals (.env, .git/...)."""
    return sorted(
        path for path in files if any(path == bad or path.startswith(bad + "/") for bad in FORBIDDEN_IN_CONTEXT)
    )


def sandbox_settings(command: Sequence[str]) -> argparse.Namespace:
    """The sandbox service's settings, parsed from its compose command by the sandbox's own parser, so the
    expected data follows whatever --seed / --visits-per-day the compose file gives it."""
    from dexcare.sandbox.__main__ import build_parser

    args = list(command)
    if args[:3] != ["python", "-m", "dexcare.sandbox"]:
        raise SmokeFailure(f"{SANDBOX_SERVICE} does not run `python -m dexcare.sandbox`: {args}")
    return build_parser().parse_args(args[3:])


@dataclass(frozen=True)
class Expected:
    """What one report type's load must leave behind in a fresh schema."""

    report_type: str
    table: str
    rows_in_file: int
    distinct_visits: int

    @property
    def duplicates_in_file(self) -> int:
        return self.rows_in_file - self.distinct_visits

    def audit_row(self) -> dict[str, Any]:
        """The load_audit columns this load must have written."""
        return {
            "report_type": self.report_type,
            "target_table": self.table,
            "rows_in_file": self.rows_in_file,
            "duplicates_in_file": self.duplicates_in_file,
            "inserted": self.distinct_visits,
            "updated": 0,
            "unchanged": 0,
        }


def expected_loads(
    report_types: Iterable[str], start: dt.date, end: dt.date, *, seed: int, visits_per_day: int
) -> dict[str, Expected]:
    """Counts from the sandbox's deterministic generator, the very rows the sandbox serves for the window:
    every row of the report and its distinct visit ids (the first column). A fresh schema gets each distinct
    visit inserted once; repeats within the file are the duplicates the loader removes."""
    from dexcare.sandbox.generator import iter_report_rows

    expected = {}
    for report_type in report_types:
        rows = iter_report_rows(report_type, start, end, seed=seed, visits_per_day=visits_per_day)
        next(rows)  # the header
        count, ids = 0, set()
        for row in rows:
            count += 1
            ids.add(row[0])
        expected[report_type] = Expected(report_type, f"avr_{report_type}", count, len(ids))
    return expected


def check_loads(
    expected: Mapping[str, Expected], audit: Sequence[Mapping[str, Any]], table_counts: Mapping[str, int]
) -> list[str]:
    """Every difference between what the run had to load and what the warehouse holds (empty: all good)."""
    problems = []
    by_type: dict[str, list[Mapping[str, Any]]] = {}
    for row in audit:
        by_type.setdefault(row["report_type"], []).append(row)
    if sorted(by_type) != sorted(expected):
        problems.append(f"load_audit has report types {sorted(by_type)}, expected {sorted(expected)}")
    for report_type, want in expected.items():
        rows = by_type.get(report_type, [])
        if len(rows) != 1:
            problems.append(f"{report_type}: {len(rows)} load_audit rows, expected 1")
            continue
        (row,) = rows
        wanted = want.audit_row()
        seen = {key: row.get(key) for key in wanted}
        if seen != wanted:
            problems.append(f"{report_type}: load_audit {seen}, expected {wanted}")
        if table_counts.get(want.table) != want.distinct_visits:
            problems.append(
                f"{want.table}: {table_counts.get(want.table)} rows, expected {want.distinct_visits} distinct visits"
            )
    return problems


def find_secret(secret: str, sources: Mapping[str, str]) -> list[str]:
    """Names of the sources (container logs, task log files) whose text contains the secret."""
    if len(secret) < 8:
        raise ValueError("refusing to scan for a secret shorter than 8 characters: it would match by chance")
    return sorted(name for name, text in sources.items() if secret in text)


def split_task_logs(dump: str) -> dict[str, str]:
    """``==> path <==`` sections (what ``tail -n +1`` prints for several files) as {path: text}."""
    logs: dict[str, str] = {}
    current: str | None = None
    lines: list[str] = []
    for line in dump.splitlines():
        header = re.fullmatch(r"==> (.+) <==", line)
        if header:
            if current is not None:
                logs[current] = "\n".join(lines)
            current, lines = header[1], []
        elif current is not None:
            lines.append(line)
    if current is not None:
        logs[current] = "\n".join(lines)
    return logs


def parse_ps(output: str) -> list[dict[str, Any]]:
    """``compose ps --format json``: a JSON array (Compose < 2.21) or one object per line (2.21 and later)."""
    text = output.strip()
    if not text:
        return []
    if text.startswith("["):
        return json.loads(text)
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def service_readiness(config: Mapping[str, Any], ps: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[str]]:
    """(services not ready yet, services that failed) for ``compose ps`` rows.

    A service with a healthcheck is ready when healthy; a one-shot step (restart "no", which others wait
    for with service_completed_successfully) when it exited 0; anything else when running."""
    by_service = {row["Service"]: row for row in ps}
    one_shot = {
        dependency
        for service in config["services"].values()
        for dependency, spec in (service.get("depends_on") or {}).items()
        if spec.get("condition") == "service_completed_successfully"
    }
    waiting, failed = [], []
    for name, service in sorted(config["services"].items()):
        row = by_service.get(name)
        if row is None:
            waiting.append(name)
            continue
        state, health, code = row.get("State"), row.get("Health") or "", row.get("ExitCode")
        if name in one_shot:
            if state != "exited":
                waiting.append(name)
            elif code != 0:
                failed.append(f"{name} (exit {code})")
            continue
        if state in ("exited", "dead") or health == "unhealthy":
            failed.append(f"{name} ({state}, {health or 'no healthcheck'}, exit {code})")
        elif ("healthcheck" in service and health != "healthy") or state != "running":
            waiting.append(name)
    return waiting, failed


# --- running it ----------------------------------------------------------------------------------------------


@dataclass
class Timings:
    phases: list[tuple[str, float, str]] = field(default_factory=list)

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        print(f"\n== {name}", flush=True)
        started = time.monotonic()
        status = "failed"
        try:
            yield
            status = "ok"
        finally:
            self.phases.append((name, time.monotonic() - started, status))

    def report(self) -> str:
        width = max((len(name) for name, _, _ in self.phases), default=10)
        lines = [f"{name:<{width}}  {seconds:7.1f} s  {status}" for name, seconds, status in self.phases]
        total = sum(seconds for _, seconds, _ in self.phases)
        return "\n".join(["", "compose-smoke timings:", *lines, f"{'total':<{width}}  {total:7.1f} s"])


class Stack:
    """One compose project: every command goes through the given compose command with the same options."""

    def __init__(self, args: argparse.Namespace, workdir: Path, env: dict[str, str]) -> None:
        self.args = args
        self.workdir = workdir
        self.env = env
        self.env_file = workdir / "smoke.env"
        self.log = workdir / "compose.log"

    def compose(self, *args: str, project: str | None = None, files: Sequence[Path] = (COMPOSE_FILE,),
                capture: bool = True, check: bool = True, timeout: float | None = None) -> str:
        command = [*self.args.compose, "-p", project or self.args.project]
        for file in files:
            command += ["-f", str(file)]
        command += ["--env-file", str(self.env_file), *args]
        with self.log.open("a") as log:
            log.write(f"\n$ {shlex.join(command)}\n")
            log.flush()
            proc = subprocess.run(
                command, cwd=REPO, env=self.env, text=True, timeout=timeout,
                stdout=subprocess.PIPE if capture else log, stderr=log,
            )
        if check and proc.returncode != 0:
            raise SmokeFailure(f"`{shlex.join(command)}` exited {proc.returncode}; last lines:\n{self.tail()}")
        return proc.stdout or ""

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def psql(self, database: str, user: str, query: str) -> str:
        return self.compose("exec", "-T", POSTGRES_SERVICE, "psql", "-X", "-v", "ON_ERROR_STOP=1", "-At",
                            "-U", user, "-d", database, "-c", query)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(what: str, condition: Callable[[], Any], timeout: float, interval: float = 2.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise SmokeFailure(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


class Api:
    """The REST API as the UI uses it: a token from the simple auth manager's login, then /api/v2."""

    def __init__(self, base_url: str, username: str, password: str) -> None:
        import httpx

        self.client = httpx.Client(base_url=base_url, timeout=30)
        response = self.client.post("/auth/token", json={"username": username, "password": password})
        if response.status_code not in (200, 201):
            raise SmokeFailure(f"login as {username} failed: HTTP {response.status_code}")
        self.client.headers["Authorization"] = f"Bearer {response.json()['access_token']}"

    def __call__(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.client.request(method, f"/api/v2{path}", **kwargs)
        if response.status_code >= 400:
            raise SmokeFailure(f"{method} {path}: HTTP {response.status_code}: {response.text[:500]}")
        return response.json()


def probe_build_context(stack: Stack, base_image: str) -> None:
    """Ask the engine which files a build with this context really receives: build a throw-away image that
    copies the whole context, list it, and compare with what .dockerignore predicts. (Its Dockerfile lies
    outside the context, so the listing is the context alone.)"""
    probe_dir = stack.workdir / "context-probe"
    probe_dir.mkdir()
    tag = f"{stack.args.project}-context-probe:latest"
    (probe_dir / "Dockerfile").write_text(f"FROM {base_image}\nCOPY . /context\n")
    probe_file = probe_dir / "compose.yml"
    probe_file.write_text(json.dumps({
        "services": {
            "context": {
                "image": tag,
                "build": {"context": str(REPO), "dockerfile": str(probe_dir / "Dockerfile")},
                "network_mode": "none",
                "command": ["find", "/context", "-type", "f", "-printf", "%P\\n"],
            }
        }
    }))
    project = f"{stack.args.project}-context"
    try:
        stack.compose("build", project=project, files=[probe_file], capture=False)
        listing = stack.compose("run", "--rm", "--no-deps", "context", project=project, files=[probe_file])
    finally:
        stack.compose("down", "-v", project=project, files=[probe_file], check=False)
        # `docker image rm` also deletes the untagged layers below the tag (compose's --rmi keeps them).
        subprocess.run([*stack.args.docker, "image", "rm", "-f", tag], capture_output=True, check=False)
    sent = set(listing.split())
    leaked = forbidden_in_context(sent)
    if leaked:
        raise SmokeFailure(f"the build context holds {leaked}: fix .dockerignore")
    predicted = context_files(REPO, DOCKERIGNORE, dockerfile=str(probe_dir / "Dockerfile")) - REMOVED_BY_DAEMON
    if sent != predicted:
        raise SmokeFailure(
            f"the engine's build context differs from .dockerignore's prediction: only sent "
            f"{sorted(sent - predicted)}, only predicted {sorted(predicted - sent)}"
        )
    print(f"build context: {len(sent)} files, as .dockerignore predicts; no {', '.join(FORBIDDEN_IN_CONTEXT)}")


def dexcare_key(config: Mapping[str, Any]) -> tuple[str, str]:
    """(host, key) of dexcare_default as the stack resolves it (your DEXCARE_HOST/DEXCARE_KEY included)."""
    conn = json.loads(config["services"][SCHEDULER_SERVICE]["environment"]["AIRFLOW_CONN_DEXCARE_DEFAULT"])
    return conn["host"], conn["password"]


def run_smoke(args: argparse.Namespace, timings: Timings, workdir: Path) -> dict[str, Any]:
    from dexcare.report import ReportType

    report_types = [t.value for t in ReportType]
    env = {**os.environ, "AIRFLOW_API_PORT": str(free_port()), "DEXCARE_AIRFLOW_IMAGE": args.image}
    stack = Stack(args, workdir, env)
    facts: dict[str, Any] = {"stack": stack}

    with timings.phase("prepare: secrets, compose config"):
        subprocess.run(["sh", str(MAKE_ENV), str(stack.env_file)], check=True, capture_output=True, cwd=REPO)
        config = json.loads(stack.compose("config", "--format", "json"))
        facts["config"] = config
        secrets_env = {line.partition("=")[0]: line.partition("=")[2]
                       for line in stack.env_file.read_text().splitlines() if "=" in line and line[0] != "#"}
        host, key = dexcare_key(config)
        facts["keys"] = {key, secrets_env["DEXCARE_SANDBOX_TOKEN"]}
        if host != f"http://{SANDBOX_SERVICE}:8080":
            raise SmokeFailure(f"dexcare_default points at {host}, not the sandbox: unset DEXCARE_HOST for the smoke")
        sandbox = sandbox_settings(config["services"][SANDBOX_SERVICE]["command"])
        print(f"project {args.project}, API on 127.0.0.1:{env['AIRFLOW_API_PORT']}, sandbox seed {sandbox.seed}, "
              f"{sandbox.visits_per_day} visits a day, log {stack.log}")

    with timings.phase("build context, asked of the engine"):
        base = re.search(r"^FROM\s+(\S+)", DOCKERFILE.read_text(), re.MULTILINE)
        assert base is not None
        probe_build_context(stack, base[1])

    with timings.phase("build the image"):
        stack.compose("build", capture=False, timeout=args.timeout)
        built = [name for name, service in config["services"].items() if "build" in service]
        print(f"built {args.image} once, for {built}")

    with timings.phase("up --pull never"):
        stack.compose("up", "-d", "--pull", "never", capture=False, timeout=args.timeout)

    with timings.phase("until every service is healthy"):
        def ready() -> bool:
            waiting, failed = service_readiness(config, parse_ps(stack.compose("ps", "-a", "--format", "json")))
            if failed:
                raise SmokeFailure(f"services failed: {failed}\n{stack.compose('logs', '--tail', '30', check=False)}")
            return not waiting

        wait_for("every service healthy", ready, args.timeout)

    api = Api(f"http://127.0.0.1:{env['AIRFLOW_API_PORT']}", secrets_env.get("AIRFLOW_ADMIN_USERNAME") or "admin",
              secrets_env["AIRFLOW_ADMIN_PASSWORD"])
    end = dt.datetime.now(dt.UTC).date()
    start = end - dt.timedelta(days=WINDOW_DAYS - 1)
    conf = {
        "report_types": report_types,
        "start_date": start.isoformat(),
        "end_date": end.isoformat(),
        "poll_interval": 1,
        "schema": SCHEMA,
    }
    with timings.phase("trigger through the REST API, run to the end"):
        dag = wait_for("the DAG to be parsed", lambda: _dag_or_none(api), args.timeout)
        # Triggered at the logical date the scheduler would give its next scheduled run, so unpausing (which
        # starts the paused DAG) creates no scheduled run for this run to wait behind (max_active_runs=1).
        run = api("POST", f"/dags/{DAG_ID}/dagRuns",
                  json={"logical_date": dag["next_dagrun_logical_date"], "conf": conf, "note": "compose-smoke"})
        api("PATCH", f"/dags/{DAG_ID}", json={"is_paused": False})
        run_id = run["dag_run_id"]
        run = wait_for(f"run {run_id}", lambda: _finished(api, run_id), args.timeout, interval=1)
        tis = api("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances", params={"limit": 100})["task_instances"]
        for ti in sorted(tis, key=lambda t: (t["start_date"] or "", t["map_index"])):
            print(f"  {ti['task_id']}[{ti['map_index']}] {ti['state']} try {ti['try_number']} "
                  f"{ti['duration'] or 0:.1f} s")
        runs = api("GET", f"/dags/{DAG_ID}/dagRuns")["dag_runs"]
        if run["state"] != "success":
            raise SmokeFailure(f"run {run_id} ended {run['state']}:\n{_failed_task_logs(stack, run_id, tis)}")
        retried = [f"{t['task_id']}[{t['map_index']}] try {t['try_number']}" for t in tis if t["try_number"] != 1]
        if retried:
            raise SmokeFailure(f"tasks needed retries: {retried}")
        if len(runs) != 1:
            raise SmokeFailure(f"expected only the triggered run, found {[r['dag_run_id'] for r in runs]}")
        plan = next(t for t in tis if t["task_id"] == "plan")
        print(f"run {run_id}: success in {_seconds(run['start_date'], run['end_date']):.1f} s; "
              f"plan {plan['duration']:.1f} s")

    with timings.phase("check the warehouse"):
        postgres = config["services"][POSTGRES_SERVICE]["environment"]
        database, user = postgres["WAREHOUSE_DB"], postgres["WAREHOUSE_USER"]
        # Identifiers below are this script's constants or checked against avr_[a-z_]+ first.
        audit_json = stack.psql(database, user, f"SELECT coalesce(json_agg(a), '[]') FROM {SCHEMA}.load_audit a")  # noqa: S608
        audit = json.loads(audit_json)
        counts = {}
        for table in sorted({row["target_table"] for row in audit}):
            if not re.fullmatch(r"avr_[a-z_]+", table):
                raise SmokeFailure(f"unexpected target table {table!r} in load_audit")
            counts[table] = int(stack.psql(database, user, f"SELECT count(*) FROM {SCHEMA}.{table}"))  # noqa: S608
        expected = expected_loads(report_types, start, end, seed=sandbox.seed, visits_per_day=sandbox.visits_per_day)
        problems = check_loads(expected, audit, counts)
        if problems:
            raise SmokeFailure("the warehouse does not hold what the run had to load:\n  " + "\n  ".join(problems))
        for want in expected.values():
            print(f"  {want.table}: {want.distinct_visits} visits ({want.rows_in_file} rows in the report, "
                  f"{want.duplicates_in_file} repeats removed)")
        facts["report_ids"] = [row["report_id"] for row in audit]

    with timings.phase("the DexCare page in the api-server"):
        check_page(api, sorted(counts))

    with timings.phase("scan container and task logs for the DexCare key"):
        scan_logs(stack, facts["keys"], facts["report_ids"])
    return facts


def check_page(api: Api, tables: Sequence[str]) -> None:
    """The image carries the DexCare page (the ``ui/`` plugin, registered by the package's entry point): the
    api-server serves it to the admin, with every table the run loaded, and refuses anyone not logged in."""
    import httpx

    url = str(api.client.base_url.join("/dexcare/"))
    anonymous = httpx.get(url, timeout=30)
    if anonymous.status_code != 401:
        raise SmokeFailure(f"GET /dexcare/ without a login: HTTP {anonymous.status_code}, expected 401")
    page = api.client.get("/dexcare/")
    if page.status_code != 200:
        raise SmokeFailure(f"GET /dexcare/ as the admin: HTTP {page.status_code}: {page.text[:300]}")
    missing = [table for table in tables if table not in page.text]
    if missing:
        raise SmokeFailure(f"the DexCare page does not show {missing}")
    print(f"the DexCare page is served at /dexcare/ and shows {', '.join(tables)}; anonymous gets 401")


def _dag_or_none(api: Api) -> dict[str, Any] | None:
    with contextlib.suppress(SmokeFailure):
        return api("GET", f"/dags/{DAG_ID}")
    return None


def _finished(api: Api, run_id: str) -> dict[str, Any] | None:
    run = api("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}")
    return run if run["state"] in ("success", "failed") else None


def _seconds(start: str | None, end: str | None) -> float:
    if not start or not end:
        return float("nan")
    return (dt.datetime.fromisoformat(end) - dt.datetime.fromisoformat(start)).total_seconds()


def _task_log_dump(stack: Stack, path: str = "/opt/airflow/logs") -> dict[str, str]:
    dump = stack.compose("exec", "-T", SCHEDULER_SERVICE, "sh", "-c",
                         f"find {shlex.quote(path)} -type f -exec tail -n +1 {{}} +", check=False)
    return split_task_logs(dump)


def _failed_task_logs(stack: Stack, run_id: str, tis: Sequence[Mapping[str, Any]]) -> str:
    failed = {t["task_id"] for t in tis if t["state"] not in ("success", "skipped")}
    logs = _task_log_dump(stack)
    chosen = [f"--- {p}\n{text[-3000:]}" for p, text in logs.items() if run_id in p and any(f in p for f in failed)]
    return f"task states: {[(t['task_id'], t['map_index'], t['state']) for t in tis]}\n" + "\n".join(chosen[:4])


def scan_logs(stack: Stack, keys: set[str], report_ids: Sequence[str]) -> None:
    containers = {"container logs": stack.compose("logs", "--no-color", "--timestamps")}
    tasks = _task_log_dump(stack)
    # Not vacuous: the task logs were found, and they name the reports the run loaded.
    if not tasks or not all(any(rid in text for text in tasks.values()) for rid in report_ids):
        raise SmokeFailure(f"task logs not found or incomplete ({len(tasks)} files): the key scan would prove nothing")
    if f"{SANDBOX_SERVICE}-" not in containers["container logs"]:
        raise SmokeFailure("no log lines of the sandbox container: the key scan would prove nothing")
    for key in sorted(keys):
        leaks = find_secret(key, {**containers, **tasks})
        if leaks:
            raise SmokeFailure(f"the DexCare key appears in {leaks}")
    print(f"the DexCare key is in none of the containers' logs nor the {len(tasks)} task log files")


def teardown(stack: Stack, timings: Timings) -> list[str]:
    """Stop (each service within its own stop_grace_period), note who was killed, then ``down -v``."""
    problems = []
    with timings.phase("stop (each service's grace period)"):
        stop_started = dt.datetime.now(dt.UTC)
        stack.compose("stop", check=False, capture=False, timeout=300)
        rows = parse_ps(stack.compose("ps", "-a", "--format", "json", check=False))
        for row in rows:
            if row.get("ExitCode") == EXIT_KILLED:
                problems.append(f"{row['Service']} was killed (exit {EXIT_KILLED}) after its stop grace period")
        print("stopped after: " + ", ".join(_stop_times(stack, rows, stop_started)))
    with timings.phase("down -v"):
        stack.compose("down", "-v", "--remove-orphans", check=False, capture=False, timeout=300)
        left = stack.compose("ps", "-a", "-q", check=False).split()
        if left:
            problems.append(f"containers left after down: {left}")
    return problems


def _stop_times(stack: Stack, rows: Sequence[Mapping[str, Any]], since: dt.datetime) -> list[str]:
    """Each container's exit time after ``stop`` began (what its stop_grace_period must cover; compose stops
    dependents first, so a service's figure includes waiting for those that depend on it)."""
    times = []
    for row in rows:
        proc = subprocess.run([*stack.args.docker, "inspect", "-f", "{{.State.FinishedAt}}", row["ID"]],
                              capture_output=True, text=True, check=False)
        with contextlib.suppress(ValueError):
            finished = dt.datetime.fromisoformat(proc.stdout.strip()[:26].rstrip("Z") + "+00:00")
            if finished >= since:
                times.append(f"{row['Service']} {(finished - since).total_seconds():.1f} s (exit {row['ExitCode']})")
    return times


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which(args.compose[0]) is None and not Path(args.compose[0]).is_file():
        print(f"compose-smoke: {args.compose[0]!r} not found; set COMPOSE", file=sys.stderr)
        return 2
    timings = Timings()
    workdir = Path(tempfile.mkdtemp(prefix="dexcare-compose-smoke-"))
    workdir.chmod(0o700)
    # SIGTERM as Ctrl-C, so both reach the teardown below.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    stack: Stack | None = None
    facts: dict[str, Any] = {}
    outcome = 1
    try:
        facts = run_smoke(args, timings, workdir)
        stack = facts["stack"]
        outcome = 0
    except SmokeFailure as exc:
        print(f"\ncompose-smoke FAILED: {exc}", file=sys.stderr)
    except KeyboardInterrupt:
        print("\ncompose-smoke interrupted: tearing down", file=sys.stderr)
        outcome = 130
    finally:
        # Ctrl-C during the teardown would leave the stack up: ignore it until the stack is gone.
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            stack = stack or Stack(args, workdir, {**os.environ, "DEXCARE_AIRFLOW_IMAGE": args.image})
            if stack.env_file.exists():
                problems = teardown(stack, timings)
                for problem in problems:
                    print(f"compose-smoke FAILED at teardown: {problem}", file=sys.stderr)
                if problems and outcome == 0:
                    outcome = 1
        finally:
            signal.signal(signal.SIGINT, previous)
            print(timings.report())
            if outcome == 0:
                shutil.rmtree(workdir, ignore_errors=True)
            else:
                print(f"compose output kept in {workdir / 'compose.log'} (the secrets file was removed)")
                (workdir / "smoke.env").unlink(missing_ok=True)
    print("compose-smoke: " + ("passed" if outcome == 0 else "FAILED"))
    return outcome


if __name__ == "__main__":
    sys.exit(main())
