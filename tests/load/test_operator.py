"""The operator, run the way a worker runs it: a real Airflow connection given as an environment variable.

The connection's type picks the warehouse, so the same test runs for a ``postgres`` and an ``mssql``
connection (the latter against a real SQL Server only when ``DEXCARE_TEST_MSSQL_URI`` is set).
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from airflow.exceptions import AirflowProviderDeprecationWarning
from dexcare.exceptions import DexCareLoadError
from dexcare.operators.load_reports import DexCareLoadReportsOperator
from dexcare.task_context import run_end_date as run_date

from tests.load.conftest import postgres_only, report


@pytest.fixture
def warehouse_conn(warehouse, monkeypatch) -> str:
    monkeypatch.setenv("AIRFLOW_CONN_DEXCARE_WAREHOUSE", warehouse.airflow_connection())
    return "dexcare_warehouse"


def test_operator_loads_through_the_airflow_connection(warehouse_conn, warehouse, write_csv, schema, capsys) -> None:
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
    data = warehouse.rows(schema, "avr_virtual", lineage=True)
    assert [(r["visit_id"], r["visit_status"]) for r in data] == [("v1", "b"), ("v2", "c")]
    assert data[0]["_dexcare_window_end"] == dt.date(2026, 11, 23)  # no window: the run's date
    audit = [(r["dag_id"], r["run_id"]) for r in warehouse.audit(schema)]
    assert audit == [("dexcare_daily", "scheduled__2026-11-23T00:00:00+00:00")] * 2
    # One readable line per table (Airflow's task logger is structlog, printing to the captured streams).
    lines = [line for line in output.splitlines() if "Loaded " in line]
    assert len(lines) == 2, output
    assert any(f"Loaded {schema}.avr_virtual: 1 report(s), 3 rows in file(s), 1 duplicates" in x for x in lines)
    assert "SECRET-STATUS-91" not in output  # never row contents


def test_operator_rejects_bad_configuration_at_parse_time() -> None:
    with pytest.raises(DexCareLoadError):
        DexCareLoadReportsOperator(task_id="load", reports=[], key_columns={"virtul": ["visit_id"]})


def test_operator_without_reports_fails() -> None:
    op = DexCareLoadReportsOperator(task_id="load", reports=[])
    with pytest.raises(DexCareLoadError, match="No reports"):
        op.execute({})


def test_run_date_fallbacks() -> None:
    assert run_date({"data_interval_end": dt.datetime(2026, 1, 2, 23, tzinfo=dt.UTC)}) == dt.date(2026, 1, 2)
    assert run_date({"logical_date": dt.datetime(2026, 1, 3, tzinfo=dt.UTC)}) == dt.date(2026, 1, 3)
    run = SimpleNamespace(data_interval_end=None, logical_date=None, run_after=dt.datetime(2026, 1, 4))
    assert run_date({"dag_run": run}) == dt.date(2026, 1, 4)
    assert run_date({}) == dt.datetime.now(dt.UTC).date()


@postgres_only
def test_postgres_conn_id_still_works_with_a_deprecation_warning(warehouse_conn, warehouse, write_csv, schema) -> None:
    with pytest.warns(AirflowProviderDeprecationWarning, match="warehouse_conn_id"):
        op = DexCareLoadReportsOperator(task_id="load", reports=[report(write_csv("visitId\nv1\n"))],
                                        postgres_conn_id=warehouse_conn, schema=schema)
    assert op.warehouse_conn_id == warehouse_conn
    op.execute({"run_id": "manual__1"})
    assert [r["visit_id"] for r in warehouse.rows(schema, "avr_virtual")] == ["v1"]


def test_a_warehouse_of_another_type_is_refused_clearly(write_csv, monkeypatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_DEXCARE_WAREHOUSE", json.dumps({"conn_type": "mysql", "host": "db"}))
    op = DexCareLoadReportsOperator(task_id="load", reports=[report(write_csv("visitId\nv1\n"))])
    with pytest.raises(DexCareLoadError, match=r"'mysql'.*'postgres' or an 'mssql'"):
        op.execute({})


def test_an_mssql_connection_goes_through_pymssql_and_its_bundled_freetds(write_csv, monkeypatch) -> None:
    """Offline: the connection's type picks pymssql (via MsSqlHook), whose FreeTDS really tries the network.

    Nothing listens on the loopback port, so FreeTDS's own "unable to connect" (DB-Lib error 20009) comes back,
    which proves the driver and its bundled library load and that no PostgreSQL path was taken.
    """
    import socket

    import pymssql
    from dexcare.load.connection import connect

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again before the connect below: nothing listens there
    monkeypatch.setenv("AIRFLOW_CONN_DEXCARE_WAREHOUSE", json.dumps(
        {"conn_type": "mssql", "host": "127.0.0.1", "port": port, "login": "sa", "password": "x",
         "extra": {"login_timeout": 5}}))
    with pytest.raises(pymssql.OperationalError) as err:
        connect("dexcare_warehouse")
    assert err.value.args[0][0] == 20009 and b"Connection refused" in err.value.args[0][1]


def test_history_names_report_types_checked_when_the_dag_is_parsed() -> None:
    from dexcare.exceptions import DexCareSchemaError

    with pytest.raises(DexCareSchemaError, match=r"history: 'virtul' is not a report type"):
        DexCareLoadReportsOperator(task_id="load", reports=[], history=["virtul"])
    for history in ("{{ params.history }}", "retail", ["virtual", "provider_booking"], None):
        DexCareLoadReportsOperator(task_id="load", reports=[], history=history)  # a template waits to be rendered


@postgres_only
def test_the_operator_keeps_the_history_it_is_given(warehouse_conn, warehouse, write_csv, schema) -> None:
    context = {"dag": SimpleNamespace(dag_id="d"), "run_id": "r", "data_interval_end": None}
    op = DexCareLoadReportsOperator(task_id="load", reports=[report(write_csv("visitId,visitStatus\nv1,a\n"))],
                                    schema=schema, history="virtual")
    summary = op.execute(context)
    assert summary["tables"]["avr_virtual"]["history_rows"] == 1
    assert [r[0] for r in warehouse.query(f'SELECT visit_status FROM "{schema}".avr_virtual_history')] == ["a"]


def test_a_cleared_load_whose_files_were_deleted_only_finishes_the_clean_up(
    warehouse_conn, warehouse, write_csv, schema, caplog, capfd
) -> None:
    """On-call clears load_reports after its committed load deleted the files (or after its clean-up failed):
    the new try finds the reports in load_audit, loads nothing again, and returns the earlier load's summary."""
    from tests.support.helpers import logged

    reports = [report(write_csv("visitId,visitStatus\nv1,a\nv1,b\nv2,c\n")),
               report(write_csv("Visit ID,Status\nr1,x\n"), "retail")]
    context = {"dag": SimpleNamespace(dag_id="d"), "run_id": "r", "data_interval_end": None}
    first = DexCareLoadReportsOperator(task_id="load", reports=reports, schema=schema, delete_files=True)
    loaded = first.execute(context)
    assert not any(Path(r["uri"]).exists() for r in reports)
    logged(caplog, capfd)
    again = DexCareLoadReportsOperator(task_id="load", reports=reports, schema=schema, delete_files="true")
    summary = again.execute(context)
    json.dumps(summary)
    assert summary["already_loaded"] is True
    # Everything but the volume verdict, which was the committed load's own and is not judged again.
    assert summary["tables"] == {t: {k: v for k, v in totals.items() if k != "volume"}
                                 for t, totals in loaded["tables"].items()}
    assert [r["report_id"] for r in summary["reports"]] == [r["report_id"] for r in reports]
    assert len(warehouse.audit(schema)) == 2, "nothing was loaded again"
    output = logged(caplog, capfd)
    assert "Already loaded" in output and "committed by an earlier try" in output
    assert "not on this worker" not in output


