"""The operator, run the way a worker runs it: a real Airflow connection given as an environment variable."""

from __future__ import annotations

import datetime as dt
import json
from types import SimpleNamespace

import pytest
from dexcare.exceptions import DexCareLoadError
from dexcare.operators.load_reports import DexCareLoadReportsOperator
from dexcare.task_support import run_end_date as run_date

from tests.airflow_cli import postgres_connection
from tests.load.conftest import report, rows


@pytest.fixture
def warehouse(pg_uri, monkeypatch) -> str:
    monkeypatch.setenv("AIRFLOW_CONN_DEXCARE_WAREHOUSE", postgres_connection(pg_uri))
    return "dexcare_warehouse"


def test_operator_loads_through_the_airflow_connection(warehouse, write_csv, admin, schema, capsys) -> None:
    virtual = write_csv("visitId,visitStatus\nv1,a\nv1,b\nv2,c\n")
    retail = write_csv("Visit ID,Status\nr1,SECRET-STATUS-91\n")
    op = DexCareLoadReportsOperator(
        task_id="load",
        reports=[report(virtual, end=None, start=None), [report(retail, "retail")]],
        schema=schema,
        column_types={"retail": {"status": "text"}},
    )
    context = {
        "dag": SimpleNamespace(dag_id="dexcare_daily"),
        "run_id": "scheduled__2026-11-23T00:00:00+00:00",
        "data_interval_end": dt.datetime(2026, 11, 23, tzinfo=dt.UTC),
    }
    summary = op.execute(context)
    captured = capsys.readouterr()
    output = captured.out + captured.err
    json.dumps(summary)
    assert summary["dag_id"] == "dexcare_daily"
    assert summary["tables"]["avr_virtual"]["inserted"] == 2
    assert summary["tables"]["avr_virtual"]["duplicates_in_file"] == 1
    assert summary["tables"]["avr_retail"]["inserted"] == 1
    data = rows(admin, schema, "avr_virtual", lineage=True)
    assert [(r["visit_id"], r["visit_status"]) for r in data] == [("v1", "b"), ("v2", "c")]
    assert data[0]["_dexcare_window_end"] == dt.date(2026, 11, 23)  # no window: the run's date
    audit = admin.execute(f'SELECT dag_id, run_id FROM "{schema}".load_audit').fetchall()
    assert audit == [("dexcare_daily", "scheduled__2026-11-23T00:00:00+00:00")] * 2
    # One readable line per table (Airflow's task logger is structlog, printing to the captured streams).
    lines = [line for line in output.splitlines() if "Loaded " in line]
    assert len(lines) == 2, output
    assert any(f"Loaded {schema}.avr_virtual: 1 report(s), 3 rows in file(s), 1 duplicates" in x for x in lines)
    assert "SECRET-STATUS-91" not in output  # never row contents


def test_operator_rejects_bad_configuration_at_parse_time() -> None:
    with pytest.raises(DexCareLoadError):
        DexCareLoadReportsOperator(task_id="load", reports=[], key_columns={"virtul": ["visit_id"]})


def test_operator_without_reports_fails(warehouse) -> None:
    op = DexCareLoadReportsOperator(task_id="load", reports=[])
    with pytest.raises(DexCareLoadError, match="No reports"):
        op.execute({})


def test_run_date_fallbacks() -> None:
    assert run_date({"data_interval_end": dt.datetime(2026, 1, 2, 23, tzinfo=dt.UTC)}) == dt.date(2026, 1, 2)
    assert run_date({"logical_date": dt.datetime(2026, 1, 3, tzinfo=dt.UTC)}) == dt.date(2026, 1, 3)
    run = SimpleNamespace(data_interval_end=None, logical_date=None, run_after=dt.datetime(2026, 1, 4))
    assert run_date({"dag_run": run}) == dt.date(2026, 1, 4)
    assert run_date({}) == dt.datetime.now(dt.UTC).date()
