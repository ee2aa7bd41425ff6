"""The one page on-call gets, for a failed task, a volume verdict and a missed deadline alike.

On-call reads pages at 03:00 from a phone: every page says the same things in the same order (what happened,
where, the cause, the fix, the counts, the runbook) whatever raised it, so it is built here and nowhere else.
Its dedup key (``dexcare/<dag_id>/<logical date>/<kind>``) lets PagerDuty or Opsgenie fold repeats of one
incident (a retried callback, both report types failing on a DexCare outage) into one alert; notifiers without
such a field show it in the subject.

A page carries ids, dates, counts and, for this provider's own exceptions, their message, which is redacted
where it is made (``dexcare.exceptions``) and never holds a field of a report; it is passed through
:func:`redact` once more. Of any other exception (a driver's, a parser's: their text can quote a row) only the
type is given.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import html
import importlib
import inspect
import json
import logging
import os
import re
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from dexcare.daily.runbook import RUNBOOK
from dexcare.exceptions import DexCareError, DexCareValidationError
from dexcare.redaction import redact

log = logging.getLogger(__name__)

#: ``module.path:ClassName`` or ``module.path.ClassName`` of an Airflow notifier that receives every page.
NOTIFIER_ENV = "DEXCARE_FAILURE_NOTIFIER"
#: JSON object of keyword arguments for that notifier.
NOTIFIER_KWARGS_ENV = "DEXCARE_FAILURE_NOTIFIER_KWARGS"
#: Where the page's runbook link points; default: the DAG's page in the Airflow UI, whose Docs show the runbook.
RUNBOOK_URL_ENV = "DEXCARE_RUNBOOK_URL"

#: Notifier parameters a page fills, by name: the SMTP notifier's subject and HTML body, PagerDuty's summary,
#: dedup_key and custom_details, Opsgenie-style alias, Slack-style text, and ``page`` for a notifier of your own.
_PAGE_PARAMETERS = (
    "subject",
    "html_content",
    "summary",
    "text",
    "message",
    "dedup_key",
    "alias",
    "custom_details",
    "page",
)


@dataclass(frozen=True)
class Incident:
    """What one page is about; every field is an id, a date, a count or a redacted message."""

    kind: str
    dag_id: str
    logical_date: str
    run_id: str
    what: str
    cause: str
    fix: str
    table: str | None = None
    report_type: str | None = None
    window: str | None = None
    task: str | None = None
    counts: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Page:
    """The message a notifier sends: a subject, the same lines as text and as HTML, the dedup key."""

    dedup_key: str
    subject: str
    lines: tuple[tuple[str, str], ...]

    @property
    def text(self) -> str:
        return "\n".join(f"{label}: {value}" for label, value in self.lines)

    @property
    def html(self) -> str:
        rows = "".join(
            f"<tr><th align='left' valign='top'>{html.escape(label)}</th><td>{html.escape(value)}</td></tr>"
            for label, value in self.lines
        )
        return f"<p>{html.escape(self.subject)}</p><table>{rows}</table>"

    def as_dict(self) -> dict[str, Any]:
        return {"dedup_key": self.dedup_key, "subject": self.subject, "text": self.text, **dict(self.lines)}


def dedup_key(dag_id: str, logical_date: str, kind: str) -> str:
    """One key per DAG, logical date and kind of incident: repeats of one incident fold into one alert."""
    return f"dexcare/{dag_id}/{logical_date}/{kind}"


def build_page(incident: Incident, *, base_url: str | None = None, runbook_url: str | None = None) -> Page:
    """The page for ``incident``; links are left out when the deployment does not say where its UI is."""
    key = dedup_key(incident.dag_id, incident.logical_date, incident.kind)
    where = incident.table or incident.report_type or incident.task or incident.dag_id
    subject = f"[DexCare] {incident.what}: {where}, {incident.logical_date} ({key})"
    lines: list[tuple[str, str]] = [("What happened", incident.what), ("DAG", incident.dag_id)]
    lines += [("Logical date", incident.logical_date), ("Run", incident.run_id)]
    for label, value in (
        ("Task", incident.task),
        ("Table", incident.table),
        ("Report type", incident.report_type),
        ("Window", incident.window),
    ):
        if value:
            lines.append((label, value))
    ui = (base_url or "").rstrip("/")
    if ui:
        run_link = f"{ui}/dags/{incident.dag_id}/runs/{urllib.parse.quote(incident.run_id, safe='')}"
        lines.append(("Run link", run_link))
    lines += [("Cause", redact(incident.cause)), ("Fix", redact(incident.fix))]
    if incident.counts:
        lines.append(("Counts", ", ".join(f"{name} {value}" for name, value in incident.counts.items())))
    runbook = runbook_url or (f"{ui}/dags/{incident.dag_id}" if ui else "")
    lines.append(("Runbook", runbook or "the DAG's Docs in the Airflow UI, and README.md, On-call"))
    lines.append(("Dedup key", key))
    return Page(dedup_key=key, subject=redact(subject), lines=tuple(lines))


# --- the three kinds of incident -----------------------------------------------------------------------------

#: The counts a volume verdict carries, in the order a page shows them (the load's names).
_COUNT_NAMES = ("rows", "baseline_median", "baseline_loads", "ratio", "min_share")


def _cause(exc: BaseException | None) -> str:
    """Our own messages are written to be quoted (names, lines and counts, redacted); a library's (a database
    driver's detail, a parser's) can quote a row, so of those the page gives only the type."""
    if exc is None:
        return "the task failed without an exception (killed, or timed out)"
    if isinstance(exc, DexCareError):
        return str(exc)
    return (f"{type(exc).__name__} (its message is in the task log, not in this page: it comes from a library "
            "and may quote data)")


def failure_incident(context: Mapping[str, Any]) -> Incident:
    """A task failed for good: the exception's own message is the cause, the runbook row of the task the fix.

    A load refused for its volume (``DexCareVolumeError``, with ``counts``) is its own kind, so it folds with the
    volume pages of the same table rather than with other failures.
    """
    exc = context.get("exception")
    ti = context.get("ti") or context.get("task_instance")
    task_id = str(getattr(ti, "task_id", "") or "")
    report_type = _map_label(ti)
    cause = _cause(exc)
    counts = getattr(exc, "counts", None)
    if isinstance(counts, Mapping):
        table = str(counts.get("table") or "")
        return Incident(
            kind=f"volume-{table}",
            **_run_fields(context),
            what="Load refused: the report's volume is far below its baseline",
            cause=cause,
            fix="The last log line of load_reports says how to accept this run's volume if it is legitimate; "
            "otherwise ask DexCare about the report, then clear load_reports.",
            task=task_id or None,
            table=table or None,
            report_type=str(counts.get("report_type") or "") or None,
            counts={name: counts[name] for name in _COUNT_NAMES if name in counts},
        )
    return Incident(
        kind="failure",
        **_run_fields(context),
        what=f"Task {task_id} failed" if task_id else "A task failed",
        cause=cause,
        fix=runbook_fix(task_id, cause),
        task=task_id or None,
        report_type=report_type,
    )


def volume_warning_incidents(summary: Mapping[str, Any] | None, context: Mapping[str, Any]) -> list[Incident]:
    """One incident per table the load warned about (the run stayed green); none without a verdict."""
    incidents = []
    for table, totals in ((summary or {}).get("tables") or {}).items():
        volume = (totals or {}).get("volume") or {}
        if volume.get("verdict") != "warn":
            continue
        incidents.append(
            Incident(
                kind=f"volume-{table}",
                **_run_fields(context),
                what="Volume warning: the report has far fewer rows than usual",
                cause=f"{table} got {volume.get('rows')} rows against a baseline median of "
                f"{volume.get('baseline_median')} over {volume.get('baseline_loads')} loads (below the "
                f"{volume.get('min_share')} share that warns). The run stayed green and the rows were loaded.",
                fix="Check with DexCare whether the day was really that quiet (an outage, a changed filter, a "
                "clinic's feed stopped); when it was not, run the day again once DexCare has the data.",
                table=str(table),
                report_type=_report_field(summary, table, "report_type"),
                window=_window(summary, table),
                counts={name: volume[name] for name in _COUNT_NAMES if name in volume},
            )
        )
    return incidents


def deadline_incident(context: Mapping[str, Any], hours: float) -> Incident:
    """The run was not done ``hours`` after its data interval ended (Airflow's deadline callback context)."""
    return Incident(
        kind="deadline",
        **_run_fields(context),
        what=f"Freshness deadline missed: the run is not done {hours:g} hours after its data interval ended",
        cause="The run is still queued or running (a paused DAG, runs queued behind a stuck one, a report "
        "DexCare has not finished, or a scheduler or triggerer that is down), so its tables are not fresh.",
        fix="Open the run: unpause the DAG, clear or mark the stuck task, or check DexCare's status and the "
        "scheduler; the tables' freshness is the newest window_end of a committed load in <schema>.load_audit.",
    )


def runbook_fix(task_id: str, cause: str) -> str:
    """The runbook's "what to do" for the failed task: the row whose qualifier the cause mentions, else the
    task's first row. The runbook stays the one place the fixes are written."""
    task = task_id.rpartition(".")[2]
    rows = []
    for line in RUNBOOK.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        match = re.fullmatch(r"`([a-z_]+)`\s*(.*)", cells[0]) if len(cells) == 3 else None
        if match and match[1] == task:
            rows.append((match[2].strip(' "'), cells[2]))
    for qualifier, fix in rows:
        if qualifier and any(_mentions(cause, phrase) for phrase in qualifier.split(" / ")):
            return fix
    plain = [fix for qualifier, fix in rows if not qualifier]
    if plain or rows:
        return (plain or [rows[0][1]])[0]
    return "Read the task's last log line: it names the cause and the fix; then clear the task."


def _mentions(cause: str, phrase: str) -> bool:
    """``phrase`` of a runbook row ("404", "5xx", "Report file ... is not on this worker") is in ``cause``."""
    parts = [re.escape(p.strip()).replace("xx", r"\d\d") for p in phrase.split("...")]
    return re.search(r"\b" + r"\b.*\b".join(parts) + r"\b", cause, re.IGNORECASE) is not None


# --- delivery ------------------------------------------------------------------------------------------------


def notifier_class(environ: Mapping[str, str] | None = None) -> tuple[type, dict[str, Any]] | None:
    """The notifier class and its keyword arguments named in the environment, or None when none is set.

    A name that does not import or kwargs that are no JSON object raise, so a typo fails the DAG import
    visibly instead of silently never paging anyone.
    """
    environ = os.environ if environ is None else environ
    target = environ.get(NOTIFIER_ENV, "").strip()
    if not target:
        return None
    module_name, _, attr = target.partition(":") if ":" in target else target.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise DexCareValidationError(
            f"{NOTIFIER_ENV}={target!r} does not name an importable notifier class ({exc})."
        ) from None
    try:
        kwargs = json.loads(environ.get(NOTIFIER_KWARGS_ENV) or "{}")
    except ValueError as exc:
        raise DexCareValidationError(f"{NOTIFIER_KWARGS_ENV} is not a JSON object: {exc}") from None
    if not isinstance(kwargs, dict):
        raise DexCareValidationError(f"{NOTIFIER_KWARGS_ENV} must be a JSON object, got {type(kwargs).__name__}.")
    return cls, kwargs


def send_page(page: Page, notifier: tuple[type, dict[str, Any]], context: Mapping[str, Any]) -> None:
    """Build the notifier with the deployment's kwargs and the page in the parameters it names, and send.

    The page's own fields are not rendered as templates (a cause may hold braces); the deployment's are.
    """
    cls = notifier[0]
    instance, filled = _notifier_with(notifier, page)
    if context.get("dag") is None:
        # a deadline's context (or the watchdog's) has no DAG to render the deployment's templates with
        instance.notify(dict(context))
    else:
        instance.template_fields = tuple(f for f in getattr(cls, "template_fields", ()) if f not in filled)
        instance(dict(context))
    log.info("Paged %s through %s.", page.dedup_key, cls.__name__)


def check_notifier(notifier: tuple[type, dict[str, Any]]) -> None:
    """Build the notifier once with a sample page, at parse time: kwargs it refuses (a missing ``to``, a
    misspelt name) fail the DAG import, not the first page at 03:00."""
    sample = build_page(Incident("check", "dag", "date", "run", "check", "cause", "fix"))
    try:
        _notifier_with(notifier, sample)
    except Exception as exc:
        raise DexCareValidationError(
            f"{NOTIFIER_ENV}={notifier[0].__name__} refuses {NOTIFIER_KWARGS_ENV}: {exc}. Fix: give the keyword "
            "arguments its constructor takes (the page fills subject, html_content, summary, dedup_key and the like)."
        ) from None


def _notifier_with(notifier: tuple[type, dict[str, Any]], page: Page) -> tuple[Any, dict[str, Any]]:
    cls, kwargs = notifier
    values: dict[str, Any] = {
        "subject": page.subject,
        "html_content": page.html,
        "summary": page.subject,
        "text": page.text,
        "message": page.text,
        "dedup_key": page.dedup_key,
        "alias": page.dedup_key,
        "custom_details": page.as_dict(),
        "page": page,
    }
    accepted = _named_parameters(cls)
    filled = {name: values[name] for name in _PAGE_PARAMETERS if name in accepted}
    return cls(**{**kwargs, **filled}), filled


def page_deployment_url() -> str | None:
    """The Airflow UI's address from ``[api] base_url``, for the page's links; None when not configured."""
    try:
        from airflow.configuration import conf

        url = conf.get("api", "base_url", fallback="") or ""
    except Exception:  # a page must go out even when the configuration cannot be read
        return None
    return url if url.startswith(("http://", "https://")) else None


def deliver(
    incidents: list[Incident],
    notifier: tuple[type, dict[str, Any]] | None,
    context: Mapping[str, Any],
    environ: Mapping[str, str] | None = None,
) -> list[Page]:
    """One page per incident through ``notifier``; returns the pages (none without a notifier)."""
    if notifier is None:
        return []
    environ = os.environ if environ is None else environ
    pages = [
        build_page(i, base_url=page_deployment_url(), runbook_url=environ.get(RUNBOOK_URL_ENV) or None)
        for i in incidents
    ]
    for page in pages:
        send_page(page, notifier, context)
    return pages


class FailurePager:
    """The task failure callback: one page for the failure, through the notifier resolved at parse time."""

    def __init__(self, notifier: tuple[type, dict[str, Any]]) -> None:
        self.notifier = notifier

    def __call__(self, context: Mapping[str, Any]) -> None:
        deliver([failure_incident(context)], self.notifier, context)


class VolumeWarningPager:
    """load_reports' success callback: one page per table whose volume the load warned about."""

    def __init__(self, notifier: tuple[type, dict[str, Any]]) -> None:
        self.notifier = notifier

    def __call__(self, context: Mapping[str, Any]) -> None:
        ti = context["ti"]
        summary = ti.xcom_pull(task_ids=ti.task_id, key="return_value")
        deliver(volume_warning_incidents(summary, context), self.notifier, context)


async def page_missed_deadline(context: Mapping[str, Any], hours: float) -> None:
    """Airflow's deadline callback (run in the triggerer): the same page as a failure, kind ``deadline``.

    The notifier is read from the triggerer's environment at the miss, so no notifier secret is stored with the
    deadline in the metadata database.
    """
    notifier = notifier_class()
    if notifier is None:
        log.warning("Deadline missed, but %s is not set in the triggerer's environment: nobody is paged.", NOTIFIER_ENV)
        return
    await asyncio.to_thread(deliver, [deadline_incident(context, hours)], notifier, context)


# --- reading a callback's context ----------------------------------------------------------------------------


def _run_fields(context: Mapping[str, Any]) -> dict[str, Any]:
    """dag_id, logical date and run id from a task callback's context or a deadline's (whose dag_run is JSON)."""
    run = context.get("dag_run")
    get: Callable[[str], Any] = run.get if isinstance(run, Mapping) else (lambda name: getattr(run, name, None))
    dag = context.get("dag")
    dag_id = get("dag_id") or getattr(dag, "dag_id", None) or "unknown"
    # the deadline's JSON names the run id dag_run_id, and writes UTC as Z: one key spelling for both
    run_id = str(get("run_id") or get("dag_run_id") or context.get("run_id") or "")
    when = get("logical_date") or context.get("logical_date") or get("run_after") or run_id
    if isinstance(when, str):
        with contextlib.suppress(ValueError):
            when = dt.datetime.fromisoformat(when)
    logical = when.isoformat() if isinstance(when, dt.datetime | dt.date) else str(when)
    return {"dag_id": str(dag_id), "logical_date": logical, "run_id": run_id}


def _map_label(ti: Any) -> str | None:
    """The report type of a mapped fetch task (its map index template renders the type), if any."""
    label = getattr(ti, "rendered_map_index", None)
    return str(label) if label else None


def _report_field(summary: Mapping[str, Any] | None, table: str, name: str) -> str | None:
    """A field of the summary's first audit entry for ``table`` (all of a table's reports share it)."""
    for report in (summary or {}).get("reports") or []:
        if report.get("target_table") == table and report.get(name):
            return str(report[name])
    return None


def _window(summary: Mapping[str, Any] | None, table: str) -> str | None:
    start, end = _report_field(summary, table, "window_start"), _report_field(summary, table, "window_end")
    return f"{start}..{end}" if start else None


def _named_parameters(cls: type) -> set[str]:
    """Parameters ``cls`` names itself (not ones it only takes through ``**kwargs``)."""
    try:
        parameters = inspect.signature(cls).parameters.values()
    except (TypeError, ValueError):
        return set()
    return {p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
