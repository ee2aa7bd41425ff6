"""make reports -> load -> record, run by ``airflow dags test`` against the test PostgreSQL.

Copied into a temporary DAGs folder by test_load_dag.py; settings come from the environment.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import uuid
from pathlib import Path

from airflow.sdk import DAG, task
from dexcare.operators.load_reports import DexCareLoadReportsOperator

with DAG("dexcare_load_e2e", schedule=None, start_date=dt.datetime(2026, 11, 1), catchup=False):

    @task
    def make_reports() -> list[dict]:
        from dexcare.sandbox.generator import write_report_csv

        out = Path(os.environ["DEXCARE_LOAD_DIR"])
        results = []
        for report_type in ("virtual", "retail"):
            path = out / f"{report_type}.csv"
            rows = write_report_csv(path, report_type, dt.date(2026, 11, 13), dt.date(2026, 11, 22),
                                    visits_per_day=20)
            results.append({"uri": path.as_uri(), "bytes": path.stat().st_size, "sha256": None, "rows": rows,
                            "report_id": str(uuid.uuid4()), "report_type": report_type,
                            "start_date": None, "end_date": None})
        return results

    load = DexCareLoadReportsOperator(task_id="load", reports=make_reports(),
                                      schema=os.environ.get("DEXCARE_LOAD_SCHEMA", "dexcare"))

    @task
    def record(summary: dict) -> None:
        Path(os.environ["DEXCARE_LOAD_RESULT"]).write_text(json.dumps(summary))

    record(load.output)
