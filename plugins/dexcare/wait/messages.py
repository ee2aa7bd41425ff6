"""What the wait on a DexCare report tells the on-call engineer, written in one place.

The sensor on the worker, the trigger in the triggerer and the status tracker report the same
events (a status change, a failed check, a resubmission, the end of the wait); keeping the wording here
means a message reads the same whichever process wrote it, and says what to do next. None of them carries
the reporting service key or report rows: only ids, statuses, windows and times.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from dexcare.redaction import redact

if TYPE_CHECKING:
    from dexcare.report import ReportRequest


def format_seconds(seconds: float) -> str:
    """Durations in logs read like ``4m 12s``, not ``252.0316``."""
    seconds = max(seconds, 0.0)
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def format_deadline(deadline: float) -> str:
    return dt.datetime.fromtimestamp(deadline, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


# --- status changes (ReportTracker) ---------------------------------------------------------------------------


def first_status(report_id: str, status: str) -> str:
    return f"DexCare report {report_id} is {status}."


def status_change(report_id: str, previous: str, status: str, seconds_in_previous: float) -> str:
    return (
        f"DexCare report {report_id}: {previous} -> {status} after {format_seconds(seconds_in_previous)} in "
        f"{previous}."
    )


RETRYING_ON_ITS_OWN = " DexCare is retrying it on its own; the FAILED grace period is reset."


def failed_is_provisional(grace_period: float) -> str:
    return (
        f" FAILED is provisional: it becomes final after {format_seconds(grace_period)} unless DexCare retries "
        "the report."
    )


# --- how a wait ends ------------------------------------------------------------------------------------------


def cancelled(report_id: str) -> str:
    return f"DexCare report {report_id} was CANCELLED."


def succeeded(report_id: str) -> str:
    return f"DexCare report {report_id} SUCCEEDED."


def stayed_failed(report_id: str, failed_for: float, grace_period: float) -> str:
    return (
        f"DexCare report {report_id} stayed FAILED for {format_seconds(failed_for)} (grace period "
        f"{format_seconds(grace_period)}) without DexCare retrying it."
    )


def ending(cancelled: bool, failed_for: float) -> str:
    """The tail of "DexCare report <id> ...", for resubmissions and the final failure."""
    return "was CANCELLED" if cancelled else f"stayed FAILED for {format_seconds(failed_for)}"


def timed_out(report_id: str, status: str | None, seconds_in_status: float, deadline: float, detail: str = "") -> str:
    seen = f"still {status} (for {format_seconds(seconds_in_status)})" if status else "never seen"
    return f"DexCare report {report_id} was {seen} at the deadline {format_deadline(deadline)}.{detail}"


def timeout_advice(timeout: float) -> str:
    return (
        f"Timeout was {format_seconds(timeout)}. The report may still finish: clear this task to wait again on "
        "the same report, or raise timeout if DexCare is just slow today."
    )


def deadline_passed(report_id: str, how_it_ended: str, deadline: float) -> str:
    return (
        f"DexCare report {report_id} {how_it_ended}, and the deadline {format_deadline(deadline)} has passed, so "
        "it is not requested again."
    )


def give_up(
    request: ReportRequest | None,
    report_id: str,
    how_it_ended: str,
    report_ids: list[str],
    resubmits: int,
    max_resubmits: int,
) -> str:
    what = f"{request.report_type.value} report for {request.describe_window()}" if request else "report"
    clear = (
        f" and may request it up to {max_resubmits} more time(s)."
        if max_resubmits
        else "; set max_resubmits to request a lost report again automatically."
    )
    return " ".join(
        [
            f"DexCare {what} {report_id} {how_it_ended}.",
            f"Reports tried: {', '.join(report_ids)} ({resubmits} resubmission(s), max_resubmits={max_resubmits}).",
            f"What to do: ask DexCare support about report {report_id} (give them the id and the time above) and "
            "check whether DexCare is degraded. Then clear this task: it waits on the newest report again"
            + clear
            + " Clearing the start task as well requests a brand-new report.",
        ]
    )


def summary(
    request: ReportRequest | None, report_id: str, waited: float | None, report_ids: list[str], resubmits: int
) -> str:
    """The last line of the task log: what an on-call engineer needs without scrolling."""
    what = f"{request.report_type.value} report " if request else "report "
    span = f" for {request.describe_window()}" if request and request.start_date else ""
    took = format_seconds(waited) if waited is not None else "an unknown time"
    return (
        f"Summary: DexCare {what}{report_id}{span} SUCCEEDED after waiting {took}; reports tried: "
        f"{', '.join(report_ids)} ({resubmits} resubmission(s))."
    )


# --- along the way ---------------------------------------------------------------------------------------------


def resubmitted(
    number: int, max_resubmits: int, old_id: str, how_it_ended: str, request: ReportRequest, new_id: str
) -> str:
    return (
        f"Resubmission {number} of {max_resubmits}: DexCare report {old_id} {how_it_ended}; requested the same "
        f"{request.report_type.value} report for {request.describe_window()} again as {new_id}."
    )


def error_text(error: BaseException) -> str:
    """An exception as messages quote it: its type and its text, with the user-info of any URL in it masked
    (aiohttp's proxy errors quote the proxy URL with its password)."""
    return redact(f"{type(error).__name__}: {error}")


def failed_checks_on_worker(report_id: str, errors: int, error: Exception) -> str:
    return (
        f"Gave up on DexCare report {report_id} after {errors} failed status checks in a row; the last was "
        f"{error_text(error)}"
    )


def failed_check_on_worker(errors: int, max_errors: int, report_id: str, error: Exception) -> str:
    return f"Status check {errors} of at most {max_errors} in a row failed for report {report_id}: {redact(str(error))}"


def failed_checks_in_trigger(report_id: str, errors: int, error: Exception) -> str:
    return (
        f"Gave up on DexCare report {report_id} after {errors} transient errors in a row; the last was "
        f"{error_text(error)} DexCare may be down: check its status, then clear the task to wait "
        "again on the same report."
    )


def failed_check_in_trigger(errors: int, max_errors: int, report_id: str, error: Exception, delay: float) -> str:
    return (
        f"Status check {errors} of at most {max_errors} in a row failed for DexCare report {report_id} "
        f"({error_text(error)}); next check in {delay:.1f}s."
    )


def answered_again(errors: int) -> str:
    return f"DexCare answered again after {errors} failed status checks."


def stopped(report_id: str, reason: str) -> str:
    return f"Stopped waiting for DexCare report {report_id}: {redact(reason)}"


def waiting_in_trigger(report_id: str, poll_interval: float, grace_period: float, deadline: float) -> str:
    return (
        f"Waiting for DexCare report {report_id}: poll every {format_seconds(poll_interval)}, FAILED grace "
        f"{format_seconds(grace_period)}, deadline {format_deadline(deadline)}."
    )


def trigger_finished(polls: int, message: str) -> str:
    """``message`` comes from the metadata database, where a trigger of an earlier version may have left it
    unredacted."""
    return f"Trigger finished after {polls} status checks: {redact(message)}"


def deferring(report_id: str, deadline: float) -> str:
    return f"Deferring: waiting on DexCare report {report_id} in the triggerer until {format_deadline(deadline)}."


def continuing(report_id: str, resubmits: int, deadline: float) -> str:
    return (
        f"Continuing the wait on report {report_id} ({resubmits} resubmission(s) used, deadline "
        f"{format_deadline(deadline)})."
    )


def earlier_try(report_id: str, report_ids: list[str]) -> str:
    return (
        f"An earlier try last waited on report {report_id} (reports so far: {', '.join(report_ids)}); this try "
        "continues with it."
    )


# --- a try that Airflow lost after its wait had ended ---------------------------------------------------------

#: The upstream issues of Airflow's scheduler race that fails a deferred task whose trigger has fired.
SCHEDULER_RACE = "apache/airflow#71580 (also #67287, #72716)"
#: What a deployment sets against it; README, "The daily DAG", says why.
SCHEDULER_RACE_MITIGATION = (
    "set [workers] min_heartbeat_interval = 1 (AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL=1) on every worker and "
    "give the sensor at least one retry (the daily DAG: DEXCARE_DAG_RETRIES >= 1)"
)


def lost_after_its_wait_ended(
    current_try: int, earlier_try: int, report_id: str, stage: str | None, nothing_kept: str = ""
) -> str:
    """Why this try, whose first check finds the report SUCCEEDED, exists at all: what happened to the one
    before. ``stage`` is how far that try got (``dexcare.wait.state.Stage``); None when nothing was kept, and
    ``nothing_kept`` then says why (``dexcare.compat.missing_task_state_store``)."""
    if stage == "deferred":
        what = (
            f"Try {earlier_try} of this task was lost after its wait had already ended: it deferred on DexCare "
            f"report {report_id} and never resumed, and the report is SUCCEEDED, so the trigger had fired with "
            f"SUCCEEDED for report {report_id} before Airflow failed that try."
        )
    elif stage == "trigger_succeeded":
        what = (
            f"Try {earlier_try} of this task was lost after its wait had already ended: the trigger had fired "
            f"with SUCCEEDED for report {report_id} (that try resumed and recorded it), but the try did not finish."
        )
    elif stage == "succeeded":
        what = (
            f"Try {earlier_try} of this task had already returned DexCare report {report_id} SUCCEEDED, yet the "
            "task runs again: it was cleared, or Airflow failed that try after its wait had ended."
        )
    else:
        what = (
            f"This is try {current_try} and DexCare report {report_id} is already SUCCEEDED: if try "
            f"{earlier_try} deferred, it was lost after its wait had already ended. {nothing_kept}"
        ).rstrip()
    return (
        f"{what} Airflow's scheduler can fail a deferred task whose trigger has fired when it processes the "
        "stale \"success\" of the worker's exit at deferral after the task was requeued (\"finished with state "
        f"success, but the task instance's state attribute is queued\"): {SCHEDULER_RACE}. This try continues "
        f"with report {report_id}, already SUCCEEDED, and requests no other. Mitigation: "
        f"{SCHEDULER_RACE_MITIGATION} (README, \"The daily DAG\")."
    )
