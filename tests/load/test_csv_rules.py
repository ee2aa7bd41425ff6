"""A green run means every visit landed: the CSV rules, through the operators (sandbox -> download -> PostgreSQL).

The sandbox serves a crafted body (``SandboxServer.serve_body``) with the real API's framing; the download and
the load run as a worker runs them. What is checked each time: the run fails before anything is written, the
message names the file, line and problem, and no field of the report reaches a log record, an exception text,
XCom or a lineage facet. The SQL Server path's side of the same files is in dialects/mssql/test_offline.py.
"""

from __future__ import annotations

import csv
import hashlib
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlparse

import pytest
from dexcare.exceptions import DexCareCSVError, DexCareResponseError, DexCareSchemaError
from dexcare.load.loader import LoadOptions, load_reports
from dexcare.operators.download_report import DexCareDownloadReportOperator
from dexcare.operators.load_reports import DexCareLoadReportsOperator
from dexcare.operators.start_report import DexCareStartReportOperator

from tests.load.conftest import postgres_only, report
from tests.support.helpers import logged
from tests.support.task_runtime import Runtime

#: Values that stand for patient data: none may appear anywhere but in the file and the warehouse.
PATIENT = ("Jane Roe", "1980-02-03", "SECRET-STATUS-55")
HEADER = b"visitId,visitStatus,patientName\n"


def downloader(rt: Runtime, sandbox: Any, body: bytes, destination: Path, **kwargs: Any) -> Any:
    """Start a report whose download is ``body``, wait for it; the download task as the daily DAG has it."""
    sandbox.serve_body(body)
    start = DexCareStartReportOperator(task_id="start", report_type="virtual", report_start_date="2026-11-01",
                                       report_end_date="2026-11-02")
    report_id = rt.run(start)
    time.sleep(0.5)
    return DexCareDownloadReportOperator(task_id="download", report_id=report_id, request_task_id="start",
                                         destination=f"{destination}/", **kwargs)


def download(rt: Runtime, sandbox: Any, body: bytes, destination: Path, **kwargs: Any) -> dict[str, Any]:
    return rt.run(downloader(rt, sandbox, body, destination, **kwargs))


def load(result: dict[str, Any], schema: str, **kwargs: Any) -> dict[str, Any]:
    op = DexCareLoadReportsOperator(task_id="load", reports=[result], schema=schema, **kwargs)
    return op.execute({"dag": SimpleNamespace(dag_id="dexcare_test"), "run_id": "manual__1",
                       "data_interval_end": None})


def assert_no_patient_data(*texts: str) -> None:
    for text in texts:
        for value in PATIENT:
            assert value not in text, (value, text[:2000])


@pytest.fixture
def warehouse_conn(warehouse, monkeypatch) -> str:
    monkeypatch.setenv("AIRFLOW_CONN_DEXCARE_WAREHOUSE", warehouse.airflow_connection())
    return "dexcare_warehouse"


# --- 1. A line of only \. : PostgreSQL before 18 ends the COPY there -----------------------------------------


@postgres_only
def test_an_end_of_data_line_fails_the_load_naming_it_and_writes_nothing(
        dexcare_conn_id, sandbox, warehouse_conn, warehouse, schema, tmp_path, caplog, capfd) -> None:
    body = HEADER + f"v1,a,{PATIENT[0]}\nv2,b,x\n\\.\nv3,{PATIENT[2]},y\nv4,d,z\n".encode()
    rt = Runtime()
    result = download(rt, sandbox, body, tmp_path)
    assert result["rows"] == 5  # the download counts the \. line and the rows after it
    with pytest.raises(DexCareCSVError) as err:
        load(result, schema)
    message = str(err.value)
    assert "line 4: a line holding only \\. (unquoted)" in message and "PostgreSQL before 18" in message
    assert "the download counted 5 data row(s), the load staged 2" in message
    assert warehouse.tables(schema) == []
    assert_no_patient_data(message, logged(caplog, capfd), repr(rt.xcoms))


