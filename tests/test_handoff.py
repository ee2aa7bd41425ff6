"""The download-to-load hand-off record and its XCom form: what the load reads from a download's XCom."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from dexcare.exceptions import DexCareLoadError
from dexcare.handoff import XCOM_VERSION, ReportHandoff
from dexcare.report import ReportRequest, ReportType
from dexcare.storage import ReportLocation

REPORT_ID = "4abcdcb7-afd3-4ffe-b37f-8fb90b850299"
URI = f"file:///data/dexcare/dexcare_test/run/dexcare_virtual_2026-11-01_2026-11-02_{REPORT_ID}.csv"
#: Exactly what DexCareDownloadReportOperator pushed before the hand-off record existed (no version field),
#: captured from a run of tests/operators/test_download.py on that code.
PUSHED_BEFORE_VERSION = {
    "report_id": REPORT_ID, "report_type": "virtual", "start_date": "2026-11-01", "end_date": "2026-11-02",
    "endpoint": "http://127.0.0.1:37589", "uri": URI, "bytes": 8730,
    "sha256": "e5aa17cc4a8cbc705ca05e89ea71355c5f8b54d629f256976a4dac4af4e28012", "rows": 40,
    "header": ["visitId", "createdAt", "scheduledStart", "completedAt", "updatedAt", "visitStatus", "patientName",
               "patientState", "providerName", "practiceName", "reasonForVisit", "modality", "waitMinutes"],
}


def test_a_result_written_before_the_version_field_is_read_as_version_1() -> None:
    record = ReportHandoff.from_xcom(json.loads(json.dumps(PUSHED_BEFORE_VERSION)))  # as it comes out of XCom
    assert record.location == ReportLocation.parse(URI) and record.uri == URI
    assert record.path == "/data/dexcare/dexcare_test/run/" + URI.rsplit("/", 1)[1]
    assert (record.report_id, record.report_type) == (REPORT_ID, ReportType.VIRTUAL)
    assert (record.start_date, record.end_date) == (dt.date(2026, 11, 1), dt.date(2026, 11, 2))
    assert (record.bytes, record.sha256, record.rows) == (8730, PUSHED_BEFORE_VERSION["sha256"], 40)
    assert record.header == PUSHED_BEFORE_VERSION["header"] and record.endpoint == "http://127.0.0.1:37589"
    # Written again, it is the same result with the version added, and reads back to the same record.
    assert record.to_xcom() == {**PUSHED_BEFORE_VERSION, "version": XCOM_VERSION} and XCOM_VERSION == 1
    assert ReportHandoff.from_xcom(record.to_xcom()) == record


def test_the_download_builds_the_record_from_its_location() -> None:
    location = ReportLocation.parse(URI)
    request = ReportRequest.build("virtual", "2026-11-01", "2026-11-02")
    record = ReportHandoff.downloaded(location, REPORT_ID, bytes=8730, sha256=PUSHED_BEFORE_VERSION["sha256"],
                                      rows=40, header=PUSHED_BEFORE_VERSION["header"], request=request,
                                      endpoint="http://127.0.0.1:37589")
    assert record.location is location
    assert record.to_xcom() == {**PUSHED_BEFORE_VERSION, "version": 1}


def test_an_unknown_version_is_refused_naming_it_and_the_fix() -> None:
    for version in (2, "1", True, None):
        with pytest.raises(DexCareLoadError) as err:
            ReportHandoff.from_xcom({**PUSHED_BEFORE_VERSION, "version": version})
        message = str(err.value)
        assert f"has version {version!r}" in message and "reads version 1" in message
        assert "Fix: run the same provider release on every worker" in message
        assert "clear the download task" in message


def test_a_result_without_uri_type_or_id_is_refused_listing_its_keys() -> None:
    for key in ("uri", "report_type", "report_id"):
        partial = {k: v for k, v in PUSHED_BEFORE_VERSION.items() if k != key}
        with pytest.raises(DexCareLoadError, match=f"missing '{key}'; expected uri, report_type and report_id"):
            ReportHandoff.from_xcom(partial)
    not_a_mapping: Any = ["not", "a", "result"]
    with pytest.raises(DexCareLoadError, match="must be a mapping"):
        ReportHandoff.from_xcom(not_a_mapping)


def test_a_missing_window_is_dexcare_default_before_the_run_date() -> None:
    record = ReportHandoff.from_xcom({"uri": "/data/r.csv", "report_type": "retail", "report_id": REPORT_ID})
    assert record.uri == "/data/r.csv" and record.location.uri == "file:///data/r.csv"  # as recorded, and parsed
    assert record.window(dt.date(2026, 11, 23)) == (dt.date(2026, 11, 13), dt.date(2026, 11, 23))
    ended = ReportHandoff.from_xcom({**PUSHED_BEFORE_VERSION, "start_date": None})
    assert ended.window(dt.date(2026, 11, 23)) == (dt.date(2026, 10, 23), dt.date(2026, 11, 2))


def test_a_hook_download_without_its_request_cannot_be_loaded() -> None:
    record = ReportHandoff.downloaded(ReportLocation.parse(URI), REPORT_ID, bytes=1, sha256="ab", rows=0, header=None)
    assert record.report_type is None
    with pytest.raises(DexCareLoadError, match=r"without its report type.*request= to DexCareHook\.download_report"):
        record.loadable_type()
