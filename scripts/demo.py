"""The whole job end to end: two consecutive days of ``dexcare_all_visits_report`` through real Airflow.

On embedded defaults it starts its own DexCare sandbox and an embedded PostgreSQL (the ``pgserver`` wheel),
so it needs no system service and no credentials. Give ``AIRFLOW_CONN_DEXCARE_DEFAULT`` and/or
``AIRFLOW_CONN_DEXCARE_WAREHOUSE`` in the environment and it uses real DexCare and/or a real warehouse
instead. It stops everything it started and removes its private working directory, also on failure.
"""

from __future__ import annotations

import argparse
import atexit
import datetime as dt
import json
import logging
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import warnings
from contextlib import ExitStack
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

REPO = Path(__file__).resolve().parent.parent
DAG_ID = "dexcare_all_visits_report"
BIN = Path(sys.executable).parent


def start_sandbox(stack: ExitStack, env: dict[str, str]) -> str:
    from dexcare.sandbox.process import SandboxProcess

    token = secrets.token_urlsafe(24)
    args = ["--visits-per-day", "40", "--queue-seconds", "1", "--run-seconds", "2"]
    sandbox = stack.enter_context(SandboxProcess(token=token, args=args, env=env))
    print(f"DexCare sandbox: {sandbox.url} (no credentials needed)")
    return json.dumps({"conn_type": "dexcare", "host": sandbox.url, "password": token})


def start_postgres(stack: ExitStack, workdir: Path) -> str:
    import pgserver

    logging.getLogger("pgserver").setLevel(logging.WARNING)  # its start/stop chatter is not the demo
    server = pgserver.get_server(workdir / "pgdata", cleanup_mode="stop")
    stack.callback(server.cleanup)
    atexit.unregister(server._cleanup)  # stopped above; pgserver's own exit hook would only repeat it
    uri = urlparse(server.get_uri())
    host = parse_qs(uri.query).get("host", [uri.hostname])[0]
    print("Warehouse: embedded PostgreSQL (pgserver), private to this run")
    return json.dumps(
        {"conn_type": "postgres", "host": host, "port": uri.port, "login": uri.username, "schema": uri.path.lstrip("/")}
    )


