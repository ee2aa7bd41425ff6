"""Asset events only for the tables a run loaded, shown with a real downstream DAG scheduled on one of them.

The daily run is a real ``airflow dags test`` (the task runner sends its outlets and their events to the
execution API, which records them); the downstream DAG's fate is decided by a real scheduler loop
(``airflow scheduler --num-runs 1``), which starts an asset-triggered run only when its asset got an event.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import subprocess
from pathlib import Path

import pytest

from tests.dags.conftest import REPO, Runner
from tests.support.airflow_cli import AIRFLOW, airflow_env, migrate, postgres_connection
from tests.support.helpers import dexcare_connection

DOWNSTREAM = "dexcare_provider_booking_consumer"
DOWNSTREAM_DAG = f'''
import datetime as dt
from airflow.sdk import DAG, Asset, task

with DAG(
    dag_id="{DOWNSTREAM}",
    schedule=[Asset(name="dexcare.avr_provider_booking", uri="dexcare://warehouse/avr_provider_booking")],
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
):
    # A pool that does not exist: the scheduler starts the run but never queues its task (no api-server here)
    @task(pool="no_such_pool")
    def read_provider_booking() -> None:
        pass

    read_provider_booking()
'''


class AssetRunner(Runner):
    """The tests' Runner, on a DAG folder with the daily DAG and the downstream DAG."""

    def __init__(self, home: Path, dags: Path, sandbox, pg_uri: str, schema: str, tmp_path: Path) -> None:
        self.env = airflow_env(
            home, dags, DEXCARE_DAG_RETRIES="0",
            AIRFLOW_CONN_DEXCARE_DEFAULT=dexcare_connection(sandbox.url),
            AIRFLOW_CONN_DEXCARE_WAREHOUSE=postgres_connection(pg_uri),
        )
        self.schema, self.storage = schema, f"{tmp_path}/csv/"

    def cli(self, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([AIRFLOW, *args], env=self.env, capture_output=True, text=True, timeout=timeout)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        return done

    def downstream_runs(self) -> list[dict]:
        """The downstream DAG's runs after one scheduler loop: the loop that starts asset-triggered runs."""
        self.cli("scheduler", "--num-runs", "1")
        return [{"run_type": run_type} for (run_type,) in self.query(
            "SELECT run_type FROM dag_run WHERE dag_id = ?", DOWNSTREAM)]

    def query(self, statement: str, *args: str) -> list[tuple]:
        """The metadata DB, SQLite here, read directly: no CLI lists asset events on every Airflow 3."""
        with contextlib.closing(sqlite3.connect(Path(self.env["AIRFLOW_HOME"]) / "airflow.db")) as db:
            return db.execute(statement, args).fetchall()

    def events(self) -> dict[str, list[dict]]:
        """The extras of the asset events recorded so far, per asset name."""
        rows = self.query("SELECT asset.name, asset_event.extra FROM asset_event JOIN asset "
                          "ON asset.id = asset_event.asset_id ORDER BY asset_event.id")
        found: dict[str, list[dict]] = {}
        for name, extra in rows:
            found.setdefault(name, []).append(json.loads(extra) if isinstance(extra, str) else extra)
        return found


@pytest.fixture
def asset_runner(tmp_path, sandbox, pg_uri, warehouse):
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "dexcare_all_visits_report.py").symlink_to(REPO / "dags" / "dexcare_all_visits_report.py")
    (dags / f"{DOWNSTREAM}.py").write_text(DOWNSTREAM_DAG)
    runner = AssetRunner(tmp_path / "home", dags, sandbox, pg_uri, warehouse, tmp_path)
    migrate(runner.env)
    runner.cli("dags", "reserialize")  # what the dag-processor does: both DAGs and their assets in the DB
    runner.cli("dags", "unpause", DOWNSTREAM)
    return runner


@pytest.mark.slow  # two `airflow dags test` runs and two scheduler loops
def test_a_dag_on_one_table_runs_only_after_that_table_was_loaded(asset_runner):
    virtual_only = asset_runner.run("2026-11-20", report_types=["virtual"])
    assert virtual_only.returncode == 0, virtual_only.stdout[-4000:] + virtual_only.stderr[-4000:]
    assert asset_runner.downstream_runs() == [], "provider_booking was not loaded, yet its consumer ran"
    events = asset_runner.events()
    assert list(events) == ["dexcare.avr_virtual"]  # not retail either: only what this run loaded
    (virtual,) = events["dexcare.avr_virtual"]
    assert virtual["loaded"] is True
    assert virtual["inserted"] == virtual["rows_in_file"] - virtual["duplicates_in_file"] > 0

    booking = asset_runner.run("2026-11-21", report_types=["provider_booking"])
    assert booking.returncode == 0, booking.stdout[-4000:] + booking.stderr[-4000:]
    (run,) = asset_runner.downstream_runs()
    assert "asset" in run["run_type"]
    events = asset_runner.events()
    assert sorted(events) == ["dexcare.avr_provider_booking", "dexcare.avr_virtual"]
    assert len(events["dexcare.avr_virtual"]) == 1 and events["dexcare.avr_provider_booking"][0]["inserted"] > 0
