"""Every difference between the Airflow 3 minors this package supports (3.0 to 3.3), in one place.

Airflow 3.0 and 3.1 keep some exceptions in ``airflow.exceptions`` that 3.2 moved to ``airflow.sdk.exceptions``
(``AirflowException`` came in 3.1, the sensor and deferral exceptions in 3.2; there they are the same classes).
Their ``retry_exponential_backoff`` is a bool (True doubles the delay), where 3.2 takes the multiplier and reads
True as 1, no backoff at all. They build the connection form only from methods of the hook class, which 3.2
deprecates for the provider info's declarative ``conn-fields`` and ``ui-field-behaviour``.

Only Airflow 3.3 has the per-task state store, which survives retries and reschedules. What the package does
without it:

- reuse of a running report on task retry: off; a retry starts a new report (nothing tells it which report an
  earlier try started, and it never guesses);
- the sensor's ``mode="reschedule"``: refused, because its FAILED grace period and resubmissions would be
  forgotten between pokes;
- a new try of the sensor waits on the report it was given again, not on one an earlier try requested again;
- a sensor try that Airflow's scheduler fails after its trigger fired (apache/airflow#71580) leaves its retry
  nothing to read: the retry starts again from the report it was given (no request when that one SUCCEEDED;
  when the lost try had resubmitted it, it is CANCELLED or FAILED and is requested again), and its log can only
  say that an earlier try may have been lost so;
- what a deferred sensor needs when it resumes is kept in an XCom of its own (:func:`state_store_for_the_try`),
  which Airflow keeps while a task is deferred; the resume kwargs would do in a deployment, but
  ``airflow dags test`` (every 3.x) resumes a task with the trigger's event alone.

Each degradation is logged once, in the task's log, with the Airflow version that has the feature.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from airflow import __version__ as AIRFLOW_VERSION
from packaging.version import Version

try:  # Airflow >= 3.2 (3.1 has AirflowException there, but not the rest)
    from airflow.sdk.exceptions import (
        AirflowException,
        AirflowFailException,
        AirflowRescheduleException,
        AirflowSensorTimeout,
        TaskDeferred,
    )
except ImportError:  # Airflow 3.0, 3.1
    from airflow.exceptions import (  # type: ignore[no-redef]
        AirflowException,
        AirflowFailException,
        AirflowRescheduleException,
        AirflowSensorTimeout,
        TaskDeferred,
    )

if TYPE_CHECKING:
    from airflow.sdk import Context

_Hook = TypeVar("_Hook", bound=type)

__all__ = [
    "AIRFLOW_VERSION",
    "DEADLINE_ALERTS_SINCE",
    "HAS_DEADLINE_ALERTS",
    "HAS_TASK_STATE_STORE",
    "RETRY_EXPONENTIAL_BACKOFF",
    "TASK_STATE_STORE_SINCE",
    "AirflowException",
    "AirflowFailException",
    "AirflowRescheduleException",
    "AirflowSensorTimeout",
    "TaskDeferred",
    "connection_form_before_3_2",
    "deadline_alert",
    "missing_task_state_store",
    "state_store_for_the_try",
    "stats_client",
    "task_state_store",
]

_RELEASE = Version(AIRFLOW_VERSION).release[:2]
#: The first Airflow with ``context["task_state_store"]``.
TASK_STATE_STORE_SINCE = "3.3"
HAS_TASK_STATE_STORE = _RELEASE >= (3, 3)
#: ``retry_exponential_backoff`` that doubles the retry delay each time, on every Airflow 3.
RETRY_EXPONENTIAL_BACKOFF: float | bool = 2.0 if _RELEASE >= (3, 2) else True


#: The first Airflow with Deadline Alerts (``DAG(deadline=...)``); 3.1 runs only async callbacks, in the triggerer.
DEADLINE_ALERTS_SINCE = "3.1"
HAS_DEADLINE_ALERTS = _RELEASE >= (3, 1)


def deadline_alert(after_logical_date: timedelta, callback: Callable[..., Any], kwargs: dict[str, Any]) -> Any | None:
    """A Deadline Alert that awaits ``callback(context=..., **kwargs)`` in the triggerer when a run is not done
    ``after_logical_date`` after its logical date; None before Airflow 3.1, which has no Deadline Alerts.

    An async callback because 3.1 runs no other kind; 3.2 and 3.3 run it the same way.
    """
    if not HAS_DEADLINE_ALERTS:
        return None
    from airflow.sdk.definitions.deadline import AsyncCallback, DeadlineAlert, DeadlineReference

    return DeadlineAlert(
        reference=DeadlineReference.DAGRUN_LOGICAL_DATE,
        interval=after_logical_date,
        callback=AsyncCallback(callback, kwargs=kwargs),
    )


def task_state_store(context: Context) -> Any | None:
    """Airflow 3.3's per-task state store (kept across retries and reschedules), or None on older Airflow."""
    return context.get("task_state_store")


