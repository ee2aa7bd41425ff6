"""The daily DAG as the scheduler sees it: imports cleanly, the graph and params the runbook describes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from dexcare.compat import HAS_DEADLINE_ALERTS, AirflowFailException
from dexcare.daily.callbacks import failure_callbacks
from dexcare.daily.plan import plan_reports
from dexcare.daily.queues import queue
from dexcare.exceptions import DexCareStorageError, DexCareValidationError

from tests.support.airflow_compat import DagBag, ParamValidationError
from tests.support.helpers import dexcare_connection

DAGS = Path(__file__).resolve().parents[2] / "dags"
DAG_ID = "dexcare_all_visits_report"


@pytest.fixture(scope="module")
def dag():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bag = DagBag(dag_folder=str(DAGS))
    assert bag.import_errors == {}
    ours = [w for w in caught if "dexcare" in str(w.filename) or "dags/" in str(w.filename)]
    assert ours == [], [str(w.message) for w in ours]
    return bag.dags[DAG_ID]


def test_task_graph(dag):
    assert sorted(dag.task_ids) == [
        "fetch.download_report",
        "fetch.start_report",
        "fetch.wait_for_report",
        "load_reports",
        "plan",
    ]
    edges = {(t.task_id, d) for t in dag.tasks for d in t.downstream_task_ids}
    assert edges == {
        # every task of the mapped group reads its report type and window from plan
        ("plan", "fetch.start_report"),
        ("plan", "fetch.wait_for_report"),
        ("plan", "fetch.download_report"),
        ("fetch.start_report", "fetch.wait_for_report"),
        ("fetch.wait_for_report", "fetch.download_report"),
        ("fetch.download_report", "load_reports"),
    }
    assert dag.get_task("fetch.wait_for_report").deferrable is True
    assert dag.max_active_runs == 1
    assert all(t.retries >= 1 for t in dag.tasks)
    assert all(t.retry_exponential_backoff for t in dag.tasks if t.task_id != "fetch.wait_for_report")
    outlets = {a.name for a in dag.get_task("load_reports").outlets}
    assert outlets == {"dexcare.avr_virtual", "dexcare.avr_retail", "dexcare.avr_provider_booking"}


def test_runbook_names_every_task(dag):
    for task_id in ("start_report", "wait_for_report", "download_report", "load_reports", "plan"):
        assert f"`{task_id}`" in dag.doc_md or f"fetch.{task_id}" in dag.doc_md


def test_params_have_descriptions_and_validate(dag):
    from airflow.sdk.definitions.param import ParamsDict
    for name, param in dag.params.items():
        assert param.description, name
    dag.params.validate()
    bad = ParamsDict({k: v for k, v in dag.params.items()})
    with pytest.raises(ParamValidationError, match="'telehealth' is not one of"):
        bad["report_types"] = ["telehealth"]
    with pytest.raises(ParamValidationError, match="lookback_days"):
        bad["lookback_days"] = -1


def form_field(param: dict) -> tuple[str, bool]:
    """The trigger form's field for a Param as the api-server serves it (``{"value", "schema", ...}``), and
    whether the form requires it: the rules of FieldSelector.tsx and isParamRequired.tsx (Airflow 3.0 to 3.3)."""
    schema = param["schema"]
    types = schema.get("type")
    kind = next((t for t in types if t != "null"), "string") if isinstance(types, list) else types
    required = bool(types) and not (isinstance(types, list) and "null" in types)
    if kind == "array" and isinstance(schema.get("examples"), list):
        return "multi-select", required
    if kind == "array" and schema.get("items", {}).get("type") in (None, "string"):
        return "text, one string a line", required
    return str(kind), required


#: The multi-select rule as the installed UI bundle has it (minified): an array whose schema has examples.
MULTI_SELECT_RULE = re.compile(r"""==[`"]array[`"]&&\(?Array\.isArray\(\w+\.examples\)""")


