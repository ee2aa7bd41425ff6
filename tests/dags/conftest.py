"""The daily DAG run for real: each run is a separate ``airflow dags test`` process, as an on-call engineer
would run it, against the sandbox over loopback and a real PostgreSQL."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.support.airflow_cli import AIRFLOW, airflow_env, migrate, postgres_connection, register_dags
from tests.support.helpers import SANDBOX_TOKEN, dexcare_connection
from tests.support.warehouse import scratch_schema

REPO = Path(__file__).resolve().parents[2]
DAG_ID = "dexcare_all_visits_report"
SEED, VISITS_PER_DAY = 0, 20


@pytest.fixture(scope="module")
def airflow_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("airflow-home")
    migrate(dag_env(home))
    register_dags(dag_env(home))
    return home


def dag_env(home: Path, **extra: str) -> dict[str, str]:
    return airflow_env(home, REPO / "dags", DEXCARE_DAG_RETRIES="0", **extra)


@pytest.fixture
def sandbox():
    from dexcare.sandbox import SandboxServer

    with SandboxServer(
        token=SANDBOX_TOKEN, seed=SEED, visits_per_day=VISITS_PER_DAY, queue_seconds=0.3, run_seconds=0.5
    ) as server:
        yield server


@pytest.fixture
def warehouse(pg_uri):
    with scratch_schema(pg_uri, "dexcare_dag") as schema:
        yield schema


class Runner:
    def __init__(self, home: Path, sandbox, pg_uri: str, schema: str, tmp_path: Path) -> None:
        self.env = dag_env(
            home,
            AIRFLOW_CONN_DEXCARE_DEFAULT=dexcare_connection(sandbox.url),
            AIRFLOW_CONN_DEXCARE_WAREHOUSE=postgres_connection(pg_uri),
        )
        self.schema, self.storage = schema, f"{tmp_path}/csv/"

    def run(self, day: str, *, env: dict[str, str] | None = None, **params) -> subprocess.CompletedProcess:
        conf = {
            "schema": self.schema,
            "poll_interval": 1,
            "failed_grace_minutes": 0.01,
            "storage": self.storage,
            **params,
        }
        return subprocess.run(
            [AIRFLOW, "dags", "test", DAG_ID, day, "--conf", json.dumps(conf)],
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=240,
        )


@pytest.fixture
def runner(airflow_home, sandbox, pg_uri, warehouse, tmp_path):
    return Runner(airflow_home, sandbox, pg_uri, warehouse, tmp_path)
