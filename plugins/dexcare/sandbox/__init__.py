"""A local DexCare: a real HTTP server and a deterministic report generator, for work without credentials."""

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

__all__ = [
    "COLUMNS",
    "ID_COLUMN",
    "STATUS_VALUES",
    "UPDATED_COLUMN",
    "iter_report_csv",
    "iter_report_rows",
    "report_size",
    "visit_id",
    "visits_per_day_for",
    "write_report_csv",
]