def test_report_types_and_history_are_pickers_and_history_is_optional(dag):
    """The trigger form draws both as multi-select pickers of the report types; history may be left empty,
    which the picker sends as null, and a run's params still validate."""
    import airflow

    from tests.support.airflow_compat import DagSerialization

    bundle = "".join(p.read_text(errors="replace") for p in
                     (Path(airflow.__file__).parent / "ui" / "dist" / "assets").glob("index-*.js"))
    assert MULTI_SELECT_RULE.search(bundle), "this Airflow's trigger form no longer picks a multi-select so"
    served = DagSerialization.from_dict(DagSerialization.to_dict(dag)).params  # what the api-server reads
    params = {name: param.dump() for name, param in served.items()}
    assert form_field(params["report_types"]) == ("multi-select", True)
    assert form_field(params["history"]) == ("multi-select", False)
    for name in ("report_types", "history"):
        assert params[name]["schema"]["examples"] == ["virtual", "retail", "provider_booking"], name
        assert set(params[name]["schema"]["values_display"]) == set(params[name]["schema"]["examples"]), name
    from airflow.sdk.definitions.param import ParamsDict

    run = ParamsDict({k: v for k, v in dag.params.items()})
    run["history"] = None  # a cleared picker
    run["history"] = ["provider_booking"]
    run.validate()
    with pytest.raises(ParamValidationError, match="'telehealth' is not one of"):
        run["history"] = ["telehealth"]
    with pytest.raises(ParamValidationError, match="report_types"):
        run["report_types"] = None  # a cleared picker: report_types stays required


@pytest.fixture(autouse=True)
def connections(monkeypatch):
    """The run's two connections, as users give them; plan looks both up before anything is requested."""
    monkeypatch.setenv("AIRFLOW_CONN_DEXCARE_DEFAULT", dexcare_connection("https://dexcare.example"))
    monkeypatch.setenv("AIRFLOW_CONN_DEXCARE_WAREHOUSE", json.dumps({"conn_type": "postgres", "host": "db.example"}))


def context(**params):
    import datetime as dt
    from types import SimpleNamespace

    base = {
        "report_types": ["virtual", "retail"],
        "lookback_days": 10,
        "start_date": None,
        "end_date": None,
        "storage": "s3://aws_default@bucket/dexcare/",
        "dexcare_conn_id": "dexcare_default",
        "warehouse_conn_id": "dexcare_warehouse",
    }
    return {
        "params": {**base, **params},
        "data_interval_end": dt.datetime(2026, 11, 21, tzinfo=dt.UTC),
        "dag": SimpleNamespace(dag_id=DAG_ID),
        "run_id": "scheduled__2026-11-20T00:00:00+00:00",
    }


def test_window_ends_at_the_data_interval_end_and_looks_back():
    run_dir = f"s3://aws_default@bucket/dexcare/{DAG_ID}/scheduled__2026-11-20T00_00_00_00_00/"
    assert plan_reports(context(), executor="LocalExecutor") == [
        {"report_type": "virtual", "report_start_date": "2026-11-11", "report_end_date": "2026-11-21",
         "destination": run_dir},
        {"report_type": "retail", "report_start_date": "2026-11-11", "report_end_date": "2026-11-21",
         "destination": run_dir},
    ]
    override = plan_reports(
        context(start_date="2026-10-01", end_date="2026-10-05", report_types=["retail"]), executor="LocalExecutor"
    )
    assert override == [
        {"report_type": "retail", "report_start_date": "2026-10-01", "report_end_date": "2026-10-05",
         "destination": run_dir}
    ]
    with pytest.raises(DexCareValidationError, match="give both"):
        plan_reports(context(start_date="2026-10-01"), executor="LocalExecutor")
    with pytest.raises(DexCareValidationError, match="is after end_date"):
        plan_reports(context(start_date="2026-10-09", end_date="2026-10-05"), executor="LocalExecutor")


