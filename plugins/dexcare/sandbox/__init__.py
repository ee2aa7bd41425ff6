"""A local DexCare: a real HTTP server and a deterministic report generator, for work without credentials.

``SandboxServer`` answers like DexCare's All Visits Reports API; ``python -m dexcare.sandbox`` runs it as
a process. The generator functions make the same CSVs offline, e.g. for loader benchmarks.

Names are resolved lazily: importing ``dexcare.report`` imports Airflow, whose start-up may print to
stdout, and ``python -m dexcare.sandbox`` must control its stdout from the first byte (other processes
parse its one "listening" line).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dexcare.sandbox.faults import REPORT_FAULTS, REQUEST_FAULTS, Fault, FaultKind, parse_fault_spec
    from dexcare.sandbox.generator import (
        COLUMNS,
        ID_COLUMN,
        STATUS_VALUES,
        UPDATED_COLUMN,
        iter_report_csv,
        iter_report_rows,
        report_size,
        visit_id,
        visits_per_day_for,
        write_report_csv,
    )
    from dexcare.sandbox.server import FAULTS_PATH, Report, SandboxServer

_EXPORTS = {
    "dexcare.sandbox.faults": ("REPORT_FAULTS", "REQUEST_FAULTS", "Fault", "FaultKind", "parse_fault_spec"),
    "dexcare.sandbox.generator": (
        "COLUMNS", "ID_COLUMN", "STATUS_VALUES", "UPDATED_COLUMN", "iter_report_csv", "iter_report_rows",
        "report_size", "visit_id", "visits_per_day_for", "write_report_csv",
    ),
    "dexcare.sandbox.server": ("FAULTS_PATH", "Report", "SandboxServer"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = [
    "COLUMNS",
    "FAULTS_PATH",
    "ID_COLUMN",
    "REPORT_FAULTS",
    "REQUEST_FAULTS",
    "STATUS_VALUES",
    "UPDATED_COLUMN",
    "Fault",
    "FaultKind",
    "Report",
    "SandboxServer",
    "iter_report_csv",
    "iter_report_rows",
    "parse_fault_spec",
    "report_size",
    "visit_id",
    "visits_per_day_for",
    "write_report_csv",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
