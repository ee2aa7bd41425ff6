"""Report files in a real S3-compatible server: written all-or-nothing with flat memory, read, verified, deleted.

The server is SeaweedFS on loopback (tests/support/object_store.py), reached through apache-airflow-providers-amazon's
``ObjectStoragePath`` with an ``aws`` connection, as a deployment reaches S3. DexCare is the sandbox.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import time
import tracemalloc
import uuid
from collections.abc import Iterator
from types import SimpleNamespace

import psycopg
import pytest
from dexcare.exceptions import DexCareCSVError, DexCareIncompleteDownloadError, DexCareReportFileMissingError
from dexcare.hooks.dexcare import DexCareHook
from dexcare.load.loader import LoadOptions, load_reports
from dexcare.operators.load_reports import DexCareLoadReportsOperator
from dexcare.report import ReportStatus
from dexcare.sandbox import SandboxServer
from dexcare.sandbox.process import SandboxProcess
from dexcare.storage import PART_BYTES, ReportLocation
from psycopg import sql

from tests.storage.conftest import S3_CONN_ID
from tests.support.airflow_cli import postgres_connection
from tests.support.helpers import fast_hook, set_connection
from tests.support.object_store import SeaweedS3
from tests.support.warehouse import scratch_schema

TOKEN = "dc-storage-test-key-0b7e"


def succeeded(hook: DexCareHook, *window: str) -> str:
    report_id = hook.start_report("virtual", *window)
    deadline = time.monotonic() + 60
    while hook.get_report_status(report_id) != ReportStatus.SUCCEEDED:
        assert time.monotonic() < deadline, "report did not succeed in time"
        time.sleep(0.05)
    return report_id


@pytest.fixture
def prefix() -> str:
    """A fresh key prefix with a space and non-ASCII, so every test sees only its own objects."""
    return f"t-{uuid.uuid4().hex[:8]}/naïve dir/"


@pytest.fixture
def big_sandbox(monkeypatch: pytest.MonkeyPatch) -> Iterator[SandboxServer]:
    """Reports of about 20 MiB: more than two upload parts, so a cut at half the body has uploaded one."""
    with SandboxServer(token=TOKEN, queue_seconds=0, run_seconds=0, visits_per_day=25_000) as server:
        set_connection(monkeypatch, "dexcare_default", server.url, TOKEN)
        yield server


def test_download_writes_the_object_and_leaves_no_upload_open(s3: SeaweedS3, big_sandbox, prefix: str) -> None:
    hook = fast_hook()
    report_id = succeeded(hook, "2026-11-01", "2026-11-04")
    uri = f"s3://{S3_CONN_ID}@{s3.bucket}/{prefix}r.csv"
    result = hook.download_report(report_id, uri)
    assert result.path == uri
    body = s3.read(f"{prefix}r.csv")
    assert len(body) == result.bytes > 2 * PART_BYTES
    assert hashlib.sha256(body).hexdigest() == result.sha256
    assert s3.keys(prefix) == [f"{prefix}r.csv"]
    assert s3.multipart_uploads(prefix) == []


def test_a_download_that_breaks_off_leaves_no_object_and_no_parts(s3: SeaweedS3, big_sandbox, prefix: str) -> None:
    hook = fast_hook(attempts=1)
    report_id = succeeded(hook, "2026-11-01", "2026-11-04")
    big_sandbox.inject("drop_download", count=1)
    with pytest.raises(DexCareIncompleteDownloadError, match=r"broke off|announced bytes") as broken:
        hook.download_report(report_id, f"s3://{S3_CONN_ID}@{s3.bucket}/{prefix}broken.csv")
    after = int(str(broken.value).split(" after ")[1].split()[0])
    assert after > PART_BYTES, "the cut must come after at least one part was uploaded, or the test proves little"
    assert s3.keys(prefix) == []
    assert s3.multipart_uploads(prefix) == [], "the multipart upload must be aborted, not left for lifecycle rules"


def test_the_trap_is_real_fsspecs_with_block_publishes_a_truncated_object(s3: SeaweedS3, prefix: str) -> None:
    """Why storage.py does not use ``with path.open("wb")``: on this server, as on S3, an exception inside the
    block still completes the multipart upload. If this ever stops being true, the guard is merely redundant."""
    from airflow.sdk import ObjectStoragePath

    path = ObjectStoragePath(f"s3://{S3_CONN_ID}@{s3.bucket}/{prefix}trap.csv")
    with pytest.raises(RuntimeError), path.open("wb", block_size=PART_BYTES) as out:
        out.write(b"x" * (PART_BYTES + 1))
        raise RuntimeError("the download broke off")
    assert s3.keys(prefix) == [f"{prefix}trap.csv"]  # a "finished" object holding half a report
    with pytest.raises(RuntimeError), ReportLocation.parse(f"{path}.guarded").write() as out:
        out.write(b"x" * (PART_BYTES + 1))
        raise RuntimeError("the download broke off")
    assert s3.keys(prefix) == [f"{prefix}trap.csv"]
    assert s3.multipart_uploads(prefix) == []


def test_a_failed_download_keeps_the_existing_object(s3: SeaweedS3, sandbox, dexcare_conn_id, prefix: str) -> None:
    s3.client().put_object(Bucket=s3.bucket, Key=f"{prefix}r.csv", Body=b"yesterday's good file")
    hook = fast_hook(attempts=1)
    report_id = succeeded(hook)
    sandbox.inject("drop_download", count=1)
    with pytest.raises(DexCareIncompleteDownloadError):
        hook.download_report(report_id, f"s3://{S3_CONN_ID}@{s3.bucket}/{prefix}r.csv")
    assert s3.read(f"{prefix}r.csv") == b"yesterday's good file"
    assert s3.multipart_uploads(prefix) == []


def test_small_and_empty_objects_are_written_whole(s3: SeaweedS3, prefix: str) -> None:
    for name, body in (("small.csv", b"visitId\nv1\n"), ("empty.csv", b"")):
        location = ReportLocation.parse(f"s3://{S3_CONN_ID}@{s3.bucket}/{prefix}{name}")
        with location.write() as out:
            out.write(body)
        assert s3.read(f"{prefix}{name}") == body
        with location.open() as stream:
            assert stream.read() == body
    assert s3.multipart_uploads(prefix) == []


def test_a_missing_object_names_the_cause_and_the_fix(s3: SeaweedS3, prefix: str) -> None:
    location = ReportLocation.parse(f"s3://{S3_CONN_ID}@{s3.bucket}/{prefix}gone.csv")
    with pytest.raises(DexCareReportFileMissingError) as missing:
        location.open()
    message = str(missing.value)
    assert location.uri in message and "lifecycle rule" in message and "Fix:" in message
    assert "download_report" in message and "\n" not in message
    assert location.delete() is False


@pytest.fixture
def big_sandbox_process(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A sandbox in its own process, so its memory is not counted with the client's."""
    args = ["--visits-per-day", "40000", "--queue-seconds", "0", "--run-seconds", "0"]
    with SandboxProcess(token=TOKEN, args=args) as server:
        set_connection(monkeypatch, "dexcare_big", server.url, TOKEN)
        yield server.url


