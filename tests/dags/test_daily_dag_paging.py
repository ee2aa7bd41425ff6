"""One page per incident, built in one place: through the SMTP notifier to a real SMTP server on loopback, and
through a notifier of one's own that records what it got.

What is checked each time: one message per incident, its dedup key, the cause and fix and counts, and that no
reporting service key, no proxy password and no field of a report is in it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import pytest
from airflow.sdk import BaseNotifier
from dexcare.daily.callbacks import failure_callbacks, volume_warning_callbacks
from dexcare.daily.paging import (
    FailurePager,
    Incident,
    build_page,
    dedup_key,
    failure_incident,
    page_missed_deadline,
    runbook_fix,
    volume_warning_incidents,
)
from dexcare.exceptions import (
    DexCareConnectionError,
    DexCareDownloadReportError,
    DexCareFinalError,
    DexCareResponseError,
)

from tests.support.airflow_compat import DagBag
from tests.support.helpers import SANDBOX_TOKEN
from tests.support.smtp_server import LoopbackSMTP
from tests.support.task_runtime import Runtime

DAGS = Path(__file__).resolve().parents[2] / "dags"
DAG_ID = "dexcare_all_visits_report"
LOGICAL = dt.datetime(2026, 11, 3, tzinfo=dt.UTC)
PROXY_PASSWORD = "proxy-Pa55-9d1e"
#: Values that stand for patient data, served by the sandbox as the report's rows.
PATIENT = ("Jane Roe", "1980-02-03", "SECRET-STATUS-55")
HEADERLESS = f"v1,{PATIENT[0]},{PATIENT[1]},{PATIENT[2]}\n".encode()
SMTP_ENV = {
    "DEXCARE_FAILURE_NOTIFIER": "airflow.providers.smtp.notifications.smtp.SmtpNotifier",
    "DEXCARE_FAILURE_NOTIFIER_KWARGS": json.dumps(
        {"to": "oncall@example.com", "from_email": "airflow@example.com", "smtp_conn_id": "page_smtp"}
    ),
}


class RecordingNotifier(BaseNotifier):
    """A notifier of one's own: takes the page and a dedup key, records every notification."""

    sent: ClassVar[list[dict[str, Any]]] = []

    def __init__(self, page: Any = None, dedup_key: str | None = None, team: str = "") -> None:
        super().__init__()
        self.page, self.dedup_key, self.team = page, dedup_key, team

    def notify(self, context: Any) -> None:
        RecordingNotifier.sent.append({"page": self.page, "dedup_key": self.dedup_key, "team": self.team})


RECORDING_ENV = {
    "DEXCARE_FAILURE_NOTIFIER": f"{__name__}:RecordingNotifier",
    "DEXCARE_FAILURE_NOTIFIER_KWARGS": json.dumps({"team": "data-eng"}),
}


@pytest.fixture
def recorded():
    RecordingNotifier.sent = []
    yield RecordingNotifier.sent


@pytest.fixture
def smtp(monkeypatch):
    with LoopbackSMTP() as server:
        monkeypatch.setenv("AIRFLOW_CONN_PAGE_SMTP", server.connection_uri())
        yield server


@pytest.fixture(scope="module")
def daily_dag():
    bag = DagBag(dag_folder=str(DAGS))
    assert bag.import_errors == {}
    return bag.dags[DAG_ID]


@pytest.fixture
def context(daily_dag):
    """A task callback's context as Airflow hands ``on_failure_callback`` / ``on_success_callback`` its keys:
    the daily DAG itself, its run, the task instance, the exception."""

    def make(task_id: str, exception: BaseException | None = None, map_label: str | None = None) -> dict[str, Any]:
        run = SimpleNamespace(dag_id=DAG_ID, run_id="scheduled__2026-11-03T00:00:00+00:00", logical_date=LOGICAL)
        ti = SimpleNamespace(task_id=task_id, rendered_map_index=map_label, dag_id=DAG_ID)
        return {"dag": daily_dag, "dag_run": run, "ti": ti, "exception": exception, "run_id": run.run_id}

    return make


def wait_for(smtp: LoopbackSMTP, count: int) -> None:
    deadline = time.monotonic() + 5
    while len(smtp.raw) < count and time.monotonic() < deadline:
        time.sleep(0.02)


def decoded(message: Any) -> str:
    """Subject, headers and the HTML body as a reader sees them (the wire form is base64)."""
    return f"{message}\n{message.get_body(('html',)).get_content()}"


def assert_clean(text: str) -> None:
    for secret in (SANDBOX_TOKEN, PROXY_PASSWORD, *PATIENT):
        assert secret not in text, (secret, text[:2000])


