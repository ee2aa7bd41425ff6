"""The streaming record count agrees with the csv module, however the bytes are chunked."""

from __future__ import annotations

import csv
import datetime as dt
import io

import pytest
from dexcare.csv_records import CsvRecordCounter
from dexcare.sandbox import iter_report_csv

TRICKY = (
    'id,note,name\r\n'
    '1,"line one\r\nline two",José\r\n'
    '2,"say ""hi"", then\nleave",O\'Brien\r\n'
    '3,plain,"Zürich, ""Main"" St"\r\n'
    '4,"",last-without-newline'
).encode()


def csv_module_rows(body: bytes) -> int:
    return max(sum(1 for _ in csv.reader(io.StringIO(body.decode("utf-8"), newline=""))) - 1, 0)


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 7, 64, 1 << 20])
def test_count_matches_the_csv_module_for_any_chunking(chunk_size):
    for body in (TRICKY, TRICKY + b"\r\n", b"id,x\n", b"id,x", b""):
        counter = CsvRecordCounter()
        for i in range(0, len(body), chunk_size):
            counter.feed(body[i : i + chunk_size])
        assert counter.data_rows == csv_module_rows(body), (body, chunk_size)


@pytest.mark.parametrize("report_type", ["virtual", "retail", "provider_booking"])
def test_count_matches_on_generated_reports(report_type):
    counter = CsvRecordCounter()
    chunks = list(iter_report_csv(report_type, dt.date(2026, 11, 1), dt.date(2026, 11, 5), visits_per_day=300))
    for chunk in chunks:
        counter.feed(chunk)
    body = b"".join(chunks)
    assert b'"' in body and counter.data_rows == csv_module_rows(body) > 1500


@pytest.mark.parametrize("chunk_size", [1, 2, 5, 64, 1 << 20])
def test_the_header_is_kept_as_the_csv_module_reads_it_for_any_chunking(chunk_size):
    bodies = {
        TRICKY: ["id", "note", "name"],
        b'\xef\xbb\xbf"Visit ID","Two\nlines","a,b",plain\r\n1,2,3,4\n': ["Visit ID", "Two\nlines", "a,b", "plain"],
        b"id,x": ["id", "x"],  # a header-only file without a final newline
        "visitId,patientNäme\n".encode(): ["visitId", "patientNäme"],
        b"": None,
        b"\n1,2\n": None,
        b'"never closes,x\n1,2\n': None,
        b"id,\xff\n1,2\n": None,  # not UTF-8: the load says so; the download only reports no header
    }
    for body, header in bodies.items():
        counter = CsvRecordCounter()
        for i in range(0, len(body), chunk_size):
            counter.feed(body[i : i + chunk_size])
        assert counter.header == header, (body, chunk_size)


def test_the_header_of_a_generated_report_is_its_columns_and_nothing_else_is_kept():
    from dexcare.sandbox.generator import COLUMNS, ReportType

    counter = CsvRecordCounter()
    for chunk in iter_report_csv("retail", dt.date(2026, 11, 1), dt.date(2026, 11, 5), visits_per_day=300):
        counter.feed(chunk)
    assert counter.header == COLUMNS[ReportType.RETAIL]
    assert len(counter._head) < 200  # the first record only, never a row


def feed_all(counter: CsvRecordCounter, body: bytes, chunk_size: int) -> CsvRecordCounter:
    for i in range(0, len(body), chunk_size):
        counter.feed(body[i : i + chunk_size])
    counter.finish()
    return counter


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 64])
def test_cr_only_line_endings_are_refused_wherever_a_chunk_ends(chunk_size):
    """A CR at the end of a chunk waits for the next one: CRLF split in two is fine, a bare CR is not."""
    from dexcare.csv_records import CR_ONLY, CsvShapeError

    assert feed_all(CsvRecordCounter(["id"]), TRICKY, chunk_size).data_rows == 4
    for body in (b"id,x\r1,2\r", b"id,x\r", b'"i\rd",x\r1,2\r', b'id,x\r"1",2\n'):
        with pytest.raises(CsvShapeError, match="CR only") as err:
            feed_all(CsvRecordCounter(), body, chunk_size)
        assert str(err.value) == CR_ONLY
    assert feed_all(CsvRecordCounter(), b'"i\rd",x\r\n1,2\r\n', chunk_size).header == ["i\rd", "x"]  # quoted CR


@pytest.mark.parametrize("chunk_size", [1, 5, 1 << 20])
def test_a_first_line_without_the_key_columns_is_refused_without_quoting_it(chunk_size):
    from dexcare.csv_records import CsvShapeError

    for body in (b"v1,Jane Roe,1980-02-03\nv2,x,y\n", b"v1,Jane Roe,1980-02-03"):
        with pytest.raises(CsvShapeError) as err:
            feed_all(CsvRecordCounter(["visit_id"]), body, chunk_size)
        assert "none of its 3 field(s) is the key column 'visit_id'" in str(err.value)
        assert "Jane" not in str(err.value) and "1980" not in str(err.value)


@pytest.mark.parametrize("report_type", ["virtual", "retail", "provider_booking"])
def test_every_generated_report_has_the_default_key(report_type):
    counter = CsvRecordCounter(["visit_id"])
    for chunk in iter_report_csv(report_type, dt.date(2026, 11, 1), dt.date(2026, 11, 2), visits_per_day=5):
        counter.feed(chunk)
    counter.finish()
    assert counter.header is not None and counter.data_rows > 0


def reference_records(body: bytes) -> int:
    """Byte by byte, the rule itself: a record ends at a newline outside quotes; bytes after the last one make
    one more record (an open quote too)."""
    records, inside, pending = 0, False, False
    for byte in body:
        if byte == 0x22:
            inside = not inside
        elif byte == 0x0A and not inside:
            records += 1
            pending = False
            continue
        pending = True
    return records + (1 if pending or inside else 0)


@pytest.mark.parametrize("seed", range(40))
def test_count_follows_the_rule_on_random_quotes_and_newlines_cut_anywhere(seed):
    """Runs of quotes (an escaped pair, three in a row) next to newlines, quoted newlines and CRs, cut into chunks at
    random places (inside a ``""``, between a quote and its newline): the count is the byte-by-byte rule's."""
    import random

    rng = random.Random(seed)
    body = b"id,x\n" + bytes(rng.choice(b'""""\n\n\r,ab') for _ in range(rng.randrange(0, 400)))
    counter = CsvRecordCounter(header=False)
    start = 0
    while start < len(body):
        stop = start + rng.choice([1, 2, 3, rng.randrange(1, 200)])
        counter.feed(body[start:stop])
        start = stop
    assert counter.records == reference_records(body), body
