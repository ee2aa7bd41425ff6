"""What ``dexcare.compat`` promises, checked against the Airflow this venv runs (``make test`` runs it on 3.0-3.3).

The behaviour each version gets (reuse on retry, reschedule mode, a new try of the sensor) is asserted where it is
used, in the operator, sensor and ``airflow dags test`` tests; here are the pieces those rely on.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
from pathlib import Path
from types import SimpleNamespace

import airflow
import airflow.exceptions
import pytest
from dexcare import compat
from dexcare.operators.start_report import DexCareStartReportOperator
from dexcare.sensors.report import STATE_KEY, DexCareReportSensor
from packaging.version import Version

from tests.support.airflow_compat import DagBag, import_string
from tests.support.helpers import run_trigger
from tests.support.task_runtime import Runtime

DAGS = Path(__file__).resolve().parents[1] / "dags"


def test_the_state_store_flag_matches_the_task_sdk():
    from airflow.sdk.execution_time import context

    assert hasattr(context, "TaskStateStoreAccessor") is compat.HAS_TASK_STATE_STORE
    assert compat.HAS_TASK_STATE_STORE is (Version(airflow.__version__) >= Version(compat.TASK_STATE_STORE_SINCE))
    message = compat.missing_task_state_store("it is so.")
    assert f"Airflow {airflow.__version__} has no task state store (Airflow 3.3 and later" in message


@pytest.mark.filterwarnings("ignore:airflow.exceptions.* is deprecated")  # 3.3 deprecates that home
@pytest.mark.parametrize(
    "name", ["AirflowException", "AirflowSensorTimeout", "AirflowRescheduleException", "TaskDeferred"]
)
def test_exceptions_are_the_ones_every_task_runner_catches(name):
    """3.0/3.1's task runner imports them from airflow.exceptions; on 3.2+ that is the SDK's class."""
    assert getattr(compat, name) is getattr(airflow.exceptions, name)


def test_the_daily_dags_retry_delay_doubles_on_this_airflow():
    """Airflow's own retry formula (3.0/3.1 take a bool, 3.2+ a multiplier that reads True as 1)."""
    from airflow.models.taskinstance import TaskInstance

    bag = DagBag(dag_folder=str(DAGS))
    task = bag.dags["dexcare_all_visits_report"].get_task("fetch.start_report")
    task.retry_delay, task.max_retry_delay = dt.timedelta(seconds=60), dt.timedelta(days=1)
    now = dt.datetime(2026, 11, 24, tzinfo=dt.UTC)

    def delay(try_number: int) -> float:
        ti = SimpleNamespace(
            task=task,
            try_number=try_number,
            end_date=now,
            dag_id="d",
            task_id=task.task_id,
            logical_date=now,
            retry_delay_override=None,
            log=logging.getLogger("test"),
        )
        return (TaskInstance.next_retry_datetime(ti) - now).total_seconds()

    # The formula adds a deterministic jitter in [0, 1) of the base: try 3's base is 60 * 2**2.
    assert 240 <= delay(3) < 480
    assert 60 <= delay(1) < 120


async def test_a_deferred_sensor_resumes_with_the_event_alone(dexcare_conn_id, sandbox):
    """``airflow dags test`` (every 3.x) resumes a deferred task with the event and no resume kwargs."""
    rt = Runtime()
    report_id = rt.run(
        DexCareStartReportOperator(
            task_id="start", report_type="virtual", report_start_date="2026-11-01", report_end_date="2026-11-03"
        )
    )
    # A resumed task is a new instance of the operator, in a new process.
    wait = functools.partial(
        DexCareReportSensor,
        task_id="wait",
        report_id=report_id,
        request_task_id="start",
        poll_interval=0.05,
        failed_grace_period=0.4,
        deferrable=True,
    )
    ctx = rt.context("wait")
    with pytest.raises(compat.TaskDeferred) as deferred:
        wait().execute(ctx)
    classpath, kwargs = deferred.value.trigger.serialize()
    event = await run_trigger(import_string(classpath)(**kwargs))
    assert deferred.value.kwargs in (None, {})  # nothing rides on the resume kwargs
    assert compat.state_store_for_the_try(ctx).get(STATE_KEY)["report_id"] == report_id
    assert wait().resume_execution(deferred.value.method_name, {"event": event}, ctx) == report_id


def test_the_ui_gets_the_declared_connection_form_without_deprecation_warnings():
    """What the UI's connection form is built from (the api-server's HookMetaService). 3.0/3.1 take it from the
    hook's own methods, 3.2+ from the provider info, and warn about those methods."""
    import importlib.util
    import warnings

    from airflow.api_fastapi.core_api.services.ui.connections import HookMetaService
    from dexcare.hooks.dexcare import DexCareHook

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        meta = next(h for h in HookMetaService.hook_meta_data() if h.connection_type == "dexcare")
    assert not [w for w in caught if "DexCareHook" in str(w.message)]
    if meta.standard_fields is None and importlib.util.find_spec("flask_appbuilder") is None:
        # Airflow 3.0 customises no provider's form without the FAB provider installed (HttpHook's neither);
        # with it, this is what it reads.
        assert airflow.__version__.startswith("3.0.")
        behaviour = DexCareHook.get_ui_field_behaviour()
        assert behaviour["relabeling"] == {"host": "REST endpoint", "password": "Reporting service key"}
        assert set(behaviour["hidden_fields"]) == {"schema", "port", "login"}
        return
    fields = meta.standard_fields.model_dump()
    assert fields["host"]["title"] == "REST endpoint" and fields["host"]["placeholder"].startswith("https://")
    assert fields["password"]["title"] == "Reporting service key"
    assert fields["login"]["hidden"] and fields["port"]["hidden"]
    assert set(meta.extra_fields) == {"timeout", "verify"}