@postgres_only
def test_without_deletion_a_cleared_load_loads_again(warehouse_conn, warehouse, write_csv, schema) -> None:
    """The files are still there, so a cleared load reads them again (changed settings take effect); unchanged
    rows are not rewritten."""
    reports = [report(write_csv("visitId,visitStatus\nv1,a\n"))]
    context = {"dag": SimpleNamespace(dag_id="d"), "run_id": "r", "data_interval_end": None}
    for _ in range(2):
        summary = DexCareLoadReportsOperator(task_id="load", reports=reports, schema=schema).execute(context)
    assert "already_loaded" not in summary and summary["tables"]["avr_virtual"]["unchanged"] == 1
    assert len(warehouse.audit(schema)) == 2


# --- Issue 21: the volume guard through the operator ----------------------------------------------------------


class _Events:
    """``outlet_events`` as the task runner hands it: an accessor per asset with a settable ``extra`` (by name:
    Airflow 3.0's Asset is not hashable)."""

    def __init__(self) -> None:
        self.accessors: dict[str, SimpleNamespace] = {}

    def __getitem__(self, asset):
        return self.accessors.setdefault(asset.name, SimpleNamespace(extra=None))


@postgres_only
def test_a_half_size_day_stays_green_with_the_warning_in_the_asset_extra(warehouse_conn, write_csv, schema,
                                                                         monkeypatch, caplog) -> None:
    from airflow.sdk import Asset

    end = dt.date(2026, 11, 20)
    for day in range(5):
        day_end = end - dt.timedelta(days=5 - day)
        rows = "".join(f"d{day}v{i},a\n" for i in range(10))
        DexCareLoadReportsOperator(task_id="load", reports=[report(write_csv("visitId,visitStatus\n" + rows),
                                                                   end=day_end)], schema=schema).execute(
            {"dag": SimpleNamespace(dag_id="d"), "run_id": f"r{day}", "data_interval_end": None})
    asset = Asset(name="dexcare.avr_virtual", uri="dexcare://warehouse/avr_virtual")
    half = report(write_csv("visitId,visitStatus\n" + "".join(f"h{i},a\n" for i in range(4))), end=end)
    monkeypatch.setenv("AIRFLOW__DEXCARE__VOLUME_MIN_SHARE", '{"virtual": 0.2}')  # below it the op's own wins
    events = _Events()
    op = DexCareLoadReportsOperator(task_id="load", reports=[half], schema=schema, outlets=[asset],
                                    volume_min_share={"virtual": 0.5})
    op.execute({"dag": SimpleNamespace(dag_id="d"), "run_id": "half", "data_interval_end": None,
                "outlet_events": events})
    assert events[asset].extra["volume"] == {"verdict": "warn", "rows": 4, "baseline_median": 10.0,
                                             "baseline_loads": 5, "ratio": 0.4, "min_share": 0.5}
    # The deployment's setting applies when the task gives none.
    again = report(write_csv("visitId,visitStatus\n" + "".join(f"k{i},a\n" for i in range(3))), end=end)
    summary = DexCareLoadReportsOperator(task_id="load", reports=[again], schema=schema).execute(
        {"dag": SimpleNamespace(dag_id="d"), "run_id": "third", "data_interval_end": None})
    assert summary["tables"]["avr_virtual"]["volume"]["min_share"] == 0.2