def test_plan_checks_the_storage_against_the_executor_before_anything_else(tmp_path, monkeypatch):
    monkeypatch.delenv("AIRFLOW__DEXCARE__REPORT_STORAGE", raising=False)
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path))
    with pytest.raises(DexCareStorageError, match=r"\(the default, as \[dexcare\] report_storage is not set\)"):
        plan_reports(context(storage=None), executor="CeleryExecutor")
    with pytest.raises(DexCareStorageError, match=r"\(the run's storage param\).*KubernetesExecutor"):
        plan_reports(context(storage=f"{tmp_path}/local/", start_date="2026-10-09"), executor="KubernetesExecutor")
    monkeypatch.setenv("AIRFLOW__DEXCARE__REPORT_STORAGE", "file:///mnt/shared%20volume/dexcare/")
    (entry, _) = plan_reports(context(storage=None), executor="CeleryExecutor")
    assert entry["destination"].startswith(f"file:///mnt/shared%20volume/dexcare/{DAG_ID}/scheduled__")
    (entry, _) = plan_reports(context(storage=None), executor="LocalExecutor")
    assert entry["destination"].startswith("file:///mnt/shared%20volume/")
    monkeypatch.delenv("AIRFLOW__DEXCARE__REPORT_STORAGE")
    (entry, _) = plan_reports(context(storage=None), executor="LocalExecutor")
    assert entry["destination"].startswith((tmp_path / "dexcare-reports" / DAG_ID).as_uri())


def test_the_plan_task_fails_a_bad_setting_without_retries(dag, tmp_path, monkeypatch):
    """Retries with backoff would page minutes late for an error no retry can fix; the message stays whole."""
    monkeypatch.delenv("AIRFLOW__DEXCARE__REPORT_STORAGE", raising=False)
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path))
    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", "CeleryExecutor")
    plan = dag.get_task("plan")
    assert plan.retries >= 1  # the DAG's retries stay for what a retry can fix
    with pytest.raises(AirflowFailException) as refused:
        plan.python_callable(**context(storage=None))
    assert "[dexcare] report_storage" in str(refused.value) and "Not retried" in str(refused.value)
    assert refused.value.__cause__ is None and refused.value.__suppress_context__
    with pytest.raises(AirflowFailException, match="give both"):
        plan.python_callable(**context(start_date="2026-10-01"))
    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", "LocalExecutor")
    assert len(plan.python_callable(**context())) == 2


def test_queues_come_from_the_environment():
    assert queue("fetch", {}) == {} and queue("load", {"DEXCARE_LOAD_QUEUE": " "}) == {}
    env = {"DEXCARE_FETCH_QUEUE": "near-internet", "DEXCARE_LOAD_QUEUE": "near-warehouse"}
    assert queue("fetch", env) == {"queue": "near-internet"}
    assert queue("load", env) == {"queue": "near-warehouse"}


def test_failure_notifier_is_configured_from_the_environment():
    assert failure_callbacks({}) == []
    (pager,) = failure_callbacks(
        {
            "DEXCARE_FAILURE_NOTIFIER": "airflow.providers.smtp.notifications.smtp.SmtpNotifier",
            "DEXCARE_FAILURE_NOTIFIER_KWARGS": json.dumps({"to": "oncall@example.com"}),
        }
    )
    assert pager.notifier[0].__name__ == "SmtpNotifier"
    with pytest.raises(DexCareValidationError, match="importable notifier"):
        failure_callbacks({"DEXCARE_FAILURE_NOTIFIER": "nowhere.Notifier"})


PARSE_PROBE = r"""
import json, sys, time
events = []
def audit(event, args):
    if event in ("socket.connect", "socket.getaddrinfo", "sqlite3.connect", "sqlite3.connect/handle"):
        events.append(event)
import airflow.sdk, dexcare  # the cost of Airflow itself is not the DAG's
sys.path.insert(0, sys.argv[2])
from tests.support.airflow_compat import DagBag
started = time.perf_counter()
sys.addaudithook(audit)
bag = DagBag(dag_folder=sys.argv[1])
elapsed = time.perf_counter() - started
print(json.dumps({"events": events, "errors": {str(k): str(v) for k, v in bag.import_errors.items()},
                  "dags": list(bag.dags), "seconds": elapsed}))
"""


