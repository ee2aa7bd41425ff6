"""Every difference between the Airflow 3 minors this package supports (3.0 to 3.3), in one place.

Airflow 3.0 and 3.1 keep some exceptions in ``airflow.exceptions`` that 3.2 moved to ``airflow.sdk.exceptions``
(``AirflowException`` came in 3.1, the sensor and deferral exceptions in 3.2; there they are the same classes).
Their ``retry_exponential_backoff`` is a bool (True doubles the delay), where 3.2 takes the multiplier and reads
True as 1, no backoff at all. Their ``ObjectStoragePath`` (universal_pathlib 0.2) is also a ``pathlib.Path``. They
label the connection form only from the hook's own ``get_ui_field_behaviour``, which 3.2 deprecates for the
provider info's declarative ``ui-field-behaviour``.
Only Airflow 3.3 has the per-task state store, which survives retries and reschedules. What the package does
without it:

- reuse of a running report on task retry: off; a retry starts a new report (it never guesses which report an
  earlier try started);
- the sensor's ``mode="reschedule"``: refused, because its FAILED grace period and resubmissions would be
  forgotten between pokes;
- a new try of the sensor waits on the report it was given again, not on one an earlier try requested again;
- a deferred sensor resuming under ``airflow dags test`` (whose inline triggerer hands back the event alone, on
  every 3.x): its wait state is read from an XCom of its own, which Airflow keeps while a task is deferred.

Each degradation is logged once, in the task's log, with the Airflow version that has the feature.
"""

from __future__ import annotations

from pathlib import PurePath
from typing import TYPE_CHECKING, Any, TypeVar

from airflow import __version__ as AIRFLOW_VERSION
from packaging.version import Version

try:  # Airflow >= 3.2 (3.1 has AirflowException there, but not the rest)
    from airflow.sdk.exceptions import (
        AirflowException,
        AirflowRescheduleException,
        AirflowSensorTimeout,
        TaskDeferred,
    )
except ImportError:  # Airflow 3.0, 3.1
    from airflow.exceptions import (  # type: ignore[no-redef]
        AirflowException,
        AirflowRescheduleException,
        AirflowSensorTimeout,
        TaskDeferred,
    )

if TYPE_CHECKING:
    from airflow.sdk import Context

_Hook = TypeVar("_Hook", bound=type)

__all__ = [
    "AIRFLOW_VERSION",
    "HAS_TASK_STATE_STORE",
    "RETRY_EXPONENTIAL_BACKOFF",
    "TASK_STATE_STORE_SINCE",
    "AirflowException",
    "AirflowRescheduleException",
    "AirflowSensorTimeout",
    "TaskDeferred",
    "connection_form_before_3_2",
    "is_local_path",
    "load_resume_state",
    "missing_task_state_store",
    "save_resume_state",
    "task_state_store",
]

#: The first Airflow with ``context["task_state_store"]``.
TASK_STATE_STORE_SINCE = "3.3"
HAS_TASK_STATE_STORE = Version(AIRFLOW_VERSION).release[:2] >= (3, 3)
#: XCom key prefix of state kept for a resume when there is no task state store.
_RESUME_XCOM_PREFIX = "dexcare_resume_"
_AIRFLOW_3_2_PLUS = Version(AIRFLOW_VERSION).release[:2] >= (3, 2)
#: ``retry_exponential_backoff`` that doubles the retry delay each time, on every Airflow 3.
RETRY_EXPONENTIAL_BACKOFF: float | bool = 2.0 if _AIRFLOW_3_2_PLUS else True


def connection_form_before_3_2(hook_class: _Hook) -> _Hook:
    """Give Airflow 3.0/3.1 the connection form the provider info declares: labels, hidden fields, placeholders,
    and the extra fields (``timeout``, ``verify``).

    They read the form only from ``get_ui_field_behaviour`` / ``get_connection_form_widgets`` defined on the hook
    class itself (the UI builds the widgets with stand-ins for WTForms). 3.2 and later read the provider info and
    warn about those methods, so they are added on older Airflow only, from the same declaration.
    """
    if _AIRFLOW_3_2_PLUS:
        return hook_class

    def declared(cls: type) -> dict[str, Any]:
        from dexcare.get_provider_info import get_provider_info

        name = f"{cls.__module__}.{cls.__qualname__}"
        return next((c for c in get_provider_info()["connection-types"] if c["hook-class-name"] == name), {})

    def get_ui_field_behaviour(cls: type) -> dict[str, Any]:
        return {key.replace("-", "_"): value for key, value in declared(cls).get("ui-field-behaviour", {}).items()}

    def get_connection_form_widgets(cls: type) -> dict[str, Any]:
        from flask_babel import lazy_gettext
        from wtforms import BooleanField, IntegerField, StringField

        kinds = {"integer": IntegerField, "number": IntegerField, "boolean": BooleanField}
        widgets = {}
        for field, spec in declared(cls).get("conn-fields", {}).items():
            types = spec.get("schema", {}).get("type", "string")
            kind = next((kinds[t] for t in ([types] if isinstance(types, str) else types) if t in kinds), StringField)
            widgets[field] = kind(lazy_gettext(spec["label"]), description=spec.get("description", ""))
        return widgets

    hook_class.get_ui_field_behaviour = classmethod(get_ui_field_behaviour)  # type: ignore[attr-defined]
    hook_class.get_connection_form_widgets = classmethod(get_connection_form_widgets)  # type: ignore[attr-defined]
    return hook_class


def is_local_path(path: Any) -> bool:
    """A path on this machine's file system, not an ``ObjectStoragePath`` on a store (which 3.0/3.1 also make a
    ``pathlib.Path``); a local ``ObjectStoragePath`` has a ``protocol`` too, so callers turn it into a Path first."""
    return isinstance(path, PurePath) and not hasattr(path, "protocol")


def task_state_store(context: Context) -> Any | None:
    """Airflow 3.3's per-task state store (kept across retries and reschedules), or None on older Airflow."""
    return context.get("task_state_store")


def missing_task_state_store(consequence: str) -> str:
    """The one log line that says what this Airflow cannot do, and which Airflow can."""
    return (
        f"Airflow {AIRFLOW_VERSION} has no task state store (Airflow {TASK_STATE_STORE_SINCE} and later have "
        f"one): {consequence}"
    )


def save_resume_state(context: Context, key: str, value: dict[str, Any]) -> None:
    """Keep ``value`` where the same try finds it again after a deferral, also under ``airflow dags test``.

    The task state store where there is one; otherwise an XCom of this task, which Airflow clears when a new try
    or a reschedule starts but keeps while the task is deferred.
    """
    store = task_state_store(context)
    if store is not None:
        store.set(key, value)
    else:
        context["ti"].xcom_push(key=_RESUME_XCOM_PREFIX + key, value=value)


def load_resume_state(context: Context, key: str) -> Any | None:
    """What :func:`save_resume_state` kept for this task instance, or None."""
    store = task_state_store(context)
    if store is not None:
        return store.get(key)
    ti = context["ti"]
    return ti.xcom_pull(task_ids=ti.task_id, key=_RESUME_XCOM_PREFIX + key, map_indexes=ti.map_index)
