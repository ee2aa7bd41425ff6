"""A report as pandas DataFrames (``DexCareHook.get_df`` / ``get_df_by_chunks``, ``dexcare.frames``), against the
sandbox over loopback: typed as promised, equal to the CSV parsed independently with the ``csv`` module, read by
the load's CSV rules (a broken row names its line, never its value), waited for by the sensor's rules, and with
no temporary file left on any path."""

from __future__ import annotations

import csv
import datetime as dt
import gc
import io
import logging
import os
import subprocess
import sys
import tracemalloc
from collections.abc import Iterable
from pathlib import Path

import pandas as pd
import pytest
from dexcare.exceptions import (
    DexCareCastError,
    DexCareCSVError,
    DexCareIncompleteDownloadError,
    DexCareReportFailedError,
    DexCareSchemaError,
    DexCareValidationError,
)
from dexcare.frames.columns import SAMPLE_ROWS
from dexcare.frames.report import iter_report_frames, read_report
from dexcare.sandbox import SandboxServer, write_report_csv

from tests.support.helpers import SANDBOX_TOKEN, fast_hook, posts, set_connection

SECRET = "SECRET-PATIENT-4711"
VIRTUAL_COLUMNS = ["visit_id", "created_at", "scheduled_start", "completed_at", "updated_at", "visit_status",
                   "patient_name", "patient_state", "provider_name", "practice_name", "reason_for_visit", "modality",
                   "wait_minutes"]
VIRTUAL_TIMESTAMPS = {"created_at", "scheduled_start", "completed_at", "updated_at"}
FAST = {"poll_interval": 0.05}


def expected_frame(data: bytes, columns: list[str], timestamps: set[str]) -> pd.DataFrame:
    """The report parsed without the code under test: the csv module, fromisoformat, explicit dtypes."""
    rows = list(csv.reader(io.StringIO(data.decode("utf-8-sig"), newline="")))[1:]
    frame = {}
    for position, column in enumerate(columns):
        values = [row[position] or None for row in rows]
        if column in timestamps:
            stamps = [dt.datetime.fromisoformat(v).astimezone(dt.UTC) if v else None for v in values]
            frame[column] = pd.Series(stamps, dtype=object).astype("datetime64[ns, UTC]")
        else:
            frame[column] = pd.Series(values, dtype="string")
    return pd.DataFrame(frame)


def downloaded_bytes(hook, report_id: str, tmp_path: Path) -> bytes:
    target = tmp_path / "independent" / "report.csv"
    hook.download_report(report_id, target)
    return target.read_bytes()


def started(hook, report_type: str = "virtual", *window: str) -> str:
    """A report that has SUCCEEDED, waited for without the code under test."""
    import time

    from dexcare.report import ReportStatus

    report_id = hook.start_report(report_type, *window)
    deadline = time.monotonic() + 30
    while hook.get_report_status(report_id) != ReportStatus.SUCCEEDED:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return report_id


@pytest.fixture
def private_tmp(tmp_path: Path) -> Path:
    """Where get_df may put its temporary download: must be empty again after every call."""
    directory = tmp_path / "frames-tmp"
    directory.mkdir()
    return directory


# --- typed, and equal to the CSV -------------------------------------------------------------------------------


def test_get_df_by_report_id_equals_the_csv_parsed_independently(dexcare_conn_id, sandbox, tmp_path, private_tmp):
    hook = fast_hook()
    report_id = started(hook, "virtual", "2026-11-01", "2026-11-05")
    frame = hook.get_df(report_id, temp_dir=private_tmp)

    expected = expected_frame(downloaded_bytes(hook, report_id, tmp_path), VIRTUAL_COLUMNS, VIRTUAL_TIMESTAMPS)
    assert len(frame) > 50
    pd.testing.assert_frame_equal(frame, expected)  # values and dtypes
    assert frame["completed_at"].isna().any() and frame["completed_at"].notna().any()
    assert list(private_tmp.iterdir()) == []


