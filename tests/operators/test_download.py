"""DexCareDownloadReportOperator: the XCom contract the load step relies on, and refusing unfinished reports."""

from __future__ import annotations

import csv
import hashlib
import os
import stat
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest
from dexcare.operators.download_report import DexCareDownloadReportError, DexCareDownloadReportOperator
from dexcare.operators.start_report import DexCareStartReportOperator
from dexcare.sandbox.generator import COLUMNS, ReportType

from tests.support.task_runtime import Runtime

CONTRACT = {"version", "uri", "bytes", "sha256", "rows", "header", "endpoint", "report_id", "report_type",
            "start_date", "end_date"}


def started(rt: Runtime, wait: float = 0.6) -> str:
    op = DexCareStartReportOperator(
        task_id="start", report_type="virtual", report_start_date="2026-11-01", report_end_date="2026-11-02"
    )
    report_id = rt.run(op)
    time.sleep(wait)
    return report_id


def test_returns_the_contract_and_writes_a_private_file(dexcare_conn_id, sandbox, tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "home"))
    rt = Runtime()
    report_id = started(rt)
    result = rt.run(DexCareDownloadReportOperator(task_id="download", report_id=report_id, request_task_id="start"))
    assert set(result) == CONTRACT
    assert result["version"] == 1  # the hand-off's XCom form (dexcare.handoff); the only key added to it
    assert result["report_id"] == report_id
    assert (result["report_type"], result["start_date"], result["end_date"]) == ("virtual", "2026-11-01", "2026-11-02")
    uri = urlparse(result["uri"])
    assert uri.scheme == "file"
    path = Path(uri.path)
    data = path.read_bytes()
    assert result["bytes"] == len(data) > 0
    assert result["sha256"] == hashlib.sha256(data).hexdigest()
    with path.open(newline="", encoding="utf-8-sig") as f:
        records = list(csv.reader(f))
    assert result["rows"] == len(records) - 1 > 0
    assert result["header"] == records[0] == COLUMNS[ReportType.VIRTUAL]  # the names only, never a row
    assert result["endpoint"] == sandbox.url.rstrip("/")
    # Per DAG run, private: health data must not be world-readable on a shared worker.
    assert str(path).startswith(str(tmp_path / "home" / "dexcare-reports" / "dexcare_test"))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "home" / "dexcare-reports").st_mode) == 0o700
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no leftover partial files


def test_destination_directory_and_file(dexcare_conn_id, sandbox, tmp_path):
    rt = Runtime()
    report_id = started(rt)
    in_dir = rt.run(
        DexCareDownloadReportOperator(
            task_id="d1", report_id=report_id, destination=f"{tmp_path}/out/", request_task_id="start"
        )
    )
    assert Path(urlparse(in_dir["uri"]).path).parent == tmp_path / "out"
    as_file = rt.run(
        DexCareDownloadReportOperator(
            task_id="d2",
            report_id=report_id,
            destination=f"file://{tmp_path}/exact/name.csv",
            report_type="virtual",
            report_start_date="2026-11-01",
            report_end_date="2026-11-02",
        )
    )
    assert as_file["uri"] == (tmp_path / "exact" / "name.csv").as_uri()
    assert as_file["sha256"] == in_dir["sha256"]


def test_object_storage_destination(dexcare_conn_id, sandbox):
    """A non-local ObjectStoragePath: fsspec's in-memory store, attached the documented way, stands in for s3://."""
    import fsspec
    from airflow.sdk import ObjectStoragePath
    from airflow.sdk.io import attach

    attach(protocol="memory", fs=fsspec.filesystem("memory"))

    rt = Runtime()
    report_id = started(rt)
    result = rt.run(
        DexCareDownloadReportOperator(
            task_id="d", report_id=report_id, destination="memory://dexcare-bucket/reports/", request_task_id="start"
        )
    )
    uri = result["uri"].replace("memory:///", "memory://", 1)  # how universal_pathlib 0.2 (Airflow 3.0/3.1) puts it
    assert uri.startswith("memory://dexcare-bucket/reports/dexcare_virtual_2026-11-01_2026-11-02_")
    stored = ObjectStoragePath(result["uri"]).read_bytes()
    assert hashlib.sha256(stored).hexdigest() == result["sha256"] and result["rows"] > 0


def test_refuses_a_report_that_has_not_succeeded(slow_sandbox, tmp_path):
    rt = Runtime()
    report_id = started(rt, wait=0.3)
    op = DexCareDownloadReportOperator(
        task_id="download", report_id=report_id, destination=f"{tmp_path}/", request_task_id="start"
    )
    with pytest.raises(DexCareDownloadReportError, match="it is RUNNING, not SUCCEEDED") as refused:
        op.execute(rt.context("download"))
    assert "DexCareReportSensor" in str(refused.value)
    assert not any(path.endswith("/data") for _m, path, _s in slow_sandbox.request_log)
    assert list(tmp_path.iterdir()) == []


def test_refuses_a_cancelled_report_telling_to_start_again(dexcare_conn_id, sandbox, tmp_path):
    sandbox.inject("cancel")
    rt = Runtime()
    report_id = started(rt, wait=0.3)
    op = DexCareDownloadReportOperator(
        task_id="download", report_id=report_id, destination=f"{tmp_path}/", request_task_id="start"
    )
    with pytest.raises(DexCareDownloadReportError, match=r"CANCELLED, not SUCCEEDED.*start a new report"):
        op.execute(rt.context("download"))


def test_unknown_request_is_refused_before_any_call(dexcare_conn_id, sandbox):
    op = DexCareDownloadReportOperator(task_id="download", report_id="3f2b8c1e-4d5a-4b6c-9e7f-0a1b2c3d4e5f")
    with pytest.raises(ValueError, match="Cannot tell what report"):
        op.execute(Runtime().context("download"))
    assert sandbox.request_log == []
