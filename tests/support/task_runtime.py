"""A minimal task runtime for operator tests: XCom, the task state store, tries, deferral.

Only what a worker process would provide is faked; every DexCare call goes to the sandbox, and a deferred
task's trigger is rebuilt from its serialized kwargs and run, as the triggerer does.
"""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

from dexcare.compat import HAS_TASK_STATE_STORE, TaskDeferred

from tests.support.airflow_compat import deserialize, import_string, serialize
from tests.support.helpers import run_trigger


class FakeStateStore:
    """Same contract as ``TaskStateStoreAccessor``: JSON values, kept across tries and reschedules."""

    def __init__(self) -> None:
        self.data: dict[str, str] = {}

    def get(self, key: str, default: Any = None) -> Any:
        return json.loads(self.data[key]) if key in self.data else default

    def set(self, key: str, value: Any, *, retention: Any = None) -> None:
        if value is None:
            raise ValueError("Cannot set value as None")
        self.data[key] = json.dumps(value)

    def delete(self, key: str) -> None:
        self.data.pop(key, None)


class FakeTI:
    def __init__(self, task_id: str, xcoms: dict, try_number: int = 1) -> None:
        self.task_id = task_id
        self.dag_id = "dexcare_test"
        self.run_id = "manual__2026-11-24T00:00:00+00:00"
        self.try_number = try_number
        self.map_index = -1
        self.xcoms = xcoms
        self.first_reschedule_date = None

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcoms[(self.task_id, key)] = json.loads(json.dumps(value))

    def xcom_pull(self, task_ids: str | None = None, key: str = "return_value", **_: Any) -> Any:
        return self.xcoms.get((task_ids or self.task_id, key))

    def get_first_reschedule_date(self, context: Any) -> Any:
        return self.first_reschedule_date


class Runtime:
    """One DAG run's XComs and one state store per task, shared by every try of a task."""

    def __init__(self) -> None:
        self.xcoms: dict = {}
        self.stores: dict[str, FakeStateStore] = {}
        self.tries: dict[str, int] = {}

    def context(self, task_id: str, try_number: int = 1, *, store: bool = HAS_TASK_STATE_STORE) -> dict[str, Any]:
        """What a worker hands the task; ``task_state_store`` only where this Airflow has one (3.3+).

        A new try starts without the task's XComs of earlier tries, as Airflow's task runner clears them.
        """
        if self.tries.setdefault(task_id, try_number) != try_number:
            self.tries[task_id] = try_number
            for key in [k for k in self.xcoms if k[0] == task_id]:
                del self.xcoms[key]
        ti = FakeTI(task_id, self.xcoms, try_number)
        ctx: dict[str, Any] = {
            "ti": ti,
            "task_instance": ti,
            "dag": SimpleNamespace(dag_id=ti.dag_id),
            "run_id": ti.run_id,
        }
        if store:
            ctx["task_state_store"] = self.stores.setdefault(task_id, FakeStateStore())
        return ctx

    def run(self, operator: Any, try_number: int = 1) -> Any:
        """Execute a non-deferring operator and record its return value as XCom."""
        ctx = self.context(operator.task_id, try_number)
        result = operator.execute(ctx)
        if result is not None:
            ctx["ti"].xcom_push("return_value", result)
        return result

    async def run_deferrable(
        self, operator: Any, try_number: int = 1, *, max_deferrals: int = 10, store: bool = HAS_TASK_STATE_STORE
    ) -> Any:
        """execute(), then for each deferral: trigger rebuilt from serde'd kwargs, run, resume the task."""
        ctx = self.context(operator.task_id, try_number, store=store)
        self.deferrals = []
        self.resume_kwargs = []
        step = lambda: operator.execute(ctx)  # noqa: E731
        for _ in range(max_deferrals):
            try:
                result = step()
            except TaskDeferred as deferred:
                classpath, kwargs = deferred.trigger.serialize()
                trigger = import_string(classpath)(**deserialize(serialize(kwargs)))
                self.deferrals.append((classpath, kwargs, deferred.timeout))
                self.resume_kwargs.append(deferred.kwargs)
                payload = await run_trigger(trigger)
                next_kwargs = {**deserialize(serialize(deferred.kwargs or {})), "event": payload}
                step = lambda d=deferred, nk=next_kwargs: operator.resume_execution(  # noqa: E731
                    d.method_name, nk, ctx
                )
                continue
            if result is not None:
                ctx["ti"].xcom_push("return_value", result)
            return result
        raise AssertionError("too many deferrals")