def test_get_df_by_type_and_window_requests_waits_and_reads(dexcare_conn_id, sandbox, tmp_path, private_tmp):
    hook = fast_hook()
    frame = hook.get_df(report_type="retail", start_date="2026-11-01", end_date="2026-11-03", temp_dir=private_tmp,
                        **FAST)

    report_id = next(iter(sandbox.reports))
    assert posts(sandbox) == 1
    expected = expected_frame(
        downloaded_bytes(hook, report_id, tmp_path),
        ["visit_id", "created_at", "check_in_time", "completed_at", "last_updated", "status", "patient_name",
         "clinic_name", "clinic_address", "reason_for_visit", "payer"],
        {"created_at", "check_in_time", "completed_at", "last_updated"},
    )
    pd.testing.assert_frame_equal(frame, expected)
    assert frame["clinic_address"].str.contains("\n").any()  # quoted multi-line fields survive
    assert list(private_tmp.iterdir()) == []


def test_chunks_concatenate_to_the_whole_frame(dexcare_conn_id, sandbox, private_tmp):
    hook = fast_hook()
    report_id = started(hook, "provider_booking", "2026-11-01", "2026-11-04")
    whole = hook.get_df(report_id, temp_dir=private_tmp)
    chunks = list(hook.get_df_by_chunks(report_id, chunksize=7, temp_dir=private_tmp))

    assert len(chunks) == -(-len(whole) // 7) > 2
    assert all(len(chunk) <= 7 for chunk in chunks)
    assert all(chunk.dtypes.equals(whole.dtypes) for chunk in chunks)
    pd.testing.assert_frame_equal(pd.concat(chunks), whole)
    assert list(private_tmp.iterdir()) == []


# --- a report the sandbox serves as given --------------------------------------------------------------------------


class FixedBodySandbox(SandboxServer):
    """The real sandbox server, serving one fixed CSV body for every report (no Content-Length, chunked)."""

    def __init__(self, body: bytes) -> None:
        super().__init__(token=SANDBOX_TOKEN, queue_seconds=0.0, run_seconds=0.0, content_length=False)
        self.body = body

    def _body(self, report) -> Iterable[bytes]:
        return [self.body[i : i + 7] for i in range(0, len(self.body), 7)]  # split mid-record on purpose


@pytest.fixture
def serve(monkeypatch):
    servers = []

    def start(body: bytes) -> str:
        server = FixedBodySandbox(body).start()
        servers.append(server)
        set_connection(monkeypatch, "dexcare_fixed", server.url, SANDBOX_TOKEN)
        hook = fast_hook("dexcare_fixed")
        return started(hook)

    yield start
    for server in servers:
        server.stop()


def test_leading_zeros_and_digits_stay_strings(serve, private_tmp, caplog):
    caplog.set_level(logging.DEBUG)
    report_id = serve(b"\xef\xbb\xbfVisit ID,Wait Minutes,Updated At,Patient\r\n0012,007,2026-11-20T10:00:00+02:00,"
                      + SECRET.encode() + b"\r\n00340,,2026-11-20T10:00:00Z,x\r\n")
    frame = fast_hook("dexcare_fixed").get_df(report_id, temp_dir=private_tmp)

    assert list(frame.columns) == ["visit_id", "wait_minutes", "updated_at", "patient"]
    assert frame["patient"].tolist() == [SECRET, "x"]
    assert SECRET not in caplog.text
    assert frame["visit_id"].tolist() == ["0012", "00340"]
    assert frame["wait_minutes"].tolist() == ["007", pd.NA]
    assert str(frame["visit_id"].dtype) == str(frame["wait_minutes"].dtype) == "string"
    assert frame["updated_at"].tolist() == [pd.Timestamp("2026-11-20T08:00:00Z"), pd.Timestamp("2026-11-20T10:00Z")]


def test_a_time_without_an_offset_is_not_assumed_to_be_utc(serve, private_tmp):
    report_id = serve(b"visitId,updatedAt,dob\n1,2026-11-20T10:00:00,1980-02-03\n2,2026-11-20 11:00:00,\n")
    frame = fast_hook("dexcare_fixed").get_df(report_id, temp_dir=private_tmp)
    assert frame.dtypes.astype(str).tolist() == ["string", "string", "string"]

    configured = fast_hook("dexcare_fixed")
    with pytest.raises(DexCareCastError, match=r"line 2, column 'updatedAt': .*timestamp_columns") as caught:
        configured.get_df(report_id, timestamp_columns=["updatedAt"], temp_dir=private_tmp)
    assert "2026" not in str(caught.value)
    assert list(private_tmp.iterdir()) == []


def test_a_malformed_row_names_its_line_and_never_its_value(serve, private_tmp, caplog):
    caplog.set_level(logging.DEBUG)
    body = (f'visitId,patientName,notes\n1,"Ann",ok\n2,"multi\nline",ok\n3,{SECRET},x,extra\n4,b,c\n').encode()
    report_id = serve(body)
    hook = fast_hook("dexcare_fixed")

    with pytest.raises(DexCareCSVError, match=r"line 5: more fields than the header has columns") as caught:
        hook.get_df(report_id, temp_dir=private_tmp)
    with pytest.raises(DexCareCSVError, match=r"line 5"):
        list(hook.get_df_by_chunks(report_id, chunksize=1, temp_dir=private_tmp))
    assert SECRET not in str(caught.value)
    assert SECRET not in caplog.text
    assert list(private_tmp.iterdir()) == []


def test_an_empty_key_or_a_missing_key_column_is_refused_as_the_load_refuses_it(serve, private_tmp):
    report_id = serve(b"visitId,name\n1,a\n,b\n")
    hook = fast_hook("dexcare_fixed")
    with pytest.raises(DexCareSchemaError, match=r"line 3: empty key \(visit_id\)"):
        hook.get_df(report_id, temp_dir=private_tmp)
    with pytest.raises(DexCareSchemaError, match=r"key column 'booking_id' is not in the file"):
        hook.get_df(report_id, key_columns=["booking_id"], temp_dir=private_tmp)
    assert list(private_tmp.iterdir()) == []


def test_the_key_is_looked_for_in_the_header_before_any_record_is_read(tmp_path):
    """Not a DexCare report at all (no key in its first line): said so, rather than a complaint about row 2."""
    path = tmp_path / "not-a-report.csv"
    path.write_text("name,dob\nAnn,1980-01-01,extra\n")
    with pytest.raises(DexCareSchemaError, match=r"key column 'visit_id' is not in the file"):
        read_report(path)


# --- files on disk, and recognition past the sample ------------------------------------------------------------


def test_a_later_value_that_is_no_timestamp_stops_the_read_at_its_line(tmp_path):
    path = tmp_path / "report.csv"
    rows = [f"{i},2026-11-20T10:00:00Z\n" for i in range(SAMPLE_ROWS + 5)]
    rows[SAMPLE_ROWS + 2] = f"{SAMPLE_ROWS + 2},{SECRET}\n"
    path.write_text("visitId,updatedAt\n" + "".join(rows))

    with pytest.raises(DexCareCastError, match=rf"line {SAMPLE_ROWS + 4}, column 'updatedAt'") as caught:
        read_report(path)
    assert SECRET not in str(caught.value)
    assert str(read_report(path, timestamp_columns=[])["updated_at"].dtype) == "string"


def test_an_impossible_date_is_refused_at_its_line(tmp_path):
    path = tmp_path / "report.csv"
    path.write_text("visitId,updatedAt\n1,2026-02-28T10:00:00Z\n2,\n3,2026-02-30T10:00:00Z\n")
    with pytest.raises(DexCareCastError, match=r"line 4, column 'updatedAt': .* remove the column from timestamp_c"):
        read_report(path, timestamp_columns=["updatedAt"])


def test_a_downloaded_file_reads_the_same_whole_and_in_chunks(tmp_path):
    path = tmp_path / "virtual.csv"
    write_report_csv(path, "virtual", dt.date(2026, 11, 1), dt.date(2026, 11, 3), visits_per_day=40)
    whole = read_report(path.as_uri())
    pd.testing.assert_frame_equal(whole, expected_frame(path.read_bytes(), VIRTUAL_COLUMNS, VIRTUAL_TIMESTAMPS))
    pd.testing.assert_frame_equal(pd.concat(iter_report_frames(path, chunksize=10)), whole)


def test_an_empty_report_is_an_empty_frame_with_its_columns(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_text("visitId,updatedAt\n")
    frame = read_report(path)
    assert list(frame.columns) == ["visit_id", "updated_at"] and len(frame) == 0


def test_chunks_keep_memory_bounded(tmp_path):
    """Peak traced memory of a chunked read stays flat when the file doubles, while the whole frame's doubles
    (both measured in this run, after a warm-up read, so imports and caches are not counted)."""
    read_report(_report(tmp_path / "warm.csv", 2, 10))

    def peak(read) -> int:
        gc.collect()
        tracemalloc.start()
        try:
            read()
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    def chunked(path: Path) -> None:
        for chunk in iter_report_frames(path, chunksize=250):
            assert len(chunk) <= 250

    small, big = _report(tmp_path / "small.csv", 20, 150), _report(tmp_path / "big.csv", 20, 300)
    chunks_small, chunks_big = peak(lambda: chunked(small)), peak(lambda: chunked(big))
    whole_small, whole_big = peak(lambda: read_report(small)), peak(lambda: read_report(big))
    assert whole_big > 1.6 * whole_small  # the measure sees a frame grow with its file
    assert chunks_big < 1.2 * chunks_small, (chunks_small, chunks_big)
    assert 2 * chunks_big < whole_big, (chunks_big, whole_big)


def _report(path: Path, days: int, visits_per_day: int) -> Path:
    write_report_csv(path, "virtual", dt.date(2026, 10, 1), dt.date(2026, 10, days), visits_per_day=visits_per_day)
    return path


# --- the wait: the sensor's rules --------------------------------------------------------------------------------


def test_failed_is_provisional_while_dexcare_retries(dexcare_conn_id, sandbox, private_tmp):
    sandbox.inject("fail_then_retry", failed_seconds=0.3)
    frame = fast_hook().get_df(report_type="virtual", start_date="2026-11-01", end_date="2026-11-01",
                               failed_grace_period=30, temp_dir=private_tmp, **FAST)
    assert len(frame) > 0 and posts(sandbox) == 1


def test_a_failed_report_is_requested_again_up_to_max_resubmits(dexcare_conn_id, sandbox, private_tmp):
    sandbox.inject("fail")
    frame = fast_hook().get_df(report_type="virtual", start_date="2026-11-01", end_date="2026-11-01",
                               failed_grace_period=0.1, max_resubmits=1, temp_dir=private_tmp, **FAST)
    assert len(frame) > 0 and posts(sandbox) == 2


def test_cancelled_ends_the_wait_and_nothing_is_downloaded(dexcare_conn_id, sandbox, private_tmp):
    sandbox.inject("cancel")
    with pytest.raises(DexCareReportFailedError, match="was CANCELLED"):
        fast_hook().get_df(report_type="virtual", start_date="2026-11-01", end_date="2026-11-01",
                           temp_dir=private_tmp, **FAST)
    assert posts(sandbox) == 1
    assert not [r for r in sandbox.request_log if r[1].endswith("/data")]
    assert list(private_tmp.iterdir()) == []


def test_the_timeout_gives_up_naming_the_report_to_read_later(slow_sandbox, private_tmp):
    from dexcare.exceptions import DexCareError

    with pytest.raises(DexCareError, match=r"still RUNNING .* at the deadline .* read it later by its id") as caught:
        fast_hook().get_df(report_type="virtual", timeout=0.5, temp_dir=private_tmp, **FAST)
    assert next(iter(slow_sandbox.reports)) in str(caught.value)
    assert posts(slow_sandbox) == 1 and list(private_tmp.iterdir()) == []


# --- bad input, broken downloads, abandoned iterators --------------------------------------------------------------


def test_bad_arguments_are_refused_before_any_request(dexcare_conn_id, sandbox):
    hook = fast_hook()
    with pytest.raises(DexCareValidationError, match="not both"):
        hook.get_df("0b4cbd4c-1d2e-4f5a-9b8c-7d6e5f4a3b2c", report_type="virtual")
    with pytest.raises(DexCareValidationError, match="Say which report"):
        hook.get_df()
    with pytest.raises(DexCareValidationError, match="chunksize"):
        hook.get_df_by_chunks(report_type="virtual", chunksize=0)
    with pytest.raises(DexCareValidationError, match="poll_interval"):
        hook.get_df(report_type="virtual", poll_interval=0)
    assert sandbox.request_log == []


def test_a_download_that_breaks_off_leaves_nothing_behind(dexcare_conn_id, sandbox, private_tmp):
    hook = fast_hook(attempts=1)
    report_id = started(hook)
    sandbox.inject("drop_download")
    with pytest.raises(DexCareIncompleteDownloadError):
        hook.get_df(report_id, temp_dir=private_tmp)
    assert list(private_tmp.iterdir()) == []


def test_an_iterator_closed_early_deletes_its_file(dexcare_conn_id, sandbox, private_tmp):
    hook = fast_hook()
    report_id = started(hook)
    chunks = hook.get_df_by_chunks(report_id, chunksize=5, temp_dir=private_tmp)
    assert sandbox.request_log[-1][1].endswith(report_id)  # nothing downloaded before the first next()
    first = next(chunks)
    assert len(first) == 5 and len(list(private_tmp.iterdir())) == 1
    assert os.stat(next(private_tmp.iterdir())).st_mode & 0o077 == 0  # the directory is private
    chunks.close()
    assert list(private_tmp.iterdir()) == []


@pytest.mark.slow  # a child process that imports Airflow: about 7 s
def test_without_pandas_the_error_names_the_extra(dexcare_conn_id, sandbox, tmp_path):
    """pandas made unimportable in a child process (``sys.modules['pandas'] = None``)."""
    code = (
        "import sys\n"
        "sys.modules['pandas'] = None\n"
        "from dexcare.hooks.dexcare import DexCareHook\n"
        "from dexcare.frames.report import read_report\n"
        "from dexcare.frames.warehouse import read_table_window\n"
        "calls = [lambda: DexCareHook().get_df(report_type='virtual'),\n"
        "         lambda: DexCareHook().get_df_by_chunks('0b4cbd4c-1d2e-4f5a-9b8c-7d6e5f4a3b2c', chunksize=5),\n"
        f"         lambda: read_report({str(tmp_path / 'x.csv')!r}),\n"
        "         lambda: read_table_window(report_type='virtual', start_date='2026-11-01', end_date='2026-11-02')]\n"
        "for call in calls:\n"
        "    try:\n"
        "        call()\n"
        "    except Exception as exc:\n"
        "        print(type(exc).__name__, exc)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    lines = [line for line in result.stdout.splitlines() if line.startswith("AirflowOptionalProviderFeature")]
    assert len(lines) == 4, result.stdout + result.stderr
    assert all("pip install 'airflow-provider-dexcare[pandas]'" in line for line in lines)
    assert sandbox.request_log == []
