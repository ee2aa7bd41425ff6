"""Load one DAG run's reports into the warehouse (PostgreSQL or SQL Server) in a single transaction.

Everything a run does (create or widen tables, stage, dedupe, upsert, audit) happens inside one transaction
behind a lock on the schema, so after any failure every table is exactly as before and two runs on the same
schema (a backfill next to the daily run) queue instead of interleaving. Re-running the same run is safe:
unchanged rows are not rewritten, so a retry after an unknown commit outcome is harmless.

This module is the part both warehouses share: it reads the header, normalises the names, resolves keys and
versions, plans the table (:mod:`dexcare.load.plan`), verifies the file, and writes the audit record and
the summary; a :class:`~dexcare.load.dialects.base.Dialect` does the rest. It needs no Airflow task, scheduler or
metadata database (tests, the benchmark and scripts call it directly), but it does import Airflow: its
exceptions derive from ``AirflowException``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from dexcare.csv_records import CsvRecordCounter, unrecognised_header
from dexcare.exceptions import DexCareCSVError, DexCareLoadError, DexCareSchemaError
from dexcare.handoff import ReportHandoff
from dexcare.load import diagnostics, volume
from dexcare.load.audit import audit_entry, summarise
from dexcare.load.csv_stream import Opener, open_report, read_header
from dexcare.load.dialects import dialect_for
from dexcare.load.dialects.base import Dialect, MergeCounts
from dexcare.load.identifiers import normalize_headers, resolve_columns
from dexcare.load.options import DEFAULT_SCHEMA, LoadOptions, table_for
from dexcare.load.plan import LoadPlan, history_table, lineage_values, plan_load
from dexcare.report import ReportType

__all__ = ["DEFAULT_SCHEMA", "LoadOptions", "load_reports", "table_for"]

log = logging.getLogger(__name__)


class _Tap:
    """Hash the bytes as they pass, and count the records when the download did not, so verifying the file
    costs no second read."""

    def __init__(self, raw: BinaryIO, hasher: Any, counter: CsvRecordCounter | None) -> None:
        self._raw = raw
        self._hasher = hasher
        self._counter = counter

    def read(self, size: int = -1) -> bytes:
        block = self._raw.read(size)
        if self._hasher is not None:
            self._hasher.update(block)
        if self._counter is not None:
            self._counter.feed(block)
        return block


@dataclass
class _Run:
    """One call of :func:`load_reports`: the dialect, the run's identity and its cache of resolved types."""

    dialect: Dialect
    options: LoadOptions
    dag_id: str | None
    run_id: str | None
    opener: Opener
    loaded_at: dt.datetime
    #: Stands in for a report's missing window end (:meth:`ReportHandoff.window`).
    run_date: dt.date
    type_cache: dict[str, str] = field(default_factory=dict)
    #: (report type, window days) already said to have no baseline in this run: the log says it once.
    no_baseline_said: set[tuple[str, int]] = field(default_factory=set)

    def configured_types(self, rtype: ReportType, columns: list[str]) -> dict[str, str]:
        resolved = {}
        for column, name in self.options.types_for(rtype).items():
            if column not in columns:
                continue
            if name not in self.type_cache:
                self.type_cache[name] = self.dialect.resolve_type(
                    name, where=f"column_types[{rtype.value!r}][{column!r}]")
            resolved[column] = self.type_cache[name]
        return resolved

    def load_one(self, report: ReportHandoff, index: int) -> dict[str, Any]:
        started = dt.datetime.now(dt.UTC)
        source = report.uri
        hasher = hashlib.sha256() if self.options.verify_sha256 and report.sha256 else None
        try:
            raw = self.opener(report.uri)
        except OSError as exc:
            raise DexCareLoadError(f"{source}: cannot open the report file ({exc.strerror or exc}).") from None
        # Without the download's count (a result from elsewhere), the records are counted on the way in.
        counter = CsvRecordCounter(header=False) if report.rows is None else None
        with raw:
            stream: Any = _Tap(raw, hasher, counter)
            try:
                header = read_header(stream, source=source)
                plan = self.plan(report, header.fields)
                rows_in_file = self.dialect.stage(plan, header, stream, index)
            except Exception:
                # A file that is not the one downloaded explains whatever else went wrong reading it: say that.
                if hasher is not None and report.sha256 and _drained(stream) and not _matches(hasher, report):
                    raise _changed_since_download(report) from None
                raise
        if hasher is not None and report.sha256 and not _matches(hasher, report):
            raise _changed_since_download(report)
        counted = counter.data_rows if counter is not None else report.rows or 0  # no counter: the download's
        if counted != rows_in_file:
            # Before the merge and the commit: a row the warehouse did not take (PostgreSQL < 18 ends a CSV
            # COPY at a line holding only \.) would otherwise be a visit missing from a green run.
            by = "the download" if counter is None else "a count of the file"
            raise diagnostics.row_count_error(source, counted=counted, staged=rows_in_file, by=by, opener=self.opener)
        judged = self.judge_volume(report, plan.table, rows_in_file)
        counts = self.dialect.merge(plan, rows_in_file, index)
        window_start, window_end = report.window(self.run_date)
        entry = audit_entry(
            dag_id=self.dag_id, run_id=self.run_id, report_id=report.report_id,
            report_type=report.loadable_type().value, table=plan.table, uri=report.uri, sha256=report.sha256,
            window_start=window_start, window_end=window_end, rows_in_file=rows_in_file,
            duplicates=counts.duplicates, inserted=counts.inserted, updated=counts.updated,
            new_columns=plan.new_columns, started_at=started, kept_newer=counts.kept_newer,
        )
        self.dialect.record_audit(entry)
        return {**entry, **described(plan, report, counts), "volume": judged.as_dict()}

    def judge_volume(self, report: ReportHandoff, table: str, rows: int) -> volume.Volume:
        """The volume guard, before the merge: an empty report against a non-empty baseline stops the run
        here, so the rollback leaves every table as it was (:mod:`dexcare.load.volume`)."""
        rtype = report.loadable_type()
        window_start, window_end = report.window(self.run_date)
        days = (window_end - window_start).days
        judged = volume.judge(rows, self.dialect.volume_baseline(rtype.value, days, volume.BASELINE_LOADS),
                              min_share=self.options.min_share_for(rtype),
                              accepted=self.options.accepts_volume(rtype))
        where: dict[str, Any] = {"table": table, "report_type": rtype.value, "report_id": report.report_id,
                                 "days": days}
        if judged.verdict == volume.EMPTY:
            raise volume.empty_error(judged, **where)
        if judged.verdict == volume.WARN:
            log.warning("%s", volume.warning_line(judged, **where))
        elif judged.verdict == volume.ACCEPTED:
            log.warning("Volume guard: report %s (%s) has %d rows against a baseline median of %g; loaded "
                        "because accept_volume lets %s through in this run.", report.report_id, rtype.value,
                        rows, judged.baseline_median, rtype.value)
        elif judged.verdict == volume.NO_BASELINE and (rtype.value, days) not in self.no_baseline_said:
            self.no_baseline_said.add((rtype.value, days))
            log.info("%s", volume.no_baseline_line(rtype.value, days, judged.baseline_loads))
        return judged

    def plan(self, report: ReportHandoff, headers: list[str]) -> LoadPlan:
        source, rtype = report.uri, report.loadable_type()
        window_start, window_end = report.window(self.run_date)
        wanted = self.options.keys_for(rtype)
        # First: until the key columns are found, the "header" may be a patient's record, and the errors
        # below (and the summary, lineage, logs) echo header names.
        reason = unrecognised_header(headers, wanted)
        if reason is not None:
            raise DexCareSchemaError(
                f"{source}: line 1: {reason}. Check key_columns for {rtype.value!r} reports, or whether the file "
                "is a DexCare All Visits Report at all."
            )
        columns = normalize_headers(headers, source=source)
        keys = resolve_columns(wanted, columns, what="key", source=source)
        version = self.options.version_for(rtype)
        table = table_for(rtype)
        history = self.options.history_for(rtype)
        plan = plan_load(
            schema=self.options.schema,
            table=table,
            source=source,
            headers=headers,
            columns=columns,
            keys=keys,
            version=resolve_columns([version], columns, what="version", source=source)[0] if version else None,
            configured=self.configured_types(rtype, columns),
            existing=self.dialect.existing_columns(table),
            types=self.dialect.types,
            lineage=lineage_values(report_id=report.report_id, report_type=rtype.value,
                                   window_start=window_start, window_end=window_end,
                                   loaded_at=self.loaded_at),
            history=history,
            history_existing=self.dialect.existing_columns(history_table(table)) if history else None,
        )
        schema = plan.schema
        if plan.create:
            log.info("Created table %s.%s with %d columns from the header of %s", schema, table, len(columns),
                     source)
        if plan.new_columns:
            log.warning("Schema drift: added column(s) %s to %s.%s (new in %s)", ", ".join(plan.new_columns),
                        schema, table, source)
        if plan.history is not None and plan.history.create:
            log.info("Created table %s.%s: every change to %s.%s is appended to it%s", schema, plan.history.table,
                     schema, table, ", starting with the rows the table holds now" if plan.history.baseline else "")
        for column, existing, wanted in plan.retyped:
            log.warning("Column %s.%s.%s is %s but %s is configured; types are never changed automatically, "
                        "values are cast to %s", schema, table, column, existing, wanted, existing)
        return plan


