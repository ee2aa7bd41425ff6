"""One try of a task through Airflow's own task runner, to see the state Airflow gives it: FAILED or UP_FOR_RETRY.

Whether a failed try is retried is Airflow's decision (``task_runner.run``: an ``AirflowFailException`` fails the
task, any other error is retried while tries are left), so a test of "not retried" must ask Airflow, not restate
its rule. Only the supervisor is stood in for: it would receive the task's messages (the terminal state among
them) over a socket, and here they are kept in a list. The task is run as the first of ``retries + 1`` tries, so
Airflow's answer is UP_FOR_RETRY for any error it retries.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import structlog
from airflow.sdk import DAG
from airflow.sdk.api.datamodels._generated import DagRun, DagRunType, TIRunContext
from airflow.sdk.execution_time import task_runner
from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

from tests.support.airflow_compat import encode_next_kwargs


class RecordingSupervisor:
    """Stands in for ``SUPERVISOR_COMMS``: keeps what the task sends, answers nothing."""

    def __init__(self) -> None:
        self.sent: list[Any] = []

    def send(self, msg: Any = None, *args: Any, **kwargs: Any) -> None:
        self.sent.append(msg)

    def __getattr__(self, name: str) -> Any:
        """Whatever else a runner of this Airflow calls to talk to its supervisor (``send_request`` on 3.0)."""
        return self.send


def run_one_try(
    operator: Any,
    *,
    retries: int = 3,
    context: dict[str, Any] | None = None,
    next_method: str | None = None,
    next_kwargs: dict[str, Any] | None = None,
) -> tuple[str, BaseException | None]:
    """Run try 1 of ``operator`` (built with ``retries``) in Airflow's ``task_runner.run``; return Airflow's state
    for it and the error. ``context`` adds to (or replaces) what Airflow hands the task; ``next_method`` and
    ``next_kwargs`` (plain, encoded here as this Airflow stores them) resume a deferred task with the triggerer's
    event."""
    operator.retries = retries
    if operator.has_dag() is False:
        DAG(dag_id="dexcare_retry_test", schedule=None).add_task(operator)
    now = dt.datetime.now(dt.UTC)
    dag_run = DagRun.model_construct(
        dag_id=operator.dag_id, run_id="manual__retry_test", logical_date=now, data_interval_start=now,
        data_interval_end=now, run_after=now, start_date=now, end_date=None, run_type=DagRunType.MANUAL, conf={},
        consumed_asset_events=[], state="running", partition_key=None, partition_date=None,
    )  # fmt: skip
    stored_kwargs = encode_next_kwargs(next_kwargs) if next_kwargs is not None else None
    server = TIRunContext.model_construct(
        dag_run=dag_run, max_tries=retries, should_retry=retries > 0, next_method=next_method,
        next_kwargs=stored_kwargs, variables=[], connections=[], xcom_keys_to_clear=[],
    )  # fmt: skip
    ti = RuntimeTaskInstance.model_construct(
        id=uuid.uuid4(), task_id=operator.task_id, dag_id=operator.dag_id, run_id=dag_run.run_id, try_number=1,
        map_index=-1, task=operator, max_tries=retries, start_date=now, bundle_instance=None,
    )  # fmt: skip
    ti._ti_context_from_server = server
    full_context = {**ti.get_template_context(), **(context or {})}
    previous = getattr(task_runner, "SUPERVISOR_COMMS", None)
    task_runner.SUPERVISOR_COMMS = RecordingSupervisor()
    try:
        state, _msg, error = task_runner.run(ti, full_context, structlog.get_logger())
    finally:
        if previous is None:
            del task_runner.SUPERVISOR_COMMS
        else:
            task_runner.SUPERVISOR_COMMS = previous
    return str(state.value), error
