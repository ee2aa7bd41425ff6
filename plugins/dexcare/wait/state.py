"""The state of a sensor's wait on a chain of DexCare reports: one object that loads, advances and saves itself.

A wait outlives the process that started it: a reschedule, a deferral to the triggerer and a task retry
all continue it elsewhere. So the current report id, the resubmissions used, the deadline, the failed
checks in a row and the last status seen (a ``ReportTracker``) live in one ``WaitState``, which is saved
to exactly one place: Airflow 3.3's task state store (it survives reschedules and tries, which XCom does
not), or before 3.3 the task's own XCom, which lasts the rest of the try, across a deferral
(``dexcare.compat.state_store_for_the_try``). Only this module converts it to and from its stored form,
which is kept stable so a task retried across an upgrade continues its wait.

It also records how far the try that saved it got (``Stage``): the next try needs that to explain an
earlier try that Airflow lost after its wait had ended (``EarlierTry``, below).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from dexcare.compat import state_store_for_the_try, task_state_store
from dexcare.exceptions import DexCareError
from dexcare.report import ReportStatus
from dexcare.task_context import try_number
from dexcare.wait import messages
from dexcare.wait.tracking import ReportTracker, Verdict

if TYPE_CHECKING:
    from airflow.sdk import Context

    from dexcare.compat import TaskLog

#: Task state store key; renaming it breaks the wait of tasks retried across an upgrade.
STATE_KEY = "dexcare_wait"


class Stage(StrEnum):
    """How far the try that saved the wait got; stored, so its values never change."""

    #: checking on the worker (the first check, polls, resubmissions).
    WORKER = "worker"
    #: handed to the trigger and not resumed yet.
    DEFERRED = "deferred"
    #: resumed with the trigger's "success", not returned yet.
    TRIGGER_SUCCEEDED = "trigger_succeeded"
    #: returned the report id.
    SUCCEEDED = "succeeded"

    @classmethod
    def read(cls, value: Any) -> Stage:
        """A stage another version of this package may have saved: one it does not know reads as WORKER (the
        next try then explains nothing, which is all it would lose), never as an error that fails the wait."""
        try:
            return cls(value)
        except ValueError:
            return cls.WORKER


@dataclass(frozen=True)
class EarlierTry:
    """What a new try knows of the try before it, to tell the on-call engineer what happened to it.

    Airflow's scheduler can fail a deferred try whose trigger has already fired (apache/airflow#71580): the
    resume never runs, and the next try starts afresh. Nothing on a worker sees the trigger's event then, so
    the earlier try's ``stage`` (``DEFERRED``: it never resumed; ``TRIGGER_SUCCEEDED`` or ``SUCCEEDED``: it
    saw the success but the try did not end in it) and the new try's first status check together say what
    happened. ``stage`` is None when nothing was saved (no task state store before Airflow 3.3).
    """

    try_number: int
    report_id: str | None
    stage: Stage | None


@dataclass
class WaitState:
    """``origin`` is the report the task was given; ``report_id`` the one waited on now (after resubmissions).

    ``deadline`` and ``started`` are wall-clock epoch seconds, because the wait crosses machines.
    """

    origin: str
    try_number: int
    report_id: str
    deadline: float
    tracker: ReportTracker
    report_ids: list[str] = field(default_factory=list)
    resubmits: int = 0
    errors: int = 0
    started: float = 0.0
    stage: Stage = Stage.WORKER
    store: Any = field(repr=False, compare=False, kw_only=True)
    #: The try before this one, for a new try only; not stored (only the first check of a try can use it).
    earlier: EarlierTry | None = field(default=None, repr=False, compare=False, kw_only=True)

    # --- where it comes from ---------------------------------------------------------------------------------

    @classmethod
    def begin(
        cls, context: Context, origin: str, *, timeout: float, grace_period: float, log: TaskLog
    ) -> WaitState:
        """Pick up where an earlier reschedule or try of this task left off, or start a fresh wait.

        A new try gets a fresh deadline and fresh budgets (resubmissions, failed checks), whatever the earlier
        try spent: it only needs them if the report it continues with is not SUCCEEDED already, and its first
        check finds that out before anything is spent.
        """
        store = state_store_for_the_try(context)
        current_try = try_number(context)
        saved = cls._load(store.get(STATE_KEY), store)
        if saved is not None and saved.origin == origin:
            if saved.try_number == current_try:
                log.info(messages.continuing(saved.report_id, saved.resubmits, saved.deadline))
                return saved
            # A new try keeps waiting on the newest report of the chain, with a fresh deadline and budget.
            log.info(messages.earlier_try(saved.report_id, saved.report_ids))
            state = cls._fresh(
                store, origin, current_try, saved.report_id, saved.report_ids, timeout, grace_period, saved.started
            )
            state.earlier = EarlierTry(saved.try_number, saved.report_id, saved.stage)
            return state
        state = cls._fresh(store, origin, current_try, origin, [origin], timeout, grace_period)
        if current_try > 1 and task_state_store(context) is None:  # an earlier try ran; nothing kept it
            state.earlier = EarlierTry(current_try - 1, None, None)
        return state

    @classmethod
    def resume(cls, context: Context, carried: dict[str, Any] | None) -> WaitState:
        """After the trigger: the state saved before deferring (``dag.test()`` drops the resume kwargs, so the
        store wins; they carry the state only for a deferral made by an earlier version of this package)."""
        store = state_store_for_the_try(context)
        saved = store.get(STATE_KEY)
        state = cls._load(saved if saved is not None else carried, store)
        if state is None:
            raise DexCareError("The sensor resumed without its wait state; refusing to guess the report id.")
        return state

    @classmethod
    def _fresh(
        cls,
        store: Any,
        origin: str,
        current_try: int,
        report_id: str,
        report_ids: list[str],
        timeout: float,
        grace_period: float,
        started: float = 0.0,
    ) -> WaitState:
        """A new wait; ``started`` carries over from an earlier try, so the summary counts the whole wait."""
        now = time.time()
        state = cls(
            origin=origin,
            try_number=current_try,
            report_id=report_id,
            deadline=now + timeout,
            tracker=ReportTracker(report_id, grace_period),
            report_ids=list(report_ids),
            started=started or now,
            store=store,
        )
        state.save()
        return state

    # --- how it is stored ------------------------------------------------------------------------------------

    @classmethod
    def _load(cls, data: Any, store: Any) -> WaitState | None:
        if not isinstance(data, dict):
            return None
        return cls(
            origin=str(data["origin"]),
            try_number=int(data["try_number"]),
            report_id=str(data["report_id"]),
            deadline=float(data["deadline"]),
            tracker=ReportTracker.from_dict(data["tracker"]),
            report_ids=[str(i) for i in data.get("report_ids", [])],
            resubmits=int(data.get("resubmits", 0)),
            errors=int(data.get("errors", 0)),
            started=float(data.get("started", 0.0)),
            stage=Stage.read(data.get("stage", Stage.WORKER)),
            store=store,
        )

    def _dump(self) -> dict[str, Any]:
        return {
            "origin": self.origin,
            "try_number": self.try_number,
            "report_id": self.report_id,
            "deadline": self.deadline,
            "tracker": self.tracker.to_dict(),
            "report_ids": list(self.report_ids),
            "resubmits": self.resubmits,
            "errors": self.errors,
            "started": self.started,
            "stage": self.stage.value,
        }

    def save(self) -> None:
        self.store.set(STATE_KEY, self._dump())

    # --- how it advances -------------------------------------------------------------------------------------

    def check_failed(self) -> int:
        """One more failed status request in a row; saved at once, so a reschedule keeps counting."""
        self.errors += 1
        self.save()
        return self.errors

    def observe(self, status: ReportStatus, now: float) -> tuple[Verdict, str | None]:
        """A status check answered: the error count resets, and the tracker decides what the status means."""
        changed = self.errors > 0
        self.errors = 0
        verdict, message = self.tracker.observe(status, now)
        if changed or message:  # the tracker changes only when it has a line to log; otherwise the store has it
            self.save()
        return verdict, message

    def observed_in_trigger(self, event: dict[str, Any]) -> None:
        """The trigger's last sight of the report (a validated event) replaces the worker's; saved before
        anything else happens, so a try lost from here on leaves the trigger's success to the next one."""
        self.tracker = ReportTracker(
            event["report_id"], self.tracker.failed_grace_period, event["report_status"], event["status_since"]
        )
        self.errors = 0
        self.stage = Stage.TRIGGER_SUCCEEDED if event["status"] == "success" else Stage.WORKER
        self.save()

    def deferring(self) -> None:
        """Saved just before the trigger takes over: a next try that finds it knows the resume never ran."""
        self.stage = Stage.DEFERRED
        self.save()

    def succeeded(self) -> None:
        self.stage = Stage.SUCCEEDED
        self.save()

    def resubmitted(self, new_id: str) -> None:
        """Saved before anything else can fail, so a retry continues on the new report."""
        self.resubmits += 1
        self.report_id = new_id
        self.report_ids.append(new_id)
        self.tracker = ReportTracker(new_id, self.tracker.failed_grace_period)
        self.errors = 0
        self.save()

    # --- what others need to know ------------------------------------------------------------------------

    def handoff(self) -> dict[str, Any]:
        """The trigger kwargs that continue this wait: same report, same deadline, same clocks and counts."""
        return {
            "report_id": self.report_id,
            "deadline": self.deadline,
            "last_status": self.tracker.status,
            "last_status_since": self.tracker.status_since,
            "consecutive_errors": self.errors,
        }

    def how_it_ended(self, verdict: Verdict | str, now: float) -> str:
        return messages.ending(verdict == Verdict.CANCELLED, self.tracker.failed_for(now))

    @property
    def waited(self) -> float | None:
        return time.time() - self.started if self.started else None
