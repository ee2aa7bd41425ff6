"""How to load: the per-report-type settings, checked up front (what to load is :mod:`dexcare.handoff`).

Kept apart from the loader so the operator can validate its arguments at DAG parse time without
touching the database.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from dexcare.csv_records import DEFAULT_KEY, normalize_identifier
from dexcare.exceptions import DexCareSchemaError
from dexcare.load.csv_stream import BLOCK_SIZE
from dexcare.load.volume import DEFAULT_MIN_SHARE, accepted_types, min_shares
from dexcare.report import ReportType

DEFAULT_SCHEMA = "dexcare"


def table_for(report_type: ReportType) -> str:
    """One table per report type: their columns differ, and a key is only unique within a type."""
    return f"avr_{report_type.value}"


def _by_type(mapping: Mapping[str, Any] | None, what: str) -> dict[ReportType, Any]:
    out: dict[ReportType, Any] = {}
    for key, value in (mapping or {}).items():
        try:
            out[ReportType.parse(key)] = value
        except ValueError:
            raise DexCareSchemaError(f"{what}: {key!r} is not a report type.") from None
    return out


def history_types(history: Sequence[str] | str | None) -> frozenset[ReportType]:
    """The report types whose history is kept; a name that is not a report type is refused, naming it."""
    names = [history] if isinstance(history, str) else list(history or ())
    found = set()
    for name in names:
        try:
            found.add(ReportType.parse(name))
        except ValueError:
            allowed = ", ".join(t.value for t in ReportType)
            raise DexCareSchemaError(f"history: {name!r} is not a report type; use a list of {allowed}.") from None
    return frozenset(found)


@dataclass(frozen=True)
class LoadOptions:
    """How to load; every mapping is keyed by report type (``"virtual"``, ``"retail"``, ...)."""

    schema: str = DEFAULT_SCHEMA
    #: Dedupe/upsert key per report type, header names or normalised names; default ``visit_id``.
    key_columns: Mapping[str, Sequence[str]] = field(default_factory=dict)
    #: Within one file the newest row by this column wins (instead of the last one), per report type.
    version_columns: Mapping[str, str] = field(default_factory=dict)
    #: ``{"virtual": {"updated_at": "timestamptz"}}``: cast in SQL; everything else stays text. On SQL Server
    #: its own names (``datetimeoffset``) or the PostgreSQL spellings it maps (``timestamptz``, ``integer``).
    column_types: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    #: PostgreSQL: server memory for the hash joins and the key index build of this transaction only
    #: (``SET LOCAL`` of work_mem and maintenance_work_mem); too little makes them spill to disk, not fail.
    work_mem: str | None = "256MB"
    #: PostgreSQL: server memory for the staging temp table (``temp_buffers``; a bigger file spills to disk).
    temp_buffers: str | None = "512MB"
    #: Check the file against the download's sha256 while streaming it (costs ~0.3 s per 300 MB).
    verify_sha256: bool = True
    block_size: int = BLOCK_SIZE
    #: SQL Server: rows parsed in Python per bulk copy; the worker holds about one batch in memory.
    batch_rows: int = 10_000
    #: SQL Server: how long a load waits for another load of the same schema (``sp_getapplock``'s timeout)
    #: before it fails, retryably, naming the holder; a hung holder can otherwise stall every later run.
    lock_timeout_seconds: float = 1800
    #: Report types whose every change is also appended to ``avr_<type>_history`` (e.g. ``["virtual"]``).
    history: Sequence[str] = ()
    #: The volume guard's warning threshold, a share of the baseline median: one for every report type, or per
    #: type (``{"virtual": 0.3, "*": 0.5}``); default 0.5 (:mod:`dexcare.load.volume`).
    volume_min_share: float | str | Mapping[str, Any] | None = None
    #: Let this run load what the volume guard would refuse: ``True`` or report types (``["virtual"]``).
    accept_volume: bool | Sequence[str] = False

    def keys_for(self, report_type: ReportType) -> Sequence[str]:
        keys = _by_type(self.key_columns, "key_columns").get(report_type, DEFAULT_KEY)
        return [keys] if isinstance(keys, str) else list(keys)

    def version_for(self, report_type: ReportType) -> str | None:
        return _by_type(self.version_columns, "version_columns").get(report_type)

    def history_for(self, report_type: ReportType) -> bool:
        return report_type in history_types(self.history)

    def min_share_for(self, report_type: ReportType) -> float:
        shares = min_shares(self.volume_min_share, where="volume_min_share")
        return shares.get(report_type.value, shares.get("*", DEFAULT_MIN_SHARE))

    def accepts_volume(self, report_type: ReportType) -> bool:
        return report_type.value in accepted_types(self.accept_volume)

    def types_for(self, report_type: ReportType) -> dict[str, str]:
        types = _by_type(self.column_types, "column_types").get(report_type, {})
        return {normalize_identifier(c): t for c, t in types.items()}