def _record_opener(files: Sequence[ReportHandoff]) -> Opener:
    """Open a report by its URI through the location its record already parsed: the first read and every
    re-read of the error path (which the dialect asks for by URI) use that one parse."""
    locations = {report.uri: report.location for report in files}

    def open_(uri: str) -> BinaryIO:
        location = locations.get(uri)
        return location.open() if location is not None else open_report(uri)

    return open_


def _matches(hasher: Any, report: ReportHandoff) -> bool:
    return hasher.hexdigest() == (report.sha256 or "").lower()


def _drained(stream: Any) -> bool:
    """Read what is left (hashing it) on an error path; ``False`` if the file cannot be read to its end."""
    try:
        while stream.read(1 << 20):
            pass
    except Exception:
        return False
    return True


def _changed_since_download(report: ReportHandoff) -> DexCareCSVError:
    return DexCareCSVError(
        f"{report.uri}: sha256 of the file is not the one recorded at download ({report.sha256}); "
        "the file changed or was truncated since: download the report again."
    )


def described(plan: LoadPlan, report: ReportHandoff, counts: MergeCounts) -> dict[str, Any]:
    """What the summary says of a load beyond its audit row: the shape of what was read and written, for
    OpenLineage (:mod:`dexcare.lineage`) and downstream tasks. Names and counts only, never a value."""
    out: dict[str, Any] = {
        "header": list(plan.headers),
        "file_columns": list(plan.columns),
        "casts": list(plan.casts),
        "table_columns": [list(column) for column in plan.shape],
        "bytes": report.bytes,
        "endpoint": report.endpoint,
    }
    if plan.history is not None:
        out.update(history_table=plan.history.table, history_rows=counts.history,
                   history_columns=[list(column) for column in plan.history.shape])
    return out