def test_peak_memory_of_a_download_into_the_bucket_stays_flat(s3: SeaweedS3, big_sandbox_process, prefix) -> None:
    """Flat means: a report three times the size needs no more memory. Both are several parts long."""
    hook = DexCareHook("dexcare_big", timeout=120)
    peaks, sizes = [], []
    for days, end in ((2, "2026-11-02"), (7, "2026-11-07")):
        report_id = succeeded(hook, "2026-11-01", end)
        location = ReportLocation.parse(f"s3://{S3_CONN_ID}@{s3.bucket}/{prefix}{days}.csv")
        location.exists()  # the connection and the S3 client are set up once per process, not per file
        tracemalloc.start()
        try:
            result = hook.download_report(report_id, location)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        peaks.append(peak)
        sizes.append(result.bytes)
    print(f"\ndownloads of {sizes[0] / 2**20:.0f} and {sizes[1] / 2**20:.0f} MiB into S3: Python peaks "
          f"{peaks[0] / 2**20:.1f} and {peaks[1] / 2**20:.1f} MiB (part size {PART_BYTES >> 20} MiB)")
    assert sizes[1] > 3 * sizes[0] > 6 * PART_BYTES
    # A part being filled, the part being sent and botocore's copy of it: bounded by the part size, not the file.
    assert peaks[1] < peaks[0] + 4 * 2**20, peaks
    assert max(peaks) < 5 * PART_BYTES, peaks


