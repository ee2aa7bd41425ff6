"""Running the real ``airflow`` command in a private AIRFLOW_HOME, as the DAG-level tests all need to."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from dexcare.compat import AIRFLOW_VERSION

AIRFLOW = str(Path(sys.executable).with_name("airflow"))


def airflow_env(home: Path, dags_folder: Path | None = None, **extra: str) -> dict[str, str]:
    """This process's environment minus its Airflow settings (the test session's unit-test mode and
    home), plus a private home; the venv's bin goes first on PATH because Airflow starts ``airflow ...``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        }
    )
    if dags_folder is not None:
        env["AIRFLOW__CORE__DAGS_FOLDER"] = str(dags_folder)
    env.update(extra)
    return env


def migrate(env: dict[str, str]) -> None:
    subprocess.run([AIRFLOW, "db", "migrate"], env=env, check=True, capture_output=True, timeout=240)


def register_dags(env: dict[str, str], airflow: str = AIRFLOW) -> None:
    """What a deployment's dag-processor has done before any run: write the DAGs, and their assets, to the DB.

    Airflow 3.0's ``airflow dags test`` does not register a DAG's assets (3.1 and later do), so a task with
    asset outlets fails there ("inactive assets in its inlets or outlets") unless this ran first.
    """
    if AIRFLOW_VERSION.startswith("3.0."):
        subprocess.run([airflow, "dags", "reserialize"], env=env, check=True, capture_output=True, timeout=240)


def lines_showing(output: str, key: str) -> list[str]:
    """The lines of an ``airflow`` command's output that show ``key``, except Airflow 3.0's own.

    Airflow 3.0's ``airflow dags test`` prints every request to mask a secret at DEBUG, the secret included (its
    in-process supervisor lacks the real one's redaction; fixed in 3.1). Airflow sends one for every connection
    password a task reads, whatever the provider does, so only those lines are Airflow's.
    """
    lines = [line for line in output.splitlines() if key in line]
    if AIRFLOW_VERSION.startswith("3.0."):
        lines = [line for line in lines if "msg=MaskSecret(value=" not in line]
    return lines


def postgres_connection(pg_uri: str) -> str:
    """A libpq URI (also the pgserver unix-socket form) as users give a connection: AIRFLOW_CONN_<ID> JSON."""
    parsed = urlparse(pg_uri)
    host = parse_qs(parsed.query).get("host", [parsed.hostname])[0]
    return json.dumps(
        {
            "conn_type": "postgres",
            "host": host,
            "port": parsed.port,
            "login": parsed.username,
            "password": parsed.password or None,
            "schema": parsed.path.lstrip("/"),
        }
    )
