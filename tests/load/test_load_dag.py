"""The operator under Airflow's own task runner: XComArg in, summary out through XCom, env-var connection."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from tests.support.airflow_cli import AIRFLOW, airflow_env, migrate

DAG_FILE = Path(__file__).with_name("load_dag.py")


def test_load_operator_with_airflow_dags_test(warehouse, tmp_path, schema) -> None:
    home, dags, data = tmp_path / "airflow-home", tmp_path / "dags", tmp_path / "data"
    dags.mkdir()
    data.mkdir()
    shutil.copy(DAG_FILE, dags / DAG_FILE.name)
    result = tmp_path / "result.json"
    env = airflow_env(
        home,
        dags,
        AIRFLOW_CONN_DEXCARE_WAREHOUSE=warehouse.airflow_connection(),
        DEXCARE_LOAD_DIR=str(data),
        DEXCARE_LOAD_SCHEMA=schema,
        DEXCARE_LOAD_RESULT=str(result),
    )
    migrate(env)
    run = subprocess.run([AIRFLOW, "dags", "test", "dexcare_load_e2e", "2026-11-23"], env=env,
                         capture_output=True, text=True, timeout=180)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-6000:]
    summary = json.loads(result.read_text())
    assert summary["dag_id"] == "dexcare_load_e2e" and summary["run_id"]
    assert set(summary["tables"]) == {"avr_virtual", "avr_retail"}
    for table in ("avr_virtual", "avr_retail"):
        totals = summary["tables"][table]
        assert totals["inserted"] == 200 and totals["rows_in_file"] == 200 + totals["duplicates_in_file"]
        ends = {r["_dexcare_window_end"].isoformat() for r in warehouse.rows(schema, table, lineage=True)}
        assert ends == {"2026-11-23"}  # no window in the result: the run's date
    assert f"Loaded {schema}.avr_virtual: 1 report(s)" in output
