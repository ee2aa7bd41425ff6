"""Pieces of the daily DAG that are code rather than wiring: the window plan, the runbook, the paging hook.

Kept out of the DAG file so the file stays a readable picture of the pipeline, and so these can be tested
without parsing a DAG.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections.abc import Mapping
from typing import Any

from dexcare.compat import AirflowFailException
from dexcare.exceptions import DexCareLoadError, DexCareStorageError, DexCareValidationError
from dexcare.hooks.dexcare import DexCareHook
from dexcare.load.connection import warehouse_type
from dexcare.paging import FailurePager, VolumeWarningPager, check_notifier, notifier_class
from dexcare.report import ReportRequest
from dexcare.storage import (
    check_storage,
    check_storage_reaches_every_worker,
    executor_setting,
    run_directory,
    storage_choice,
)
from dexcare.task_support import run_end_date

log = logging.getLogger(__name__)

#: Celery (or Edge) queues for the fetch tasks (plan, start, wait, download) and for load_reports.
QUEUE_ENVS = {"fetch": "DEXCARE_FETCH_QUEUE", "load": "DEXCARE_LOAD_QUEUE"}
#: Connection types the DexCare hook reads: its own, and the HTTP connection it extends (whose extra it reads).
DEXCARE_CONN_TYPES = (DexCareHook.conn_type, "http", "https")


def plan_reports(context: Mapping[str, Any], executor: str | None = None) -> list[dict[str, Any]]:
    """One ``{report_type, report_start_date, report_end_date, destination}`` per requested type.

    Everything that can be wrong before DexCare is asked is checked here, first the storage (a value that
    cannot be written to, or a worker-local directory on an executor that runs tasks on several machines),
    then the two connections: otherwise every report would be requested and downloaded, and the download or the
    load fail hours later, after retries that cannot help.
    """
    params = context["params"]
    storage, source = storage_choice(params.get("storage"))
    check_storage(storage, source)
    check_storage_reaches_every_worker(storage, source, executor_setting() if executor is None else executor)
    check_connections(params["dexcare_conn_id"], params["warehouse_conn_id"])
    destination = run_directory(storage, context["dag"].dag_id, context["run_id"])
    log.info("Reports of this run go to %s (storage from %s).", destination, source)
    start, end = params.get("start_date"), params.get("end_date")
    if start and not end:
        raise DexCareValidationError(
            f"params.start_date is {start!r} but params.end_date is empty: give both to override the window."
        )
    end_date = dt.date.fromisoformat(end) if end else run_end_date(context)
    start_date = dt.date.fromisoformat(start) if start else end_date - dt.timedelta(days=int(params["lookback_days"]))
    plan = []
    for report_type in params["report_types"]:
        request = ReportRequest.build(report_type, start_date, end_date)
        plan.append(
            {
                "report_type": request.report_type.value,
                "report_start_date": request.start_date.isoformat(),
                "report_end_date": request.end_date.isoformat(),
                "destination": destination,
            }
        )
    return plan


def check_connections(dexcare_conn_id: str, warehouse_conn_id: str) -> None:
    """Both connections of a run exist and are of a type their hooks use; messages name the id and the fix,
    never a field of the connection."""
    dexcare_type = (_connection(dexcare_conn_id, "dexcare_conn_id", DexCareHook.conn_type).conn_type or "").lower()
    if dexcare_type not in DEXCARE_CONN_TYPES:
        raise DexCareValidationError(
            f"Connection {dexcare_conn_id!r} (the run's dexcare_conn_id param) is of type {dexcare_type!r}; "
            f"DexCare needs a connection of type {' or '.join(map(repr, DEXCARE_CONN_TYPES))} (host = the REST "
            "endpoint, password = the reporting service key). Fix: correct the connection, or name the DexCare "
            "connection in the dexcare_conn_id param."
        )
    try:
        warehouse_type(warehouse_conn_id, _connection(warehouse_conn_id, "warehouse_conn_id", "postgres"))
    except DexCareLoadError as exc:
        raise DexCareValidationError(
            f"{exc} (the run's warehouse_conn_id param). Fix: correct the connection, or name the warehouse "
            "connection in the warehouse_conn_id param."
        ) from None


def _connection(conn_id: str, param: str, example_type: str) -> Any:
    from airflow.providers.common.compat.sdk import AirflowNotFoundException, BaseHook

    try:
        return BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        raise DexCareValidationError(
            f"Connection {conn_id!r} (the run's {param} param) does not exist. Fix: create it (airflow "
            f"connections add {conn_id} --conn-type {example_type} ..., or AIRFLOW_CONN_{conn_id.upper()} in the "
            f"environment of the workers), or give the id of an existing connection in the {param} param."
        ) from None


def plan_task(context: Mapping[str, Any]) -> list[dict[str, Any]]:
    """:func:`plan_reports` for the DAG's ``plan`` task: a bad param or storage setting fails the run at once.

    No retry can fix a setting, and the DAG's retries with backoff would page the on-call engineer minutes late
    (with the defaults, three retries and seven minutes) for an error that names its fix in the first try.
    """
    try:
        return plan_reports(context)
    except (DexCareValidationError, DexCareStorageError) as exc:
        raise AirflowFailException(f"{exc} (Not retried: a retry cannot fix a setting.)") from None


def queue(stage: str, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """``{"queue": ...}`` for a task of ``stage`` ("fetch" or "load") when the deployment names one, else ``{}``
    (Airflow's ``[operators] default_queue``): a deployment routes the load near the warehouse without a DAG
    edit. Read at parse time, like the retry knobs."""
    environ = os.environ if environ is None else environ
    name = environ.get(QUEUE_ENVS[stage], "").strip()
    return {"queue": name} if name else {}


def failure_callbacks(environ: Mapping[str, str] | None = None) -> list[Any]:
    """The task failure callback that pages, when the deployment names a notifier (``DEXCARE_FAILURE_NOTIFIER``).

    A task's callback, not the DAG's: only the task sees the exception, whose message is the page's cause. Reading
    two environment variables is the only work done at parse time; the notifier class is imported here so a
    typo fails the DAG import visibly instead of silently never paging anyone.
    """
    notifier = notifier_class(environ)
    if notifier is None:
        return []
    check_notifier(notifier)
    return [FailurePager(notifier)]


def volume_warning_callbacks(environ: Mapping[str, str] | None = None) -> list[Any]:
    """load_reports' success callback that pages once per table whose volume the load warned about."""
    notifier = notifier_class(environ)
    return [VolumeWarningPager(notifier)] if notifier else []


RUNBOOK = """
# DexCare All Visits Reports — runbook

**What it does.** Every day, for each report type in `params.report_types` (default virtual and retail), in
parallel: `fetch.start_report` asks DexCare for the report covering `end - lookback_days .. end` (end = the
run's data interval end), `fetch.wait_for_report` waits for it in the triggerer (deferred, no worker slot),
and `fetch.download_report` streams the CSV to storage. When **every** download succeeded,
`load_reports` deduplicates and upserts all of them into `<schema>.avr_<type>` in **one transaction** and
writes `<schema>.load_audit`. Daily windows overlap on purpose: a visit that changed is updated, never
duplicated, and an older window never overwrites newer data.

**Mapped tasks** are named by report type in the UI (`fetch.wait_for_report [retail]`).

## When something fails

| task | what it means | what to do |
|---|---|---|
| `plan` | bad trigger params (window override, report type); a report storage that cannot work (relative path, credentials before `@`, no bucket, a protocol no installed provider serves) or that is a worker-local directory while the executor runs tasks on several machines; a DexCare or warehouse connection that does not exist or is of the wrong type. No report was requested, and `plan` is not retried | the last log line names the setting or connection and the fix: fix the params, the connection, or `[dexcare] report_storage` (`AIRFLOW__DEXCARE__REPORT_STORAGE`, e.g. s3://<conn id>@bucket/prefix/ or a file:// volume every worker mounts); trigger again |
| `start_report` 403 | DexCare refused the reporting service key | fix connection `dexcare_default` (password), clear the task |
| `start_report` 5xx / 429 / network | DexCare unavailable beyond the retry budget | clear the task when DexCare is back; a retry reuses a report already started |
| `wait_for_report` FAILED / CANCELLED | DexCare lost the report and resubmissions (`max_resubmits`) ran out | clear `start_report` of that type (a new report is requested) |
| `wait_for_report` 404 | the report expired or the id is wrong | clear `start_report` of that type |
| `wait_for_report` timeout | the report did not finish within `sensor_timeout_hours` | check DexCare status; clear `start_report` to request again |
| `download_report` | network or storage problem; no partial file is left | clear the task (the report can be downloaded again) |
| `load_reports` | bad CSV (message names file, line, column), warehouse down, key column missing | nothing was written (one transaction): fix the cause, clear `load_reports` |
| `load_reports` "Report file ... is not on this worker / not in the object store" | the CSV is gone: deleted, expired by a bucket lifecycle rule, or on another worker's disk | the last log line says which; clear the run's `download_report` tasks and `load_reports` (set shared storage first if it was another worker's disk) |

A run whose load failed wrote nothing, so clearing and re-running it is always safe; so is re-running a
successful day (rows unchanged are not rewritten). Backfills (`airflow backfill create --dag-id
dexcare_all_visits_report --from-date ... --to-date ... --max-active-runs 1`) load each day's own window;
`--max-active-runs 1` loads the days in date order (the DAG's `max_active_runs` does not bind backfills).
Without it the days load concurrently, still correctly: loads take turns on an advisory lock and an older
window never overwrites newer data.

**Paging.** Set `DEXCARE_FAILURE_NOTIFIER` (an Airflow notifier class, e.g.
`airflow.providers.smtp.notifications.smtp.SmtpNotifier`) and `DEXCARE_FAILURE_NOTIFIER_KWARGS` (JSON) in
the environment of the scheduler, the workers and the triggerer; no DAG edit needed. A failed task, a volume
verdict and a run not done `DEXCARE_DAG_DEADLINE_HOURS` (6) hours after its data interval each send one page
(cause, fix, counts, run link) with the dedup key `dexcare/<dag_id>/<logical date>/<kind>`.

**Data.** CSVs hold patient data: they are private files, deleted after a successful load
(`params.delete_downloads`), and never logged. Logs show ids, counts and timings only. They go to
`<storage>/<dag_id>/<run_id>/`, where storage is `params.storage`, else `[dexcare] report_storage`, else a
private directory on the worker; `plan`'s return value shows the directory of each run.

**Queues.** `DEXCARE_FETCH_QUEUE` (plan, start, wait, download) and `DEXCARE_LOAD_QUEUE` (load_reports) in the
environment route the tasks to Celery queues, e.g. to load on workers near the warehouse.
"""