@postgres_only
def test_without_the_downloads_count_the_file_is_counted_on_the_way_in(warehouse_conn, warehouse, schema,
                                                                       write_csv) -> None:
    path = write_csv((HEADER + b"v1,a,x\n\\.\nv3,c,y\n").replace(b"\n", b"\r\n"))
    with pytest.raises(DexCareCSVError, match=r"line 3: a line holding only .*a count of the file counted 3 data"):
        load(report(path), schema)
    assert warehouse.tables(schema) == []
    quoted = write_csv(b'visitId\nv1\n"\\."\nv3\n')  # quoted, it is a value like any other
    assert load(report(quoted), schema)["tables"]["avr_virtual"]["inserted"] == 3
    assert [r["visit_id"] for r in warehouse.rows(schema, "avr_virtual")] == ["\\.", "v1", "v3"]


@postgres_only
def test_an_end_of_data_line_with_another_line_ending_is_named_too(warehouse_conn, warehouse, schema,
                                                                   write_csv) -> None:
    """PostgreSQL before 18 refuses a \\.CRLF line in an LF file (22P04) instead of ending there: same words."""
    path = write_csv(HEADER + b"v1,a,x\n\\.\r\nv3,c,y\n")
    with pytest.raises(DexCareCSVError, match=r"line 3: a line holding only \\\. \(unquoted\)"):
        load(report(path, rows=3), schema)
    assert warehouse.tables(schema) == []


# --- 2. CR-only line endings: refused everywhere ---------------------------------------------------------------


def test_a_cr_only_download_is_refused_and_nothing_is_kept(dexcare_conn_id, sandbox, tmp_path, caplog, capfd) -> None:
    body = HEADER.replace(b"\n", b"\r") + f"v1,a,{PATIENT[0]}\rv2,b,{PATIENT[1]}\r".encode()
    rt = Runtime()
    with pytest.raises(DexCareResponseError) as err:
        download(rt, sandbox, body, tmp_path / "out")
    message = str(err.value)
    assert "is not a DexCare report CSV: line endings are CR only (old Mac style" in message
    assert "DexCare sends LF or CRLF" in message and "Nothing was kept" in message
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []
    assert ("download", "return_value") not in rt.xcoms
    assert sum(1 for _m, path, _s in sandbox.request_log if path.endswith("/data")) == 1  # not retried
    assert_no_patient_data(message, logged(caplog, capfd))


def test_the_load_refuses_cr_only_line_endings_and_takes_crlf(warehouse_conn, warehouse, schema, write_csv) -> None:
    lines = HEADER + f"v1,a,{PATIENT[0]}\nv2,b,x\n".encode()
    path = write_csv(lines.replace(b"\n", b"\r"))
    with pytest.raises(DexCareCSVError) as err:
        load(report(path, rows=0), schema)  # what the old counter made of it
    message = str(err.value)
    assert f"{path}: line 1: line endings are CR only" in message
    assert warehouse.tables(schema) == []
    assert_no_patient_data(message)
    crlf = write_csv(lines.replace(b"\n", b"\r\n"))
    assert load(report(crlf, rows=2), schema)["tables"]["avr_virtual"]["inserted"] == 2


# --- 3. The staged rows must be the rows counted -------------------------------------------------------------


def test_a_count_that_differs_from_the_downloads_fails_before_the_commit(warehouse_conn, warehouse, schema,
                                                                         write_csv) -> None:
    path = write_csv(HEADER + b"v1,a,x\nv2,b,y\n")
    with pytest.raises(DexCareCSVError) as err:
        load(report(path, rows=3), schema)  # the download saw a row the file no longer has
    message = str(err.value)
    assert "the download counted 3 data row(s), the load staged 2; nothing was written" in message
    assert "download the report again" in message
    assert warehouse.tables(schema) == []


# --- 4. A first line that is not a DexCare header is never echoed ---------------------------------------------


HEADERLESS = f"v1,{PATIENT[0]},{PATIENT[1]}\nv2,{PATIENT[0]},{PATIENT[1]}\n".encode()