def airflow(env: dict[str, str], *args: str, log: Path) -> None:
    with log.open("a") as out:
        done = subprocess.run([str(BIN / "airflow"), *args], env=env, stdout=out, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        tail = log.read_text(errors="replace").splitlines()[-40:]
        raise SystemExit(f"`airflow {' '.join(args)}` failed; last lines of its log:\n" + "\n".join(tail))


def warehouse():
    """The warehouse through ``dexcare_warehouse``, resolved exactly as the DAG's load task does: its dialect by
    the connection's type, a psycopg connection for a postgres connection, a pymssql one for an mssql one."""
    from dexcare.load.connection import warehouse

    return warehouse("dexcare_warehouse")


def _rows(conn, query: str, params: tuple = ()) -> list[dict[str, Any]]:
    """Plain DB-API, so the same queries read PostgreSQL and SQL Server (both drivers take ``%s``)."""
    cur = conn.cursor()
    cur.execute(query, params)
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def summarise(schema: str, since_id: int) -> tuple[int, list[dict[str, Any]], dict[str, int]]:
    target = warehouse()
    quote = target.dialect_class.quote
    with target.connect() as conn:
        # Identifiers quoted by the dialect's own function; the one value is a parameter.
        audit_table = quote(schema, "load_audit")
        audit = _rows(conn, f"SELECT * FROM {audit_table} WHERE id > %s ORDER BY id", (since_id,))  # noqa: S608
        totals = {}
        for table in sorted({row["target_table"] for row in audit}):
            totals[table] = _rows(conn, f"SELECT count(*) AS n FROM {quote(schema, table)}")[0]["n"]  # noqa: S608
    last = max([since_id, *(row["id"] for row in audit)])
    return last, audit, totals


def print_day(day: dt.date, audit: list[dict[str, Any]], totals: dict[str, int]) -> None:
    print(f"\n== {DAG_ID} for {day} ==")
    header = (
        f"{'table':<22}{'window':<25}{'rows in report':>15}{'dups removed':>13}{'inserted':>10}"
        f"{'updated':>9}{'unchanged':>11}{'rows in table':>15}"
    )
    print(header)
    for row in audit:
        window = f"{row['window_start']}..{row['window_end']}"
        print(
            f"{row['target_table']:<22}{window:<25}{row['rows_in_file']:>15}{row['duplicates_in_file']:>13}"
            f"{row['inserted']:>10}{row['updated']:>9}{row['unchanged']:>11}{totals[row['target_table']]:>15}"
        )


def main() -> int:
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")  # pgserver; harmless here
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--day",
        type=dt.date.fromisoformat,
        default=dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1),
        help="first day to run (default: yesterday, UTC); the second run is the day after",
    )
    parser.add_argument("--schema", default="dexcare")
    parser.add_argument("--keep", action="store_true", help="keep the working directory (logs, AIRFLOW_HOME)")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="dexcare-demo-"))
    workdir.chmod(0o700)
    log = workdir / "airflow.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW__")}
    env.update(
        {
            "AIRFLOW_HOME": str(workdir / "airflow"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "PATH": f"{BIN}:{env.get('PATH', '')}",
        }
    )
    try:
        with ExitStack() as stack:
            conf: dict[str, Any] = {"schema": args.schema}
            if "AIRFLOW_CONN_DEXCARE_DEFAULT" not in env:
                env["AIRFLOW_CONN_DEXCARE_DEFAULT"] = start_sandbox(stack, env)
                conf["poll_interval"] = 1  # the sandbox builds a report in 3 s; real DexCare keeps the default
            else:
                print("DexCare: connection dexcare_default from the environment")
            if "AIRFLOW_CONN_DEXCARE_WAREHOUSE" not in env:
                env["AIRFLOW_CONN_DEXCARE_WAREHOUSE"] = start_postgres(stack, workdir)
            else:
                print("Warehouse: connection dexcare_warehouse from the environment")
            print(f"Airflow: private AIRFLOW_HOME, log in {log if args.keep else 'a temporary file'}")
            # This process reads the warehouse too: same private home, same connection as the DAG's tasks.
            os.environ["AIRFLOW_HOME"] = env["AIRFLOW_HOME"]
            os.environ["AIRFLOW_CONN_DEXCARE_WAREHOUSE"] = env["AIRFLOW_CONN_DEXCARE_WAREHOUSE"]
            airflow(env, "db", "migrate", log=log)
            since = summarise_baseline(args.schema)
            for day in (args.day, args.day + dt.timedelta(days=1)):
                airflow(env, "dags", "test", DAG_ID, day.isoformat(), "--conf", json.dumps(conf), log=log)
                since, audit, totals = summarise(args.schema, since)
                if not audit:
                    raise SystemExit(f"The run for {day} loaded nothing: see {log}")
                print_day(day, audit, totals)
        print(
            "\nThe second day's report overlaps the first: visits it shares were updated or left unchanged, "
            "not duplicated."
        )
        return 0
    finally:
        if args.keep:
            print(f"Kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def summarise_baseline(schema: str) -> int:
    """The newest audit id before this demo, so a real warehouse's history is not reported as ours."""
    target = warehouse()
    quote = target.dialect_class.quote
    with target.connect() as conn:
        exists = _rows(conn, "SELECT count(*) AS n FROM INFORMATION_SCHEMA.TABLES WHERE TABLE_SCHEMA = %s "
                             "AND TABLE_NAME = 'load_audit'", (schema,))[0]["n"]
        if not exists:
            return 0
        audit_table = quote(schema, "load_audit")
        return _rows(conn, f"SELECT COALESCE(MAX(id), 0) AS n FROM {audit_table}")[0]["n"]  # noqa: S608


if __name__ == "__main__":
    sys.exit(main())
