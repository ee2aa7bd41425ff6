"""Daily DexCare All Visits Reports into the warehouse: start, wait, download per report type, then one load.

Parsing this file touches no network and no database: everything that needs a connection happens in tasks.
"""

from __future__ import annotations

import datetime as dt
import os
from typing import Any

from airflow.sdk import DAG, Asset, Param, task, task_group
from dexcare.compat import HAS_DEADLINE_ALERTS, RETRY_EXPONENTIAL_BACKOFF
from dexcare.daily.callbacks import failure_callbacks, volume_warning_callbacks
from dexcare.daily.freshness import deadline_hours, freshness_deadline, watchdog_task
from dexcare.daily.plan import plan_task
from dexcare.daily.queues import queue
from dexcare.daily.runbook import RUNBOOK
from dexcare.operators.download_report import DexCareDownloadReportOperator
from dexcare.operators.load_reports import DexCareLoadReportsOperator
from dexcare.operators.start_report import DexCareStartReportOperator
from dexcare.report import DEFAULT_LOOKBACK_DAYS, ReportType
from dexcare.sensors.report import DexCareReportSensor

DAG_ID = "dexcare_all_visits_report"
# Deployment knobs read from the environment (no I/O at parse time); tests shorten them.
RETRIES = int(os.environ.get("DEXCARE_DAG_RETRIES", "3"))
RETRY_DELAY = dt.timedelta(seconds=float(os.environ.get("DEXCARE_DAG_RETRY_DELAY_SECONDS", "60")))
FETCH_QUEUE, LOAD_QUEUE = queue("fetch"), queue("load")  # DEXCARE_FETCH_QUEUE / DEXCARE_LOAD_QUEUE
TABLE_ASSETS = [Asset(name=f"dexcare.avr_{t.value}", uri=f"dexcare://warehouse/avr_{t.value}") for t in ReportType]
# The trigger form draws an array Param with `examples` as a multi-select picker (Airflow 3.0 and later), and
# a Param whose type includes "null" as optional: clearing a picker sends null.
REPORT_TYPE_PICKER: dict[str, Any] = {
    "items": {"type": "string", "enum": [t.value for t in ReportType]},
    "examples": [t.value for t in ReportType],
    "values_display": {t.value: t.value.replace("_", " ").capitalize() for t in ReportType},
    "uniqueItems": True,
}

