"""The generator's contract: deterministic, realistic, window-aware, CSV-correct and streaming."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import re
import tracemalloc
import uuid

import pytest
from dexcare.report import ReportType
from dexcare.sandbox import (
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
from dexcare.sandbox.generator import VISIT_NAMESPACE

START, END = dt.date(2026, 11, 1), dt.date(2026, 11, 10)
TYPES = list(ReportType)


def snake(name: str) -> str:
    """What a loader does to a header: 'Visit ID', 'visitId', 'lastModifiedUTC' -> snake_case."""
    name = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name.strip())
    name = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", name)
    return re.sub(r"[^0-9a-zA-Z]+", "_", name).strip("_").lower()


def csv_bytes(report_type, start=START, end=END, **kwargs) -> bytes:
    return b"".join(iter_report_csv(report_type, start, end, **kwargs))


def rows_of(report_type, start=START, end=END, **kwargs) -> list[list[str]]:
    return list(iter_report_rows(report_type, start, end, **kwargs))


@pytest.mark.parametrize("report_type", TYPES)
def test_same_seed_same_bytes_other_seed_differs(report_type):
    first = csv_bytes(report_type, seed=7, visits_per_day=30)
    assert first == csv_bytes(report_type, seed=7, visits_per_day=30)
    assert hashlib.sha256(first).digest() != hashlib.sha256(csv_bytes(report_type, seed=8, visits_per_day=30)).digest()


@pytest.mark.parametrize("report_type", TYPES)
def test_bytes_are_exactly_what_csv_writer_produces_and_round_trip(report_type):
    rows = rows_of(report_type, seed=3, visits_per_day=200)
    expected = io.StringIO(newline="")
    csv.writer(expected, quoting=csv.QUOTE_MINIMAL, lineterminator="\r\n").writerows(rows)
    data = csv_bytes(report_type, seed=3, visits_per_day=200, chunk_size=999)
    assert data == expected.getvalue().encode("utf-8")
    assert list(csv.reader(io.StringIO(data.decode("utf-8"), newline=""))) == rows
    assert report_size(report_type, START, END, seed=3, visits_per_day=200) == len(data)


def test_chunks_have_the_requested_size():
    chunks = list(iter_report_csv("retail", START, END, visits_per_day=50, chunk_size=4096))
    assert len(chunks) > 3
    assert all(len(c) == 4096 for c in chunks[:-1]) and 0 < len(chunks[-1]) <= 4096


def test_headers_differ_per_type_and_normalise_to_visit_id_and_a_version_column():
    headers = {t: rows_of(t, START, START, visits_per_day=1)[0] for t in TYPES}
    assert headers == COLUMNS
    assert len({tuple(h) for h in headers.values()}) == 3
    normalised = {t: {snake(c) for c in h} for t, h in headers.items()}
    assert normalised[ReportType.VIRTUAL] != normalised[ReportType.RETAIL] != normalised[ReportType.PROVIDER_BOOKING]
    for t in TYPES:
        assert snake(ID_COLUMN[t]) == "visit_id" and headers[t][0] == ID_COLUMN[t]
        assert UPDATED_COLUMN[t] in headers[t]
    # Three header styles a loader must cope with.
    assert "Visit ID" in headers[ReportType.RETAIL] and "visitId" in headers[ReportType.VIRTUAL]
    assert "lastModifiedUTC" in headers[ReportType.PROVIDER_BOOKING]
    assert snake("lastModifiedUTC") == "last_modified_utc"


@pytest.mark.parametrize("report_type", TYPES)
def test_rows_are_well_formed(report_type):
    rows = rows_of(report_type, visits_per_day=100)
    header, body = rows[0], rows[1:]
    updated = header.index(UPDATED_COLUMN[report_type])
    status_col = next(i for i, c in enumerate(header) if "status" in c.lower())
    iso = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
    assert all(len(r) == len(header) for r in body)
    assert all(iso.match(r[updated]) for r in body)
    assert {r[status_col] for r in body} <= set(STATUS_VALUES[report_type])
    assert len({r[status_col] for r in body}) >= 4  # a realistic mix, not one status
    for r in body:
        uuid.UUID(r[0])


def test_visit_ids_are_uuid5_of_seed_type_day_index_whatever_the_window():
    day = dt.date(2026, 11, 3)
    expected = str(uuid.uuid5(VISIT_NAMESPACE, f"5/retail/{day.isoformat()}/0"))
    assert visit_id(5, "retail", day, 0) == expected
    alone = rows_of("retail", day, day, seed=5, visits_per_day=3, duplicate_rate=0)
    assert alone[1][0] == expected
    wide = {r[0] for r in rows_of("retail", START, END, seed=5, visits_per_day=3)[1:]}
    assert {r[0] for r in alone[1:]} <= wide
    assert visit_id(5, "virtual", day, 0) != expected  # types have their own visits


def test_overlapping_windows_share_visits_whose_state_moved_on():
    early = rows_of("virtual", dt.date(2026, 11, 1), dt.date(2026, 11, 10), visits_per_day=50)
    late = rows_of("virtual", dt.date(2026, 11, 6), dt.date(2026, 11, 15), visits_per_day=50)
    header = early[0]
    updated, status = header.index("updatedAt"), header.index("visitStatus")
    a = {r[0]: r for r in early[1:]}
    b = {r[0]: r for r in late[1:]}
    shared = a.keys() & b.keys()
    assert len(shared) == 5 * 50  # the five shared days, every visit
    moved = [k for k in shared if a[k][updated] != b[k][updated]]
    assert moved and any(a[k][status] != b[k][status] for k in moved)
    assert all(b[k][updated] >= a[k][updated] for k in shared)  # the later report is never older
    assert len(a.keys() - b.keys()) == len(b.keys() - a.keys()) == 5 * 50  # days outside the overlap


@pytest.mark.parametrize("report_type", TYPES)
def test_in_file_duplicates_come_later_and_are_never_older(report_type):
    rows = rows_of(report_type, visits_per_day=200, duplicate_rate=0.05)
    header, body = rows[0], rows[1:]
    updated = header.index(UPDATED_COLUMN[report_type])
    first: dict[str, list[str]] = {}
    repeats = 0
    for row in body:
        if row[0] in first:
            repeats += 1
            assert row[updated] >= first[row[0]][updated]
        else:
            first[row[0]] = row
    assert len(first) == 10 * 200
    assert 0.03 * 2000 < repeats < 0.07 * 2000
    no_dups = rows_of(report_type, visits_per_day=200, duplicate_rate=0)[1:]
    assert len({r[0] for r in no_dups}) == len(no_dups) == 2000


def test_tricky_text_is_present_and_survives_csv():
    text = "".join(csv_bytes(t, visits_per_day=300).decode("utf-8") for t in TYPES)
    for needle in ["José Núñez", 'O\'Brien, ""Bud""', "Zürich", "\nPatient requests interpreter", "李"]:
        assert needle in text, needle
    cells = [c for t in TYPES for r in rows_of(t, visits_per_day=300) for c in r]
    assert any("\n" in c for c in cells) and any('"' in c for c in cells) and any("," in c for c in cells)
    assert any(not c.isascii() for c in cells)


def test_write_report_csv_and_row_budget(tmp_path):
    per_day = visits_per_day_for(1000, START, END)
    assert per_day == 100 and visits_per_day_for(1001, START, END) == 101
    path = tmp_path / "r.csv"
    count = write_report_csv(path, "provider_booking", START, END, visits_per_day=per_day)
    data = path.read_bytes()
    assert data == csv_bytes("provider_booking", visits_per_day=per_day)
    assert count == len(rows_of("provider_booking", visits_per_day=per_day)) - 1 >= 1000
    assert write_report_csv(tmp_path / "empty.csv", "virtual", START, END, visits_per_day=0) == 0


@pytest.mark.parametrize(
    "kwargs",
    [{"start": END, "end": START}, {"visits_per_day": -1}, {"duplicate_rate": 1.5}, {"chunk_size": 0}],
)
def test_bad_arguments_are_refused(kwargs):
    args = {"report_type": "virtual", "start": START, "end": END, **kwargs}
    with pytest.raises(ValueError):
        next(iter_report_csv(**args))


def test_unknown_report_type_is_refused():
    with pytest.raises(ValueError, match="Unknown DexCare report type"):
        next(iter_report_rows("telehealth", START, END))


def test_streaming_memory_does_not_grow_with_the_report():
    def peak(rows: int) -> int:
        per_day = visits_per_day_for(rows, START, END)
        tracemalloc.start()
        try:
            for _chunk in iter_report_csv("virtual", START, END, visits_per_day=per_day):
                pass
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    next(iter_report_csv("virtual", START, START, visits_per_day=1))  # warm the lookup tables
    small, big = peak(1_000), peak(20_000)
    assert big < 2 * small + 512 * 1024, (small, big)
