"""A local DexCare: a real HTTP server and a deterministic report generator, for work without credentials.

``SandboxServer`` answers like DexCare's All Visits Reports API; ``python -m dexcare.sandbox`` runs it as
a process. The generator functions make the same CSVs offline, e.g. for loader benchmarks.
"""

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