# --- the load reads from the bucket ----------------------------------------------------------------------------


@pytest.fixture
def schema(pg_uri: str) -> Iterator[str]:
    with scratch_schema(pg_uri, "dexcare_s3") as name:
        yield name


def downloaded(s3: SeaweedS3, sandbox, prefix: str) -> dict:
    hook = fast_hook()
    report_id = succeeded(hook, "2026-11-01", "2026-11-03")
    uri = f"s3://{S3_CONN_ID}@{s3.bucket}/{prefix}{report_id}.csv"
    result = hook.download_report(report_id, uri)
    return {"uri": uri, "bytes": result.bytes, "sha256": result.sha256, "rows": result.rows, "report_id": report_id,
            "report_type": "virtual", "start_date": "2026-11-01", "end_date": "2026-11-03"}


def test_the_operator_loads_from_the_bucket_and_deletes_after_the_commit(
    s3: SeaweedS3, sandbox, dexcare_conn_id, prefix, pg_uri, schema, admin, monkeypatch
) -> None:
    report = downloaded(s3, sandbox, prefix)
    monkeypatch.setenv("AIRFLOW_CONN_DEXCARE_WAREHOUSE", postgres_connection(pg_uri))
    op = DexCareLoadReportsOperator(task_id="load", reports=[report], schema=schema, delete_files=True)
    context = {"dag": SimpleNamespace(dag_id="d"), "run_id": "r", "data_interval_end": dt.datetime(2026, 11, 3)}
    summary = op.execute(context)
    json.dumps(summary)
    loaded = admin.execute(sql.SQL("SELECT count(*) FROM {}.avr_virtual").format(sql.Identifier(schema))).fetchone()
    assert loaded[0] == summary["tables"]["avr_virtual"]["inserted"] > 0
    assert summary["reports"][0]["file_uri"] == report["uri"]
    assert s3.keys(prefix) == [], "the object must be deleted after the committed load"


def test_a_changed_object_fails_the_sha256_check_and_loads_nothing(
    s3: SeaweedS3, sandbox, dexcare_conn_id, prefix, pg_uri, schema, admin
) -> None:
    report = downloaded(s3, sandbox, prefix)
    key = report["uri"].split(f"{s3.bucket}/", 1)[1]
    body = s3.read(key)
    s3.client().put_object(Bucket=s3.bucket, Key=key, Body=body.replace(b"\n", b"\r\n", 1))
    with psycopg.connect(pg_uri) as conn, pytest.raises(DexCareCSVError, match="sha256"):
        load_reports(conn, [report], dialect="postgres", options=LoadOptions(schema=schema))
    exists = admin.execute("SELECT to_regclass(%s)", [f"{schema}.avr_virtual"]).fetchone()[0]
    assert exists is None
    assert s3.keys(prefix) == [key], "a failed load keeps the file so a cleared task can load it again"


def test_a_load_whose_object_expired_says_what_happened(s3: SeaweedS3, sandbox, dexcare_conn_id, prefix, pg_uri,
                                                        schema) -> None:
    report = downloaded(s3, sandbox, prefix)
    s3.client().delete_object(Bucket=s3.bucket, Key=report["uri"].split(f"{s3.bucket}/", 1)[1])
    with psycopg.connect(pg_uri) as conn, pytest.raises(DexCareReportFileMissingError, match="lifecycle rule"):
        load_reports(conn, [report], dialect="postgres", options=LoadOptions(schema=schema))


