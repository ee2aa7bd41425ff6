"""The SQL Server path's CSV parser on its own: the same files, the same lines, the same messages as COPY.

SQL Server has no CSV parser a client can feed, so :func:`dexcare.load.records.records` parses in Python;
these run it for real on real files (no database needed).
"""

from __future__ import annotations

import csv
import datetime as dt
from pathlib import Path

import pytest
from dexcare.exceptions import DexCareCSVError
from dexcare.load.csv_stream import open_report, read_header
from dexcare.load.records import records
from dexcare.sandbox.generator import write_report_csv

from tests.load.test_malformed import EOLS, MALFORMED, malformed_file


def parse(path: Path, *, columns: int = 3, block_size: int = 1 << 20) -> list[tuple[int, list[str]]]:
    with path.open("rb") as stream:
        header = read_header(stream, source=str(path))
        return list(records(header, stream, source=str(path), columns=columns, opener=open_report,
                            block_size=block_size))


@EOLS
@MALFORMED
def test_malformed_rows_name_the_line_copy_names(write_csv, rest, line, reason, eol) -> None:
    path = write_csv(malformed_file(rest, eol))
    with pytest.raises(DexCareCSVError) as err:
        parse(path)
    message = str(err.value)
    assert str(path) in message and f"line {line}:" in message and reason in message
    assert "bad" not in message.replace(str(path), "")


@pytest.mark.parametrize("block_size", [7, 64, 1 << 20])
def test_generated_report_parses_as_the_csv_module_reads_it(tmp_path, block_size) -> None:
    """Quoted commas, quotes, CRLF and bare newlines inside fields, non-ASCII split across blocks."""
    path = tmp_path / "retail.csv"
    write_report_csv(path, "retail", dt.date(2026, 11, 11), dt.date(2026, 11, 20), seed=3, visits_per_day=20)
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle)
        columns = len(next(reader))
        expected, starts, start = [], [], reader.line_num + 1
        for record in reader:
            expected.append(record)
            starts.append(start)
            start = reader.line_num + 1
    parsed = parse(path, columns=columns, block_size=block_size)
    assert [fields for _, fields in parsed] == expected
    assert [line for line, _ in parsed] == starts
    assert any("\n" in f for r in expected for f in r) and any("ü" in f for r in expected for f in r)


def test_header_spanning_lines_and_a_bom_shift_the_lines(write_csv) -> None:
    path = write_csv(b'\xef\xbb\xbfvisitId,"two\nline header",c\r\nv1,a,b\r\nv2,a\r\n')
    with pytest.raises(DexCareCSVError, match="line 4: fewer fields"):
        parse(path)


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b"a,b,c\nv1,a,b\nv2,a\rb,c\n", "line 3: fewer fields"),  # a bare CR ends a record, as in an editor
        (b'a,b,c\nv1,"x"y,z\n', "line 2: malformed CSV"),
    ],
)
def test_other_breakage_names_its_line(write_csv, body, match) -> None:
    with pytest.raises(DexCareCSVError, match=match):
        parse(write_csv(body))
