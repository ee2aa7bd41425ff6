"""The API's vocabulary: report types, statuses, ids and requests, checked before anything is sent."""

from __future__ import annotations

import datetime as dt

import pytest
from dexcare.exceptions import DexCareValidationError
from dexcare.report import ReportRequest, ReportStatus, ReportType, validate_report_id


def test_request_with_a_window():
    request = ReportRequest.build(" Virtual ", "2026-11-14", dt.date(2026, 11, 24))
    assert request == ReportRequest(ReportType.VIRTUAL, dt.date(2026, 11, 14), dt.date(2026, 11, 24))
    assert request.to_payload() == {"type": "virtual", "startDate": "2026-11-14", "endDate": "2026-11-24"}
    assert request.to_dict() == {"report_type": "virtual", "start_date": "2026-11-14", "end_date": "2026-11-24"}
    assert ReportRequest.from_dict(request.to_dict()) == request


def test_request_without_a_window_means_dexcare_default():
    request = ReportRequest.build("provider_booking", "", None)
    assert request.to_payload() == {"type": "provider_booking"}
    assert request.to_dict() == {"report_type": "provider_booking", "start_date": None, "end_date": None}
    assert ReportRequest.from_dict(request.to_dict()) == request


def test_datetimes_and_iso_timestamps_count_as_their_day():
    request = ReportRequest.build("retail", dt.datetime(2026, 11, 1, 23, 59), "2026-11-02T00:00:00+00:00")
    assert (request.start_date, request.end_date) == (dt.date(2026, 11, 1), dt.date(2026, 11, 2))


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("weekly", None, None), "Unknown DexCare report type 'weekly': use one of virtual, retail, provider_booking"),
        (("virtual", "2026-11-01", None), "Give both start_date and end_date or neither"),
        (("virtual", None, "2026-11-01"), "Give both start_date and end_date or neither"),
        (("virtual", "2026-11-02", "2026-11-01"), "start_date 2026-11-02 is after end_date 2026-11-01: swap them"),
        (("virtual", "01/11/2026", "2026-11-02"), "start_date '01/11/2026' is not an ISO date"),
        (("virtual", "2026-11-01", "2026-13-01"), "end_date '2026-13-01' is not an ISO date"),
    ],
)
def test_bad_requests_are_named(args, fragment):
    with pytest.raises(DexCareValidationError, match=fragment):
        ReportRequest.build(*args)


def test_report_ids_are_canonical_guids():
    guid = "3F2B8C1E-4D5A-4B6C-9E7F-0A1B2C3D4E5F"
    assert validate_report_id(f" {guid} ") == guid.lower()
    for bad in (None, "", "42", "{3f2b8c1e-4d5a-4b6c-9e7f-0a1b2c3d4e5f}", "3f2b8c1e4d5a4b6c9e7f0a1b2c3d4e5f", "../x"):
        with pytest.raises(DexCareValidationError, match="is not a GUID"):
            validate_report_id(bad)


def test_status_classes():
    assert {s for s in ReportStatus if s.in_progress} == {ReportStatus.QUEUED, ReportStatus.RUNNING}
    assert {s for s in ReportStatus if s.reusable} == {
        ReportStatus.QUEUED,
        ReportStatus.RUNNING,
        ReportStatus.SUCCEEDED,
    }
