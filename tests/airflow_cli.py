"""Running the real ``airflow`` command in a private AIRFLOW_HOME, as the DAG-level tests all need to."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import parse_qs, urlparse

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