def missing_task_state_store(consequence: str) -> str:
    """The one log line that says what this Airflow cannot do, and which Airflow can."""
    return (
        f"Airflow {AIRFLOW_VERSION} has no task state store (Airflow {TASK_STATE_STORE_SINCE} and later have "
        f"one): {consequence}"
    )


def state_store_for_the_try(context: Context) -> Any:
    """The task state store; before 3.3, a stand-in with its ``get``/``set`` on this task's XCom.

    Airflow clears a task's XCom when a try or a reschedule starts and keeps it while the task is deferred, so the
    stand-in keeps a value for exactly the rest of the try: across a deferral, also under ``airflow dags test``.
    """
    store = task_state_store(context)
    return store if store is not None else _XComForTheTry(context["ti"])


class _XComForTheTry:
    """``get``/``set`` like the task state store, on this task instance's own XCom (same keys)."""

    def __init__(self, ti: Any) -> None:
        self._ti = ti

    def get(self, key: str, default: Any = None) -> Any:
        ti = self._ti
        value = ti.xcom_pull(task_ids=ti.task_id, key=key, map_indexes=ti.map_index)
        return default if value is None else value

    def set(self, key: str, value: Any, *, retention: Any = None) -> None:
        self._ti.xcom_push(key=key, value=value)


def connection_form_before_3_2(hook_class: _Hook) -> _Hook:
    """Give Airflow 3.0/3.1 the connection form the provider info declares: labels, hidden fields, placeholders,
    and the extra fields (``timeout``, ``verify``).

    They read the form only from ``get_ui_field_behaviour`` / ``get_connection_form_widgets`` defined on the hook
    class itself (the UI builds the widgets with stand-ins for WTForms). 3.2 and later read the provider info and
    warn about those methods, so they are added on older Airflow only, from the same declaration.
    """
    if _RELEASE >= (3, 2):
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
            types = [t for t in ([types] if isinstance(types, str) else types) if t != "null"]
            # One type gets its own field; several (e.g. verify: a bool or a CA bundle path) a text field.
            kind = kinds.get(types[0], StringField) if len(types) == 1 else StringField
            widgets[field] = kind(lazy_gettext(spec["label"]), description=spec.get("description", ""))
        return widgets

    hook_class.get_ui_field_behaviour = classmethod(get_ui_field_behaviour)  # type: ignore[attr-defined]
    hook_class.get_connection_form_widgets = classmethod(get_connection_form_widgets)  # type: ignore[attr-defined]
    return hook_class


def stats_client() -> Any:
    """Airflow's stats client (StatsD, DogStatsD or OpenTelemetry, as ``[metrics]`` configures it).

    3.0 and 3.1 have ``airflow.stats.Stats``, which configures itself from ``[metrics]`` on first use. From 3.2
    the Task SDK's client is configured by the task runner's ``main()`` only (3.2 on the class, 3.3 in the
    module), which ``airflow dags test`` never calls: it runs tasks in its own process, so the client is
    configured here, from the same ``[metrics]`` settings, when nothing configured it before.
    """
    try:
        from airflow.sdk.observability import stats as sdk_stats
    except ImportError:  # Airflow 3.0, 3.1
        from airflow.stats import Stats

        return Stats
    import sys

    from airflow.sdk.configuration import conf
    from airflow.sdk.observability.metrics import stats_utils

    client = sdk_stats.Stats
    module_level = getattr(sdk_stats, "initialize", None)
    if module_level is not None:  # Airflow >= 3.3
        if getattr(sys.modules[module_level.__module__], "_factory", None) is None:
            module_level(factory=stats_utils.get_stats_factory(),
                         export_legacy_names=conf.getboolean("metrics", "legacy_names_on", fallback=True))
    elif type.__getattribute__(client, "factory") is None:  # Airflow 3.2
        # Typed against the installed (newest) Airflow, whose signatures differ: these are 3.2's.
        initialize: Any = client.initialize
        get_stats_factory: Any = stats_utils.get_stats_factory
        initialize(factory=get_stats_factory(client))
    return client


class TaskLog(Protocol):
    """What this package asks of a logger. A task's ``self.log`` is the task SDK's structlog logger, a hook's
    or a notebook's the standard library's: code that logs for any of them takes either."""

    def debug(self, msg: str, /, *args: Any, exc_info: bool = ...) -> Any: ...

    def info(self, msg: str, /, *args: Any) -> Any: ...

    def warning(self, msg: str, /, *args: Any) -> Any: ...
