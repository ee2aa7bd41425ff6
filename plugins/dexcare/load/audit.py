"""The audit record of a load and the summary built from it, the same for every warehouse.

One ``load_audit`` row per report is written in the load's own transaction (each dialect has its DDL for
the table), so the table never claims a load that did not happen, and ``SELECT ... FROM load_audit``
answers "which report last wrote this visit" together with the lineage columns on the rows themselves.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from dexcare.load import volume

if TYPE_CHECKING:
    from dexcare.handoff import ReportHandoff

AUDIT_TABLE = "load_audit"

#: The columns of ``load_audit`` after its ``id``, in table order; an entry carries at least these. A column
#: added after the table's first release comes last: a load adds it to an older table (each dialect's
#: ``begin``), with 0 in the rows written before.
AUDIT_FIELDS = (
    "dag_id",
    "run_id",
    "report_id",
    "report_type",
    "target_table",
    "file_uri",
    "file_sha256",
    "window_start",
    "window_end",
    "rows_in_file",
    "duplicates_in_file",
    "inserted",
    "updated",
    "unchanged",
    "new_columns",
    "started_at",
    "finished_at",
    "kept_newer",
)

#: The per-table totals of a run's summary (and of each asset event's extra).
#: ``unchanged`` are rows equal to the table's; ``kept_newer`` rows the old-window guard did not overwrite because
#: a newer window had written them (a refused backfill, not a quiet day).
COUNTS = ("rows_in_file", "duplicates_in_file", "inserted", "updated", "unchanged", "kept_newer")


def audit_entry(
    *,
    dag_id: str | None,
    run_id: str | None,
    report_id: str,
    report_type: str,
    table: str,
    uri: str,
    sha256: str | None,
    window_start: dt.date,
    window_end: dt.date,
    rows_in_file: int,
    duplicates: int,
    inserted: int,
    updated: int,
    new_columns: Sequence[str],
    started_at: dt.datetime,
    kept_newer: int = 0,
) -> dict[str, Any]:
    """The audit row of one report; ``unchanged`` leaves out the rows the old-window guard kept
    (``kept_newer``)."""
    return {
        "dag_id": dag_id,
        "run_id": run_id,
        "report_id": report_id,
        "report_type": report_type,
        "target_table": table,
        "file_uri": uri,
        "file_sha256": sha256,
        "window_start": window_start,
        "window_end": window_end,
        "rows_in_file": rows_in_file,
        "duplicates_in_file": duplicates,
        "inserted": inserted,
        "updated": updated,
        "unchanged": rows_in_file - duplicates - inserted - updated - kept_newer,
        "kept_newer": kept_newer,
        "new_columns": list(new_columns),
        "started_at": started_at,
        "finished_at": dt.datetime.now(dt.UTC),
    }


def iso(value: Any) -> Any:
    return value.isoformat() if isinstance(value, dt.date | dt.datetime) else value


def summarise(schema: str, dag_id: str | None, run_id: str | None, started: dt.datetime,
              finished: dt.datetime, entries: list[dict[str, Any]]) -> dict[str, Any]:
    """The JSON-ready result of a run: every audit entry and the totals per table."""
    tables: dict[str, dict[str, Any]] = {}
    for entry in entries:
        totals = tables.setdefault(entry["target_table"], {"reports": 0, **dict.fromkeys(COUNTS, 0),
                                                           "new_columns": []})
        totals["reports"] += 1
        for name in COUNTS:
            totals[name] += entry[name]
        totals["new_columns"] += [c for c in entry["new_columns"] if c not in totals["new_columns"]]
        if entry.get("volume"):
            totals["volume"] = volume.worst([v for v in (totals.get("volume"), entry["volume"]) if v])
        if entry.get("history_table"):
            totals["history_table"] = entry["history_table"]
            totals["history_rows"] = totals.get("history_rows", 0) + entry["history_rows"]
    return {
        "schema": schema,
        "dag_id": dag_id,
        "run_id": run_id,
        "started_at": started.isoformat(),
        "finished_at": finished.isoformat(),
        "reports": [{k: iso(v) for k, v in e.items()} for e in entries],
        "tables": tables,
    }


def summary_line(schema: str, table: str, totals: dict[str, Any]) -> str:
    """The one log line per table a run ends with; counts only, never row contents."""
    new = f", new columns: {', '.join(totals['new_columns'])}" if totals["new_columns"] else ""
    history = (f", {totals['history_rows']} row(s) appended to {schema}.{totals['history_table']}"
               if totals.get("history_table") else "")
    return (
        f"Loaded {schema}.{table}: {totals['reports']} report(s), {totals['rows_in_file']} rows in file(s), "
        f"{totals['duplicates_in_file']} duplicates in file(s), {totals['inserted']} inserted, "
        f"{totals['updated']} updated, {totals['unchanged']} unchanged, {totals.get('kept_newer', 0)} kept "
        f"because a newer window wrote them{new}{history}"
    )


def committed_entries(reports: Sequence[ReportHandoff], rows: Sequence[Mapping[str, Any]]
                      ) -> list[dict[str, Any]] | None:
    """The audit rows that show every one of ``reports`` already committed, one per report (its newest), or
    ``None`` if any is missing.

    A report counts when a row has its id and, where the download recorded a sha256, the same file: the load
    writes its audit row in its own transaction, so the row exists exactly when the load committed.
    """
    entries = []
    for report in reports:
        sha256 = (report.sha256 or "").lower()
        matches = [row for row in rows if row["report_id"] == report.report_id
                   and (not sha256 or (row["file_sha256"] or "").lower() == sha256)]
        if not matches:
            return None
        entries.append(dict(matches[-1]))
    return entries


def committed_summary(schema: str, dag_id: str | None, run_id: str | None,
                      entries: list[dict[str, Any]]) -> dict[str, Any]:
    """The summary of a load an earlier try committed, rebuilt from its audit rows and marked
    ``already_loaded``: the same keys and counts the load returned then (without the file shapes, which only
    the file itself can tell)."""
    for entry in entries:
        entry["new_columns"] = list(entry.get("new_columns") or [])
        for name in COUNTS:
            entry[name] = int(entry.get(name) or 0)  # kept_newer: absent from a table not yet upgraded
    started = min(instant(e["started_at"]) for e in entries)
    finished = max(instant(e["finished_at"]) for e in entries)
    return {**summarise(schema, dag_id, run_id, started, finished, entries), "already_loaded": True}


def instant(value: Any) -> dt.datetime:
    """A timestamp as the driver returns it: a datetime (psycopg), or ISO text (SQL Server via FreeTDS)."""
    return value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(str(value))