def test_the_download_operator_follows_the_deployment_setting(
    s3: SeaweedS3, sandbox, dexcare_conn_id, prefix, monkeypatch
) -> None:
    """No destination on the operator and no DAG edit: AIRFLOW__DEXCARE__REPORT_STORAGE decides, per run."""
    from dexcare.operators.download_report import DexCareDownloadReportOperator
    from dexcare.operators.start_report import DexCareStartReportOperator

    from tests.support.task_runtime import Runtime

    monkeypatch.setenv("AIRFLOW__DEXCARE__REPORT_STORAGE", f"s3://{S3_CONN_ID}@{s3.bucket}/{prefix}")
    rt = Runtime()
    report_id = rt.run(DexCareStartReportOperator(
        task_id="start", report_type="virtual", report_start_date="2026-11-01", report_end_date="2026-11-02"
    ))
    time.sleep(0.6)
    result = rt.run(DexCareDownloadReportOperator(task_id="download", report_id=report_id, request_task_id="start"))
    run_dir = f"{prefix}dexcare_test/manual__2026-11-24T00_00_00_00_00/"
    assert result["uri"] == f"s3://{S3_CONN_ID}@{s3.bucket}/{run_dir}dexcare_virtual_2026-11-01_2026-11-02_{report_id}.csv"
    assert s3.keys(prefix) == [result["uri"].split(f"{s3.bucket}/", 1)[1]]
    assert hashlib.sha256(s3.read(s3.keys(prefix)[0])).hexdigest() == result["sha256"]


# --- nothing of the run stays in the bucket --------------------------------------------------------------------


def load_context() -> dict:
    from tests.support.task_try import DAG_ID, RUN_ID

    return {"dag": SimpleNamespace(dag_id=DAG_ID), "run_id": RUN_ID, "data_interval_end": dt.datetime(2026, 11, 4)}


def test_a_killed_upload_is_aborted_by_the_retry_and_the_load_leaves_nothing_of_the_run(
    s3: SeaweedS3, big_sandbox, prefix, pg_uri, schema, monkeypatch
) -> None:
    """A download SIGKILLed mid-upload leaves an incomplete multipart upload: no object, but its parts hold
    patient data. The retry aborts it before it uploads again; the committed load aborts any other of the run
    (here a superseded report's) and deletes the run's objects, superseded reports included."""
    from dexcare.operators.download_report import DexCareDownloadReportOperator
    from dexcare.storage import report_file_name, safe_name

    from tests.support.task_runtime import Runtime
    from tests.support.task_try import DAG_ID, RUN_ID, kill_mid_stream, spawn

    monkeypatch.setenv("AIRFLOW__DEXCARE__REPORT_STORAGE", f"s3://{S3_CONN_ID}@{s3.bucket}/{prefix}")
    run_prefix = f"{prefix}{DAG_ID}/{safe_name(RUN_ID)}/"
    window = ("2026-11-01", "2026-11-04")
    report_id = succeeded(fast_hook(), *window)
    key = run_prefix + report_file_name("virtual", *window, report_id)
    kill_mid_stream(spawn(*window, "--report-id", report_id), lambda: s3.multipart_uploads(run_prefix))
    assert s3.multipart_uploads(run_prefix) == [key] and s3.keys(prefix) == []

    result = Runtime().run(DexCareDownloadReportOperator(
        task_id="download", report_id=report_id, report_type="virtual", report_start_date=window[0],
        report_end_date=window[1],
    ))
    assert s3.keys(prefix) == [key] and s3.multipart_uploads(prefix) == []

    # What a cleared try left: an earlier report's object (its load failed) and a killed upload of another one.
    client = s3.client()
    superseded = run_prefix + report_file_name("virtual", *window, str(uuid.uuid4()))
    client.put_object(Bucket=s3.bucket, Key=superseded, Body=b"visitId\nv1\n")
    killed = run_prefix + report_file_name("virtual", *window, str(uuid.uuid4()))
    upload = client.create_multipart_upload(Bucket=s3.bucket, Key=killed)["UploadId"]
    client.upload_part(Bucket=s3.bucket, Key=killed, UploadId=upload, PartNumber=1, Body=b"x" * PART_BYTES)
    elsewhere = f"{prefix}kept/{report_file_name('virtual', *window, str(uuid.uuid4()))}"
    client.put_object(Bucket=s3.bucket, Key=elsewhere, Body=b"visitId\n")  # not this run's: stays

    monkeypatch.setenv("AIRFLOW_CONN_DEXCARE_WAREHOUSE", postgres_connection(pg_uri))
    op = DexCareLoadReportsOperator(task_id="load", reports=[result], schema=schema, delete_files=True)
    summary = op.execute(load_context())
    assert summary["tables"]["avr_virtual"]["rows_in_file"] == result["rows"] > 0
    assert s3.keys(prefix) == [elsewhere]
    assert s3.multipart_uploads(prefix) == []