def test_volume_settings_are_checked_when_the_dag_is_parsed() -> None:
    from dexcare.exceptions import DexCareSchemaError

    with pytest.raises(DexCareSchemaError, match=r"accept_volume: 'virtul' is not a report type"):
        DexCareLoadReportsOperator(task_id="load", reports=[], accept_volume=["virtul"])
    with pytest.raises(DexCareSchemaError, match=r"volume_min_share\['virtual'\]: 2 is not a share"):
        DexCareLoadReportsOperator(task_id="load", reports=[], volume_min_share={"virtual": 2})
    for value in ("{{ params.accept_volume }}", True, ["retail"]):
        DexCareLoadReportsOperator(task_id="load", reports=[], accept_volume=value,
                                   volume_min_share="{{ params.volume_min_share }}")


@postgres_only
def test_the_load_and_its_clean_up_parse_each_uri_once(warehouse_conn, write_csv, schema, monkeypatch) -> None:
    """The hand-off record is read once: the load opens, and the clean-up deletes, through the location it
    parsed (dexcare.handoff), rather than each parsing the URI again."""
    from dexcare.storage import ReportLocation

    parsed: list[str] = []
    real = ReportLocation.parse.__func__

    def parse(cls, where, *args, **kwargs):
        if not isinstance(where, ReportLocation):
            parsed.append(str(where))
        return real(cls, where, *args, **kwargs)

    monkeypatch.setattr(ReportLocation, "parse", classmethod(parse))
    reports = [report(write_csv("visitId,visitStatus\nv1,a\n")), report(write_csv("Visit ID,Status\nr1,x\n"), "retail")]
    context = {"dag": SimpleNamespace(dag_id="d"), "run_id": "r", "data_interval_end": None}
    DexCareLoadReportsOperator(task_id="load", reports=reports, schema=schema, delete_files=True).execute(context)
    assert not any(Path(r["uri"]).exists() for r in reports)  # loaded and deleted
    assert sorted(parsed) == sorted(r["uri"] for r in reports)