def test_a_failed_download_pages_once_by_smtp_with_cause_fix_and_key(dexcare_conn_id, sandbox, smtp, tmp_path, context):
    """The sandbox serves a report whose first line is patient data; the download refuses it and the page says
    why, without quoting the line, the key or anything else secret."""
    from dexcare.operators.download_report import DexCareDownloadReportOperator
    from dexcare.operators.start_report import DexCareStartReportOperator

    rt = Runtime()
    sandbox.serve_body(HEADERLESS)
    report_id = rt.run(DexCareStartReportOperator(task_id="start", report_type="virtual",
                                                  report_start_date="2026-11-01", report_end_date="2026-11-03"))
    download = DexCareDownloadReportOperator(task_id="download", report_id=report_id, request_task_id="start",
                                             destination=f"{tmp_path}/")
    ready = time.monotonic() + 10
    while True:  # the sandbox's report takes a moment to succeed; the DAG's sensor waits for it
        try:
            rt.run(download)
        except DexCareDownloadReportError:
            assert time.monotonic() < ready
            time.sleep(0.1)
            continue
        except DexCareResponseError as exc:
            error = exc
            break
        pytest.fail("the download accepted a first line that is no DexCare header")

    (pager,) = failure_callbacks(SMTP_ENV)
    pager(context("fetch.download_report", error, map_label="virtual"))
    wait_for(smtp, 1)

    (message,) = smtp.messages
    key = f"dexcare/{DAG_ID}/{LOGICAL.isoformat()}/failure"
    assert key in message["Subject"]
    body = message.get_body(("html",)).get_content()
    assert "Task fetch.download_report failed" in body and "virtual" in body
    assert "none of its 4 field(s) is the key column" in body  # the exception's own text: the cause
    assert "clear the task (the report can be downloaded again)" in body  # the runbook's row: the fix
    assert key in body
    assert_clean(decoded(message))


def test_a_proxy_password_never_reaches_the_page(smtp, context):
    """Ours are redacted when made, and still say where; of a library's exception only the type is paged, since
    its text can quote a row (a driver's detail) as well as a password."""
    proxy = f"http://oncall:{PROXY_PASSWORD}@127.0.0.1:3128"
    (pager,) = failure_callbacks(SMTP_ENV)
    pager(context("fetch.start_report", DexCareConnectionError(f"Cannot reach DexCare through {proxy}")))
    pager(context("load_reports", OSError(f"proxy {proxy} refused the connection")))
    pager(context("load_reports", ValueError("DETAIL: Key (visit_id)=(PATIENT-Jane-Roe-1984) already exists.")))
    wait_for(smtp, 3)
    assert len(smtp.raw) == 3
    ours, oserror, driver = (decoded(message) for message in smtp.messages)
    assert "127.0.0.1:3128" in ours  # the page still says where
    assert "OSError" in oserror and "127.0.0.1:3128" not in oserror
    assert "ValueError" in driver and "Jane-Roe" not in driver and "task log" in driver
    for text in (ours, oserror, driver):
        assert_clean(text)


class VolumeError(DexCareFinalError):
    """G's ``DexCareVolumeError`` contract: a final error with ``counts``."""

    def __init__(self, message: str, counts: dict[str, Any]) -> None:
        super().__init__(message)
        self.counts = counts


def test_a_load_refused_for_zero_rows_pages_its_counts(smtp, context):
    counts = {"table": "avr_virtual", "report_type": "virtual", "rows": 0, "baseline_median": 412,
              "baseline_loads": 14}
    exc = VolumeError("avr_virtual: the report has 0 rows against a baseline median of 412 (14 loads).", counts)
    (pager,) = failure_callbacks(SMTP_ENV)
    pager(context("load_reports", exc))
    wait_for(smtp, 1)
    (message,) = smtp.messages
    assert f"dexcare/{DAG_ID}/{LOGICAL.isoformat()}/volume-avr_virtual" in message["Subject"]
    body = message.get_body(("html",)).get_content()
    assert "rows 0, baseline_median 412, baseline_loads 14" in body
    assert "accept" in body
    assert_clean(decoded(message))


def volume_summary(verdicts: dict[str, str]) -> dict[str, Any]:
    """load_reports' return value, with the volume verdict per table in the load's shape."""
    tables, reports = {}, []
    for report_type, verdict in verdicts.items():
        table = f"avr_{report_type}"
        tables[table] = {
            "reports": 1, "rows_in_file": 40, "duplicates_in_file": 0, "inserted": 40, "updated": 0,
            "unchanged": 0, "new_columns": [],
            "volume": {"verdict": verdict, "rows": 40, "baseline_median": 400, "baseline_loads": 14,
                       "ratio": 0.1, "min_share": 0.5},
        }
        reports.append({"report_id": f"r-{report_type}", "report_type": report_type, "target_table": table,
                        "window_start": "2026-10-27", "window_end": "2026-11-03", "rows_in_file": 40})
    return {"schema": "dexcare", "dag_id": DAG_ID, "run_id": "scheduled__2026-11-03", "reports": reports,
            "tables": tables}