def test_a_clean_up_the_store_refuses_after_the_commit_is_finished_by_the_retry_without_a_second_load(
    tmp_path, sandbox, dexcare_conn_id, prefix, pg_uri, schema, admin, monkeypatch
) -> None:
    """The object store goes down between the commit and the delete (a real SeaweedFS, stopped). The task fails
    saying the data is committed and what was left; its retry, once the store is back, finds the report in
    load_audit, loads nothing again and deletes the file."""
    from airflow.sdk.io import store
    from dexcare.exceptions import DexCareCleanUpError

    with SeaweedS3(tmp_path / "seaweedfs") as own:
        connection = json.loads(own.connection())
        connection["extra"]["config_kwargs"] = {"retries": {"max_attempts": 1}, "connect_timeout": 1}
        monkeypatch.setenv(f"AIRFLOW_CONN_{S3_CONN_ID.upper()}", json.dumps(connection))
        monkeypatch.delitem(store._STORE_CACHE, f"s3-{S3_CONN_ID}", raising=False)
        report = downloaded(own, sandbox, prefix)
        key = report["uri"].split(f"{own.bucket}/", 1)[1]
        monkeypatch.setenv("AIRFLOW_CONN_DEXCARE_WAREHOUSE", postgres_connection(pg_uri))

        class StoreGoesDown(DexCareLoadReportsOperator):
            """Stops the store right after the commit (the asset events are published between the two)."""

            def _publish_asset_events(self, context, summary) -> None:
                super()._publish_asset_events(context, summary)
                own.close()

        first = StoreGoesDown(task_id="load", reports=[report], schema=schema, delete_files=True)
        with pytest.raises(DexCareCleanUpError) as failed:
            first.execute(load_context())
        message = str(failed.value)
        assert "The load committed" in message and key in message and "load_audit" in message
        assert "only finishes the clean-up" in message and "\n" not in message
        table = sql.Identifier(schema, "avr_virtual")
        loaded = admin.execute(sql.SQL("SELECT count(*) FROM {}").format(table)).fetchone()[0]
        assert loaded == report["rows"] > 0
        audit = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, "load_audit"))
        assert admin.execute(audit).fetchone()[0] == 1

        own.start()
        assert own.keys(prefix) == [key], "the store came back with the file the clean-up could not delete"
        retry = DexCareLoadReportsOperator(task_id="load", reports=[report], schema=schema, delete_files=True)
        summary = retry.execute(load_context())
        assert summary["already_loaded"] is True
        assert summary["reports"][0]["report_id"] == report["report_id"]
        assert summary["tables"]["avr_virtual"]["inserted"] == loaded
        assert admin.execute(audit).fetchone()[0] == 1, "the retry must not load again"
        assert own.keys(prefix) == [] and own.multipart_uploads(prefix) == []
