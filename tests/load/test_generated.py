"""Realistic reports from the sandbox generator: what the warehouse stored is what Python's csv module reads.

The generator's fields hold commas, quotes, CRLF and bare newlines inside quotes, and non-ASCII; visits
repeat within a file (the later copy is the newer state) and across overlapping daily windows.
"""

from __future__ import annotations

import csv
import datetime as dt
from pathlib import Path

from dexcare.load.identifiers import normalize_headers
from dexcare.report import ReportType
from dexcare.sandbox.generator import write_report_csv

from tests.load.conftest import END, report


def _expected(path: Path, state: dict[str, dict[str, str | None]]) -> None:
    """Fold a file into ``state`` the way the loader should: last occurrence wins, empty field is NULL."""
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle)
        names = normalize_headers(next(reader), source=str(path))
        for record in reader:
            row = dict(zip(names, record, strict=True))
            state[row["visit_id"]] = {k: (v if v != "" else None) for k, v in row.items()}


def test_generated_reports_round_trip_over_two_days(load, tmp_path, warehouse, schema) -> None:
    expected: dict[ReportType, dict[str, dict[str, str | None]]] = {t: {} for t in ReportType}
    for day in range(2):
        end = END + dt.timedelta(days=day)
        reports = []
        for rtype in ReportType:
            path = tmp_path / f"{rtype.value}_{day}.csv"
            n = write_report_csv(path, rtype, end - dt.timedelta(days=9), end, seed=7, visits_per_day=30,
                                 duplicate_rate=0.1)
            assert n > 300
            reports.append(report(path, rtype.value, end=end))
            _expected(path, expected[rtype])
        summary = load(*reports)
        for rtype in ReportType:
            table = summary["tables"][f"avr_{rtype.value}"]
            assert table["duplicates_in_file"] > 0
            if day == 1:
                # The next day's window: one new day of visits, the rest known (some changed state).
                assert table["inserted"] == 30 and table["updated"] > 0 and table["unchanged"] > 0
    for rtype in ReportType:
        stored = {r["visit_id"]: r for r in warehouse.rows(schema, f"avr_{rtype.value}")}
        assert stored == expected[rtype]
    assert "Zürich" in str(warehouse.rows(schema, "avr_retail"))