def test_a_volume_warning_pages_once_per_warned_table(recorded, context):
    summary = volume_summary({"virtual": "warn", "retail": "ok", "provider_booking": "warn"})
    ctx = context("load_reports")
    ctx["ti"].xcom_pull = lambda task_ids, key: summary if (task_ids, key) == ("load_reports", "return_value") \
        else None
    (pager,) = volume_warning_callbacks(RECORDING_ENV)
    pager(ctx)
    keys = [r["dedup_key"] for r in recorded]
    assert keys == [dedup_key(DAG_ID, LOGICAL.isoformat(), "volume-avr_virtual"),
                    dedup_key(DAG_ID, LOGICAL.isoformat(), "volume-avr_provider_booking")]
    assert all(r["team"] == "data-eng" for r in recorded)
    text = recorded[0]["page"].text
    assert "Window: 2026-10-27..2026-11-03" in text and "Report type: virtual" in text
    assert "rows 40, baseline_median 400, baseline_loads 14, ratio 0.1, min_share 0.5" in text


def test_no_warning_no_page(recorded, context):
    ctx = context("load_reports")
    ctx["ti"].xcom_pull = lambda task_ids, key: volume_summary({"virtual": "ok"})
    (pager,) = volume_warning_callbacks(RECORDING_ENV)
    pager(ctx)
    summary_without_guard = volume_summary({"virtual": "ok"})
    del summary_without_guard["tables"]["avr_virtual"]["volume"]
    assert volume_warning_incidents(summary_without_guard, ctx) == []
    assert recorded == []


def test_repeats_of_one_incident_share_one_key_and_kinds_do_not(recorded, context):
    (pager,) = failure_callbacks(RECORDING_ENV)
    ctx = context("fetch.wait_for_report", DexCareResponseError("report r-1 FAILED"), map_label="retail")
    pager(ctx)
    pager(ctx)
    assert len({r["dedup_key"] for r in recorded}) == 1
    deadline = failure_incident(ctx).__class__(**{**failure_incident(ctx).__dict__, "kind": "deadline"})
    assert build_page(deadline).dedup_key != recorded[0]["dedup_key"]


def test_a_missed_deadline_sends_the_same_page(recorded, monkeypatch):
    """The deadline callback as the triggerer calls it, with the context Airflow 3.1 to 3.3 give it (JSON)."""
    for name, value in RECORDING_ENV.items():
        monkeypatch.setenv(name, value)
    # Airflow's DAGRunResponse as JSON: dag_run_id, and UTC written as Z
    run = {"dag_id": DAG_ID, "dag_run_id": "scheduled__2026-11-03T00:00:00+00:00",
           "logical_date": "2026-11-03T00:00:00Z", "state": "running"}
    asyncio.run(page_missed_deadline(context={"dag_run": run, "deadline": {"id": "d-1"}}, hours=6))
    (sent,) = recorded
    assert sent["dedup_key"] == f"dexcare/{DAG_ID}/{LOGICAL.isoformat()}/deadline"
    text = sent["page"].text
    assert "not done 6 hours after its data interval ended" in text and "load_audit" in text
    assert "Runbook:" in text and "Run: scheduled__2026-11-03T00:00:00+00:00" in text


def test_the_fix_is_the_runbook_row_of_the_failed_task():
    assert "fix connection `dexcare_default` (password)" in runbook_fix("fetch.start_report", "DexCare 403")
    assert "clear `start_report` of that type" in runbook_fix("fetch.wait_for_report", "status 404")
    assert "nothing was written" in runbook_fix("load_reports", "bad CSV at line 3")
    assert "last log line" in runbook_fix("some_other_task", "boom")
    assert "DexCare is back" in runbook_fix("fetch.start_report", "DexCare answered 503")
    missing = "Report file s3://b/r.csv is not on this worker: it was deleted"
    assert "clear the run's `download_report` tasks" in runbook_fix("load_reports", missing)


def test_links_come_from_the_deployment():
    incident = Incident("failure", DAG_ID, LOGICAL.isoformat(), "manual__1 x", "A task failed", "c", "f")
    page = build_page(incident, base_url="https://airflow.example/", runbook_url="https://wiki.example/dexcare")
    assert ("Run link", f"https://airflow.example/dags/{DAG_ID}/runs/manual__1%20x") in page.lines
    assert ("Runbook", "https://wiki.example/dexcare") in page.lines


def test_a_notifier_that_refuses_its_kwargs_fails_the_dag_import():
    from dexcare.exceptions import DexCareValidationError

    with pytest.raises(DexCareValidationError, match="refuses DEXCARE_FAILURE_NOTIFIER_KWARGS"):
        failure_callbacks({**RECORDING_ENV, "DEXCARE_FAILURE_NOTIFIER_KWARGS": '{"tema": "x"}'})
    assert isinstance(failure_callbacks(RECORDING_ENV)[0], FailurePager)