with DAG(
    dag_id=DAG_ID,
    description="DexCare All Visits Reports (virtual, retail, provider booking), deduplicated into the warehouse",
    schedule="@daily",
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    # Scheduled runs load the same tables: one at a time keeps the advisory lock uncontended. Airflow 3.3
    # does not apply this to backfills (they have their own --max-active-runs, default 10); loads stay
    # correct in any order (advisory lock + old-window guard), see the runbook.
    max_active_runs=1,
    render_template_as_native_obj=True,
    doc_md=RUNBOOK,
    tags=["dexcare"],
    # Airflow 3.1+: page when a run is not done DEXCARE_DAG_DEADLINE_HOURS (6) after its data interval ends;
    # 3.0 has no Deadline Alerts: the watchdog DAG below reads load_audit's freshness instead.
    **freshness_deadline(dt.timedelta(days=1)),
    default_args={
        # DEXCARE_FAILURE_NOTIFIER: one page per failed task (a task's callback sees the exception: the cause)
        "on_failure_callback": failure_callbacks(),
        "retries": RETRIES,
        "retry_delay": RETRY_DELAY,
        "retry_exponential_backoff": RETRY_EXPONENTIAL_BACKOFF,
        "max_retry_delay": dt.timedelta(minutes=30),
    },
    params={
        "report_types": Param(
            ["virtual", "retail"],
            type="array",
            minItems=1,
            description="Report types to fetch; each is started, awaited and downloaded in parallel.",
            **REPORT_TYPE_PICKER,
        ),
        "lookback_days": Param(
            DEFAULT_LOOKBACK_DAYS,
            type="integer",
            minimum=0,
            maximum=366,
            description="The window starts this many days before its end, so daily runs overlap and late "
            "changes to a visit are picked up.",
        ),
        "start_date": Param(
            None,
            type=["null", "string"],
            format="date",
            description="Override the window's first day (YYYY-MM-DD) for a manual run; give end_date too.",
        ),
        "end_date": Param(
            None,
            type=["null", "string"],
            format="date",
            description="Override the window's last day (YYYY-MM-DD). Default: the run's data interval end.",
        ),
        "key_columns": Param(
            {},
            type="object",
            description='Dedupe key per report type, e.g. {"retail": ["visit_id"]}. Default visit_id.',
        ),
        "poll_interval": Param(60, type="number", minimum=1, description="Seconds between status checks."),
        "sensor_timeout_hours": Param(
            12, type="number", minimum=0.01, description="Give up waiting for a report after this many hours."
        ),
        "failed_grace_minutes": Param(
            10,
            type="number",
            minimum=0,
            description="A FAILED report is final only after this long: DexCare retries failed reports itself.",
        ),
        "max_resubmits": Param(
            1, type="integer", minimum=0, description="Request a report again this often if it is lost."
        ),
        "dexcare_conn_id": Param("dexcare_default", type="string", description="DexCare connection id."),
        "warehouse_conn_id": Param("dexcare_warehouse", type="string", description="Postgres or MSSQL connection id."),
        "schema": Param("dexcare", type="string", description="Target schema for the avr_* tables."),
        "storage": Param(
            None,
            type=["null", "string"],
            description="Where this run's CSVs go, as a directory URI (s3://aws_conn_id@bucket/dexcare/, "
            "file:///shared/dexcare/); each run gets <dag_id>/<run_id>/ below it. Default: the deployment's "
            "[dexcare] report_storage, else a private directory on the worker (LocalExecutor only). A relative "
            "path, a key before '@' or a protocol nothing installed serves is refused in plan.",
        ),
        "delete_downloads": Param(True, type="boolean", description="Delete the CSVs after a successful load."),
        "history": Param(
            [],
            type=["null", "array"],
            description="Report types whose every change is also appended to avr_<type>_history: each visit's "
            "states over time, with the report and window that brought each one. Optional; default: none.",
            **REPORT_TYPE_PICKER,
        ),
        "volume_min_share": Param(
            {},
            type=["object", "number"],
            description='The volume guard warns when a report has fewer rows than this share of the median of '
            'its type\'s last 14 loads of the same window length: one number, or per report type, e.g. '
            '{"virtual": 0.3}. Default: [dexcare] volume_min_share, else 0.5.',
        ),
        "accept_volume": Param(
            False,
            type=["boolean", "array"],
            items={"type": "string", "enum": [t.value for t in ReportType]},
            description="Let this run load a report the volume guard refuses (0 rows where the last loads had "
            'rows): true, or the report types, e.g. ["virtual"]. Only for a day that is really empty.',
        ),
    },
) as dag:

    @task(**FETCH_QUEUE)
    def plan(**context: Any) -> list[dict[str, Any]]:
        """The window, the storage and one entry per report type; checked here, before DexCare is asked."""
        return plan_task(context)

    @task_group
    def fetch(report_type: str, report_start_date: str, report_end_date: str, destination: str) -> Any:
        window: dict[str, Any] = {
            "report_type": report_type,
            "report_start_date": report_start_date,
            "report_end_date": report_end_date,
        }
        start = DexCareStartReportOperator(
            task_id="start_report",
            dexcare_conn_id="{{ params.dexcare_conn_id }}",
            # ti.task is the rendered task on every Airflow 3; 3.0's `task` still holds the unmapped argument
            map_index_template="{{ ti.task.report_type }}",
            **FETCH_QUEUE,
            **window,
        )
        wait = DexCareReportSensor(
            task_id="wait_for_report",
            report_id=start.output,
            deferrable=True,  # the wait holds no worker slot, whatever [operators] default_deferrable says
            dexcare_conn_id="{{ params.dexcare_conn_id }}",
            poll_interval="{{ params.poll_interval }}",
            timeout="{{ params.sensor_timeout_hours * 3600 }}",
            failed_grace_period="{{ params.failed_grace_minutes * 60 }}",
            max_resubmits="{{ params.max_resubmits }}",
            map_index_template="{{ ti.task.report_type }}",
            retries=min(RETRIES, 1),  # a retry waits on the same report again; losses are resubmitted instead
            **FETCH_QUEUE,
            **window,
        )
        return DexCareDownloadReportOperator(
            task_id="download_report",
            report_id=wait.output,
            destination=destination,
            dexcare_conn_id="{{ params.dexcare_conn_id }}",
            key_columns="{{ params.key_columns }}",  # the load's: a first line without them is refused
            map_index_template="{{ ti.task.report_type }}",
            **FETCH_QUEUE,
            **window,
        ).output

    downloads = fetch.expand_kwargs(plan())

    DexCareLoadReportsOperator(
        task_id="load_reports",
        reports=downloads,
        warehouse_conn_id="{{ params.warehouse_conn_id }}",
        schema="{{ params.schema }}",
        key_columns="{{ params.key_columns }}",
        delete_files="{{ params.delete_downloads }}",
        history="{{ params.history }}",
        volume_min_share="{{ params.volume_min_share }}",
        accept_volume="{{ params.accept_volume }}",
        outlets=TABLE_ASSETS,
        on_success_callback=volume_warning_callbacks(),  # a page per table the volume guard warned about
        **LOAD_QUEUE,
    )


if not HAS_DEADLINE_ALERTS:
    with DAG(
        dag_id=f"{DAG_ID}_freshness",
        description="Airflow 3.0's stand-in for the daily DAG's Deadline Alert: pages when a table is stale",
        schedule="@hourly",
        start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
        catchup=False,
        max_active_runs=1,
        tags=["dexcare"],
        params={
            "warehouse_conn_id": Param("dexcare_warehouse", type="string", description="The daily DAG's warehouse."),
            "schema": Param("dexcare", type="string", description="The schema of its load_audit."),
        },
    ) as freshness_dag:

        @task(retries=0, **LOAD_QUEUE)
        def check_freshness(**context: Any) -> None:
            """Each table's newest committed window against the run due DEXCARE_DAG_DEADLINE_HOURS ago."""
            watchdog_task(context, DAG_ID, deadline_hours())

        check_freshness()
