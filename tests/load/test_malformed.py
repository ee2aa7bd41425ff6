"""Broken files fail with a message naming file and line, and never leave a partial write, on every warehouse.

PostgreSQL's COPY parses the file there; for SQL Server the loader parses it in Python: same messages.
"""

from __future__ import annotations

import pytest
from dexcare.exceptions import DexCareCSVError, DexCareLoadError

from tests.load.conftest import report

HEADER = b"visitId,visitStatus,patientName\r\n"
GOOD = HEADER + b"v0,done,Zed\r\n"


@pytest.fixture
def existing(load, write_csv, warehouse, schema):
    """A table that already holds a row, so 'untouched' means more than 'not created'."""
    load(report(write_csv(GOOD)))
    return warehouse.snapshot(schema)


# The first record spans two lines (a quoted newline), the case where PostgreSQL's own line count drifts.
FIRST = b'v1,a,"multi{eol}line"{eol}'


#: (rest of the file after FIRST, line named in the message, reason in the message); also run through the
#: SQL Server path's Python parser alone, offline, in dialects/mssql/test_staging.py.
MALFORMED = pytest.mark.parametrize(
    ("rest", "line", "reason"),
    [
        (b"v2,a,b{eol}v3,a,b,EXTRA{eol}v4,a,b{eol}", 5, "more fields than the header"),
        (b"v2,a,b{eol}v3,a{eol}", 5, "fewer fields than the header"),
        (b'v2,a,b{eol}v3,a,"bad \xff byte"{eol}', 5, "invalid UTF-8"),
        (b'v2,a,b{eol}v3,a,"never closed{eol}v4,a,b{eol}', 5, "unterminated quoted field"),
        (b"v2,a,b{eol}{eol}v4,a,b{eol}", 5, "fewer fields"),  # a blank line is a ragged row
    ],
    ids=["extra-field", "missing-field", "invalid-utf8", "unterminated-quote", "blank-line"],
)
EOLS = pytest.mark.parametrize("eol", [b"\r\n", b"\n"], ids=["crlf", "lf"])


def malformed_file(rest: bytes, eol: bytes) -> bytes:
    return (HEADER.replace(b"\r\n", eol) + FIRST + rest).replace(b"{eol}", eol)


@EOLS
@MALFORMED
def test_malformed_rows(load, write_csv, warehouse, schema, existing, rest, line, reason, eol) -> None:
    path = write_csv(malformed_file(rest, eol))
    with pytest.raises(DexCareCSVError) as err:
        load(report(path))
    message = str(err.value)
    assert str(path) in message and f"line {line}:" in message and reason in message
    assert "bad" not in message.replace(str(path), "")  # no values echoed back
    assert warehouse.snapshot(schema) == existing


def test_malformed_row_on_a_first_load(load, write_csv, warehouse, schema) -> None:
    """On PostgreSQL a new table is filled by COPY directly: same message, and nothing created."""
    with pytest.raises(DexCareCSVError, match="line 4: more fields"):
        load(report(write_csv(HEADER + FIRST.replace(b"{eol}", b"\r\n") + b"v2,a,b,c\r\n")))
    assert warehouse.snapshot(schema) == {}


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b"", "empty"),
        (b"\xef\xbb\xbf\r\n", "empty"),
        (b'visitId,"open header\r\nv1,a\r\n', "line 1: unterminated quoted field in the header"),
        (b"visitId,stat\xfcs\r\nv1,a\r\n", "line 1: invalid UTF-8"),
    ],
    ids=["zero-bytes", "bom-only", "header-quote", "header-utf8"],
)
def test_broken_files(load, write_csv, warehouse, schema, existing, body, match) -> None:
    with pytest.raises(DexCareCSVError, match=match):
        load(report(write_csv(body)))
    assert warehouse.snapshot(schema) == existing


@pytest.mark.parametrize("body", [HEADER, HEADER.rstrip(b"\r\n"), b"\xef\xbb\xbf" + HEADER])
def test_header_only_is_a_clean_zero_row_load(load, write_csv, warehouse, schema, body) -> None:
    summary = load(report(write_csv(body)))
    table = summary["tables"]["avr_virtual"]
    assert (table["rows_in_file"], table["inserted"], table["updated"], table["unchanged"]) == (0, 0, 0, 0)
    assert warehouse.rows(schema, "avr_virtual") == []
    assert list(warehouse.columns(schema, "avr_virtual"))[:3] == ["visit_id", "visit_status", "patient_name"]
    assert [r["rows_in_file"] for r in warehouse.audit(schema)] == [0]


def test_missing_file_is_a_clear_error(load, tmp_path, warehouse, schema) -> None:
    with pytest.raises(DexCareLoadError, match="cannot open"):
        load(report(tmp_path / "nope.csv"))
    assert warehouse.snapshot(schema) == {}