def test_parsing_touches_no_network_or_database_and_is_cheap(tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", PARSE_PROBE, str(DAGS), str(DAGS.parent)],
        capture_output=True,
        text=True,
        timeout=120,
        # PYTHONPATH kept: a checkout's own plugins, not the installed package's, are what the DAG imports
        env={"AIRFLOW_HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
             "PYTHONPATH": os.environ.get("PYTHONPATH", "")},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    # Airflow 3.0 has no Deadline Alerts: the freshness watchdog DAG stands in (dexcare.daily.freshness)
    watchdog = [] if HAS_DEADLINE_ALERTS else [f"{DAG_ID}_freshness"]
    assert result["errors"] == {} and sorted(result["dags"]) == sorted([DAG_ID, *watchdog])
    assert result["events"] == []
    print(f"DAG parse time: {result['seconds'] * 1000:.0f} ms")


def test_the_download_recognises_the_header_by_the_keys_the_load_uses(dag):
    """A first line without the run's key columns is refused by the download, before XCom or lineage see it."""
    download = dag.get_task("fetch.download_report")
    assert download.key_columns == dag.get_task("load_reports").key_columns == "{{ params.key_columns }}"
    assert "key_columns" in download.template_fields


def test_the_plan_task_refuses_storage_that_cannot_work_and_keeps_what_can(dag, tmp_path, monkeypatch):
    """Each refused value once fails at once in the DAG's plan callable (a bare ValueError was retried, the others
    passed); the valid forms still give the run its directory. tests/storage has every refused value."""
    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", "LocalExecutor")
    secret = "wJalrXUtnFEMI-K7MDENG-SECRET-5e3f"
    plan = dag.get_task("plan")
    for bad in ("s3x://aws_default@bucket/", "s3://", "http://files.example/", "ftp//nowhere::bucket",
                f"s3://AKIAEXAMPLE:{secret}@bucket/"):
        with pytest.raises(AirflowFailException, match=r"\(the run's storage param\).*Not retried") as refused:
            plan.python_callable(**context(storage=bad))
        assert secret not in str(refused.value)
    run_dir = f"{DAG_ID}/scheduled__2026-11-20T00_00_00_00_00/"
    for storage, destination in [
        ("s3://dexcare_s3@bucket/prefix/", f"s3://dexcare_s3@bucket/prefix/{run_dir}"),
        ((tmp_path / "shared vol").as_uri() + "/", f"{(tmp_path / 'shared vol').as_uri()}/{run_dir}"),
        (f"{tmp_path}/absolute/", f"{(tmp_path / 'absolute').as_uri()}/{run_dir}"),
    ]:
        (entry, _) = plan.python_callable(**context(storage=storage))
        assert entry["destination"] == destination


def test_plan_checks_both_connections_before_anything_is_requested(monkeypatch):
    """A missing or mistyped connection fails plan, naming the id and the param; never a field of the connection."""
    password = "pw-NEVER-SHOWN-31337"
    monkeypatch.setenv("AIRFLOW_CONN_WEB_ONLY", json.dumps({"conn_type": "http", "host": "h", "password": password}))
    monkeypatch.setenv("AIRFLOW_CONN_PG", json.dumps({"conn_type": "postgres", "host": "h", "password": password}))
    monkeypatch.setenv("AIRFLOW_CONN_MSSQL_WH", json.dumps({"conn_type": "mssql", "host": "h", "password": password}))
    refused = {
        "'nope' (the run's dexcare_conn_id param) does not exist": {"dexcare_conn_id": "nope"},
        "'nope' (the run's warehouse_conn_id param) does not exist": {"warehouse_conn_id": "nope"},
        "'pg' (the run's dexcare_conn_id param) is of type 'postgres'": {"dexcare_conn_id": "pg"},
        "Connection 'web_only' is of type 'http'; the warehouse must be": {"warehouse_conn_id": "web_only"},
    }
    for says, params in refused.items():
        with pytest.raises(DexCareValidationError) as error:
            plan_reports(context(**params), executor="LocalExecutor")
        assert says in str(error.value) and "Fix:" in str(error.value)
        assert password not in str(error.value)
    # an HTTP connection is what DexCareHook extends, and it reads its extra; SQL Server is a warehouse
    assert plan_reports(context(dexcare_conn_id="web_only", warehouse_conn_id="mssql_wh"), executor="LocalExecutor")
