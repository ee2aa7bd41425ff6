"""start -> wait (deferrable) -> download -> record, run by ``airflow dags test`` against the sandbox.

The start task loses its worker right after DexCare accepted the request on its first try, so the DAG also
proves that the retry reuses that report through Airflow's real task state store.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from typing import Any

from airflow.sdk import DAG, task
from dexcare.operators.download_report import DexCareDownloadReportOperator
from dexcare.operators.start_report import DexCareStartReportOperator
from dexcare.sensors.report import DexCareReportSensor


class WorkerDiesAfterStart(DexCareStartReportOperator):
    """Fails its first try after the report was started, as a worker killed at that moment would."""

    def execute(self, context: Any) -> str:
        report_id = super().execute(context)
        if context["ti"].try_number == 1:
            raise RuntimeError(f"simulated worker loss after starting report {report_id}")
        return report_id


with DAG(
    dag_id="dexcare_operators_e2e",
    schedule=None,
    start_date=dt.datetime(2026, 11, 1, tzinfo=dt.UTC),
    catchup=False,
    tags=["dexcare", "test"],
    params={"poll_seconds": 0.3, "grace_minutes": 0.05},
):
    start = WorkerDiesAfterStart(
        task_id="start_report",
        report_type="virtual",
        report_start_date="2026-11-01",
        report_end_date="2026-11-03",
        retries=1,
        retry_delay=dt.timedelta(seconds=0),
    )
    wait = DexCareReportSensor(
        task_id="wait_for_report",
        report_id=start.output,
        deferrable=True,
        poll_interval="{{ params.poll_seconds }}",
        failed_grace_period="{{ params.grace_minutes * 60 }}",
        max_resubmits="{{ 1 }}",
        timeout="{{ 120 }}",
    )
    download = DexCareDownloadReportOperator(
        task_id="download_report",
        report_id=wait.output,
        destination=os.environ.get("DEXCARE_E2E_DESTINATION"),
    )

    @task
    def record(result: dict[str, Any], **context: Any) -> None:
        ti = context["ti"]
        summary = {
            "download": result,
            "start_return": ti.xcom_pull(task_ids="start_report"),
            "start_request": ti.xcom_pull(task_ids="start_report", key="request"),
            "wait_return": ti.xcom_pull(task_ids="wait_for_report"),
            "wait_report_ids": ti.xcom_pull(task_ids="wait_for_report", key="report_ids"),
        }
        with open(os.environ["DEXCARE_E2E_RESULT"], "w") as out:
            json.dump(summary, out)

    record(download.output)
