"""The operator under Airflow's own task runner: XComArg in, summary out through XCom, env-var connection."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.load.test_operator import _airflow_conn

DAG_FILE = Path(__file__).with_name("load_dag.py")
AIRFLOW = str(Path(sys.executable).with_name("airflow"))


def test_load_operator_with_airflow_dags_test(pg_uri, tmp_path, admin, schema) -> None:
    home, dags, data = tmp_path / "airflow-home", tmp_path / "dags", tmp_path / "data"
    dags.mkdir()
    data.mkdir()
    shutil.copy(DAG_FILE, dags / DAG_FILE.name)
    result = tmp_path / "result.json"
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW_CONN_DEXCARE_WAREHOUSE": _airflow_conn(pg_uri),
        "DEXCARE_LOAD_DIR": str(data),
        "DEXCARE_LOAD_SCHEMA": schema,
        "DEXCARE_LOAD_RESULT": str(result),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    subprocess.run([AIRFLOW, "db", "migrate"], env=env, check=True, capture_output=True, timeout=120)
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
        ends = admin.execute(f'SELECT DISTINCT _dexcare_window_end::text FROM "{schema}".{table}').fetchall()
        assert ends == [("2026-11-23",)]  # no window in the result: the run's date
    assert f"Loaded {schema}.avr_virtual: 1 report(s)" in output
