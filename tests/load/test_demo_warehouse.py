"""``make demo`` with ``AIRFLOW_CONN_DEXCARE_WAREHOUSE`` pointing at a SQL Server: the same two days, read back
through the loader's own connection helper. (On the embedded PostgreSQL it is tests/test_demo.py.)"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow  # the demo: two DAG runs through Airflow
ROW = re.compile(r"^(avr_\w+)\s+\S+\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)$")


@pytest.mark.parametrize("warehouse", ["mssql"], indirect=True)
def test_demo_loads_two_days_into_sql_server(warehouse, schema) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env["AIRFLOW_CONN_DEXCARE_WAREHOUSE"] = warehouse.airflow_connection()
    command = [sys.executable, str(REPO / "scripts" / "demo.py"), "--day", "2026-11-20", "--schema", schema]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env, cwd=REPO)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert "Warehouse: connection dexcare_warehouse from the environment" in done.stdout
    days = done.stdout.split("== dexcare_all_visits_report for ")[1:]
    parsed = [{m[1]: [int(x) for x in m.groups()[1:]] for m in map(ROW.match, d.splitlines()) if m} for d in days]
    assert len(parsed) == 2 and set(parsed[1]) == {"avr_virtual", "avr_retail"}
    for table, (rows, dups, inserted, updated, unchanged, total) in parsed[1].items():
        assert inserted + updated + unchanged == rows - dups and updated > 0 and unchanged > 0, table
        assert len(warehouse.rows(schema, table)) == total
