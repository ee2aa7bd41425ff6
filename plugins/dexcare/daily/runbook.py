"""The daily DAG's runbook: shown as the DAG's Docs in the Airflow UI, and quoted by every page.

Plain text with no imports, so the page builder (:func:`dexcare.daily.paging.runbook_fix`) reads the fix of the
failed task from the one place the fixes are written.
"""

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
