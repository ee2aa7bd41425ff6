"""The daily DAG's ``plan`` task: which reports a run asks for, over which window, into which storage, and the
checks of the run's settings and connections, all made before DexCare is asked for anything."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from typing import Any

from dexcare.compat import AirflowFailException
from dexcare.exceptions import DexCareLoadError, DexCareStorageError, DexCareValidationError
from dexcare.hooks.dexcare import DexCareHook
from dexcare.load.connection import warehouse_type
from dexcare.report import ReportRequest
from dexcare.storage import (
    check_storage,
    check_storage_reaches_every_worker,
    executor_setting,
    run_directory,
    storage_choice,
)
from dexcare.task_context import run_end_date

log = logging.getLogger(__name__)

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
                "report_start_date": start_date.isoformat(),  # build() checked them and kept them as they are
                "report_end_date": end_date.isoformat(),
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