def load_reports(
    conn: Any,
    reports: Iterable[ReportHandoff | Mapping[str, Any]],
    *,
    dialect: str,
    options: LoadOptions | None = None,
    run_date: dt.date | None = None,
    dag_id: str | None = None,
    run_id: str | None = None,
    opener: Opener | None = None,
) -> dict[str, Any]:
    """Load all ``reports`` in one transaction on ``conn`` and return a JSON-ready summary.

    ``conn`` is a psycopg 3 connection (PostgreSQL) or a pymssql connection (SQL Server), and ``dialect`` says which
    (``"postgres"`` or ``"mssql"``, :data:`~dexcare.load.dialects.DIALECTS`; an Airflow connection's
    ``conn_type`` is one too): the caller knows, from the connection it opened, so nothing guesses from the
    driver's class. The load owns its transaction so that it can promise all-or-nothing: a PostgreSQL connection
    must be idle, and on SQL Server the load commits or rolls back whatever the connection's transaction holds,
    so hand it a connection with no pending work. ``reports`` are hand-off records (:mod:`dexcare.handoff`) or
    their XCom form, the download's result. ``run_date`` stands in for a missing window end (today in UTC by
    default). ``opener`` opens a report URI for reading, on the fast path and again on the error path; by
    default each report is opened through the location its record parsed. The summary has ``schema``,
    ``dag_id``, ``run_id``, ``started_at``, ``finished_at``, ``reports`` (one dict per report, the same fields as
    the ``load_audit`` row) and ``tables`` (totals per table).
    """
    options = options or LoadOptions()
    run_date = run_date or dt.datetime.now(dt.UTC).date()
    files = [r if isinstance(r, ReportHandoff) else ReportHandoff.from_xcom(r) for r in reports]
    for report in files:
        report.loadable_type()  # before the transaction: a record that cannot be loaded changes nothing
    opener = opener or _record_opener(files)
    warehouse = dialect_for(dialect)(conn, options, opener)
    started = dt.datetime.now(dt.UTC)
    run = _Run(warehouse, options, dag_id, run_id, opener, started, run_date)
    entries: list[dict[str, Any]] = []
    current = "(setup)"
    committing = False
    try:
        with warehouse.transaction():
            warehouse.begin()
            for index, report in enumerate(files):
                current = report.uri
                entries.append(run.load_one(report, index))
            current = "(commit)"
            committing = True
    except DexCareLoadError:
        raise
    except Exception as exc:
        translated = warehouse.translate(exc, current=current, committing=committing)
        if translated is None:
            raise
        # A lost connection keeps its cause (no row values in it); a refusal's detail can quote a row.
        raise translated from (exc if translated.retryable else None)
    finished = dt.datetime.now(dt.UTC)
    return summarise(options.schema, dag_id, run_id, started, finished, entries)