def test_a_headerless_download_is_refused_without_quoting_it(dexcare_conn_id, sandbox, tmp_path, caplog,
                                                             capfd) -> None:
    rt = Runtime()
    out = tmp_path / "out"
    op = downloader(rt, sandbox, HEADERLESS, out)
    with pytest.raises(DexCareResponseError) as err:
        rt.run(op)
    message = str(err.value)
    assert "the first line is not a DexCare report header: none of its 3 field(s) is the key column 'visit_id'" \
        in message
    assert not out.exists() or list(out.iterdir()) == []
    assert ("download", "return_value") not in rt.xcoms
    lineage = op.get_openlineage_facets_on_failure(None)  # names the report, never a field of it
    assert lineage is not None
    assert_no_patient_data(message, logged(caplog, capfd), repr(rt.xcoms), repr(lineage))


def test_the_download_checks_the_key_columns_of_its_report_type(dexcare_conn_id, sandbox, tmp_path) -> None:
    body = b"Encounter,Status\ne1,a\n"
    rt = Runtime()
    keys = {"virtual": ["Encounter"], "retail": ["visit_id"]}  # the load's mapping, as the daily DAG passes it
    result = download(rt, sandbox, body, tmp_path, key_columns=keys)
    assert result["header"] == ["Encounter", "Status"] and result["rows"] == 1
    with pytest.raises(DexCareResponseError, match="the key column 'visit_id'"):
        download(Runtime(), sandbox, body, tmp_path / "again")


def test_a_headerless_file_fails_the_load_without_quoting_it(warehouse_conn, warehouse, schema, write_csv,
                                                             caplog, capfd) -> None:
    for body in (HEADERLESS, f"{PATIENT[0]},{PATIENT[0]}\n".encode(), f"{PATIENT[0]},,x\n".encode()):
        path = write_csv(body)  # another row, a repeated name (a collision), an empty field: no header either
        with pytest.raises(DexCareSchemaError) as err:
            load(report(path, rows=1), schema)
        message = str(err.value)
        assert f"{path}: line 1: the first line is not a DexCare report header" in message
        assert_no_patient_data(message)
    assert warehouse.tables(schema) == []
    assert_no_patient_data(logged(caplog, capfd))


# --- 15. Fields as large as PostgreSQL takes, on both dialects ------------------------------------------------


@postgres_only
def test_both_dialects_take_a_field_larger_than_the_csv_modules_default_limit(warehouse_conn, warehouse, schema,
                                                                              write_csv) -> None:
    """PostgreSQL takes fields up to 1 GB; the SQL Server path (offline: the recording connection) the same."""
    from tests.support.mssql_recording import RecordingConnection

    big = "n" * 300_000
    path = write_csv(HEADER + f"v1,a,{big}\nv2,b,c\n".encode())
    load(report(path, rows=2), schema)
    assert [len(r["patient_name"]) for r in warehouse.rows(schema, "avr_virtual")] == [300_000, 1]
    conn = RecordingConnection()
    load_reports(conn, [report(path, rows=2)], options=LoadOptions(schema="dexcare"), dialect="mssql")
    assert [len(row[2]) for row in conn.staged_text()["#dexcare_stage_0"]] == [300_000, 1]
    assert conn.steps[-1] == "commit"
    assert csv.field_size_limit() == 131_072  # the process-wide limit is left to its other users


def test_a_recognised_download_is_what_the_load_takes(dexcare_conn_id, sandbox, warehouse_conn, warehouse, schema,
                                                      tmp_path) -> None:
    """The clean path, crafted body and all: CRLF, a quoted multi-line field, a BOM, a key by its header name."""
    body = b"\xef\xbb\xbf" + HEADER.replace(b"\n", b"\r\n") + b'v1,a,"two\r\nlines"\r\nv2,b,c\r\n'
    rt = Runtime()
    result = download(rt, sandbox, body, tmp_path, key_columns=["Visit ID"])
    path = Path(urlparse(result["uri"]).path)
    assert path.read_bytes() == body and result["sha256"] == hashlib.sha256(body).hexdigest()
    assert (result["rows"], result["header"]) == (2, ["visitId", "visitStatus", "patientName"])
    summary = load(result, schema, key_columns={"virtual": ["Visit ID"]})
    assert summary["tables"]["avr_virtual"]["inserted"] == 2
