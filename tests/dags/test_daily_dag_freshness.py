"""The freshness deadline and the pages, as the daily DAG wires them on every Airflow (tests/dags runs on each
version in the Makefile's COMPAT_TESTS): a Deadline Alert on 3.1 and later, the load_audit watchdog on 3.0."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psycopg
import pytest
from dexcare.compat import HAS_DEADLINE_ALERTS
from dexcare.daily.freshness import due_logical_date, table_freshness, watchdog
from dexcare.daily.paging import FailurePager, VolumeWarningPager
from dexcare.load.loader import LoadOptions, load_reports

from tests.dags.test_daily_dag_paging import RECORDING_ENV, RecordingNotifier
from tests.support.airflow_cli import postgres_connection
from tests.support.airflow_compat import DagBag, DagSerialization
from tests.support.warehouse import scratch_schema

DAGS = Path(__file__).resolve().parents[2] / "dags"
DAG_ID = "dexcare_all_visits_report"


def parse(monkeypatch: pytest.MonkeyPatch, **env: str) -> Any:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return DagBag(dag_folder=str(DAGS))


def test_every_task_pages_its_failure_and_the_load_its_volume_warnings(monkeypatch):
    bag = parse(monkeypatch, **RECORDING_ENV)
    assert bag.import_errors == {}
    dag = bag.dags[DAG_ID]
    for task in dag.tasks:
        assert [type(c) for c in task.on_failure_callback] == [FailurePager], task.task_id
    assert [type(c) for c in dag.get_task("load_reports").on_success_callback] == [VolumeWarningPager]


def test_the_deadline_is_a_deadline_alert_from_3_1_and_the_watchdog_on_3_0(monkeypatch):
    bag = parse(monkeypatch, **RECORDING_ENV, DEXCARE_DAG_DEADLINE_HOURS="2.5")
    assert bag.import_errors == {}
    dag = bag.dags[DAG_ID]
    if HAS_DEADLINE_ALERTS:
        (alert,) = dag.deadline if isinstance(dag.deadline, list) else [dag.deadline]
        # counted from the logical date: the data interval's end under CronTriggerTimetable (Airflow 3's default),
        # its start under CronDataIntervalTimetable ([scheduler] create_cron_data_intervals, as in unit-test mode)
        starts = type(dag.timetable).__name__ == "CronDataIntervalTimetable"
        assert alert.interval == dt.timedelta(hours=2.5) + (dt.timedelta(days=1) if starts else dt.timedelta(0))
        assert alert.callback.path == "dexcare.daily.paging.page_missed_deadline"
        assert alert.callback.kwargs == {"hours": 2.5}
        assert type(alert.reference).__name__ == "DagRunLogicalDateDeadline"
        serialized = DagSerialization.to_dict(dag)  # what the DAG processor stores for the scheduler
        assert "dexcare.daily.paging.page_missed_deadline" in json.dumps(serialized)
        assert DagSerialization.from_dict(serialized).dag_id == DAG_ID
        assert f"{DAG_ID}_freshness" not in bag.dags
    else:
        assert getattr(dag, "deadline", None) is None
        watch = bag.dags[f"{DAG_ID}_freshness"]
        assert watch.task_ids == ["check_freshness"] and watch.max_active_runs == 1
        assert watch.params["schema"] == "dexcare" and watch.params["warehouse_conn_id"] == "dexcare_warehouse"


def test_airflow_dags_test_runs_the_dag_without_its_deadline(monkeypatch):
    """apache/airflow#73428: ``airflow dags test`` exits 1 after a successful run of a DAG with a deadline."""
    monkeypatch.setattr("sys.argv", ["/venv/bin/airflow", "dags", "test", DAG_ID, "2026-11-20"])
    bag = parse(monkeypatch)
    assert bag.import_errors == {}
    assert not getattr(bag.dags[DAG_ID], "deadline", None)


def test_a_deadline_that_is_no_positive_number_fails_the_import(monkeypatch):
    bag = parse(monkeypatch, DEXCARE_DAG_DEADLINE_HOURS="six")
    (error,) = bag.import_errors.values()
    assert "DEXCARE_DAG_DEADLINE_HOURS='six' is not a positive number of hours" in error


def test_the_deadline_counts_from_the_end_of_the_data_interval():
    """The run of logical date D (its data interval's end, 00:00 UTC) is due at D + N hours."""
    day = dt.datetime(2026, 11, 3, tzinfo=dt.UTC)
    assert due_logical_date(day + dt.timedelta(hours=6), 6) == day
    assert due_logical_date(day + dt.timedelta(hours=5, minutes=59), 6) == day - dt.timedelta(days=1)


@pytest.fixture
def warehouse(pg_uri, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_FRESH_WH", postgres_connection(pg_uri))
    with scratch_schema(pg_uri, "dexcare_fresh") as schema:
        yield SimpleNamespace(uri=pg_uri, conn_id="fresh_wh", schema=schema)


def load_window(warehouse: SimpleNamespace, tmp_path: Path, report_type: str, end: dt.date) -> None:
    path = tmp_path / f"{report_type}-{uuid.uuid4().hex[:6]}.csv"
    path.write_text("visit_id,visit_status\nv1,COMPLETED\n")
    report = {"uri": str(path), "bytes": path.stat().st_size, "sha256": None, "rows": None,
              "report_id": str(uuid.uuid4()), "report_type": report_type,
              "start_date": (end - dt.timedelta(days=7)).isoformat(), "end_date": end.isoformat()}
    with psycopg.connect(warehouse.uri) as conn:
        load_reports(conn, [report], dialect="postgres", options=LoadOptions(schema=warehouse.schema))


def test_the_watchdog_pages_once_for_the_tables_staler_than_the_run_due(warehouse, tmp_path):
    """Airflow 3.0's fallback against a real load_audit: a table whose newest committed window ends before the
    run due N hours ago is stale; the page is the deadline page, with the key a Deadline Alert would use."""
    RecordingNotifier.sent = []
    now = dt.datetime.now(dt.UTC)
    due = due_logical_date(now, 6)
    load_window(warehouse, tmp_path, "virtual", due.date())
    load_window(warehouse, tmp_path, "retail", due.date() - dt.timedelta(days=3))
    load_window(warehouse, tmp_path, "retail", due.date() - dt.timedelta(days=2))
    assert table_freshness(warehouse.conn_id, warehouse.schema) == {
        "avr_virtual": due.date(), "avr_retail": due.date() - dt.timedelta(days=2)}

    stale = watchdog(DAG_ID, warehouse.conn_id, warehouse.schema, now, 6, RECORDING_ENV)
    assert stale == [f"avr_retail (newest window_end {(due.date() - dt.timedelta(days=2)).isoformat()})"]
    (sent,) = RecordingNotifier.sent
    assert sent["dedup_key"] == f"dexcare/{DAG_ID}/{due.isoformat()}/deadline"
    assert f"{warehouse.schema}.avr_retail newest window_end" in sent["page"].text
    assert "avr_virtual" not in sent["page"].text

    RecordingNotifier.sent = []
    load_window(warehouse, tmp_path, "retail", due.date())
    assert watchdog(DAG_ID, warehouse.conn_id, warehouse.schema, now, 6, RECORDING_ENV) == []
    assert RecordingNotifier.sent == []
