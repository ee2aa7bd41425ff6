"""Every documented answer of the sandbox API, over real loopback HTTP."""

from __future__ import annotations

import csv
import datetime as dt
import io
import logging
import uuid

import pytest
import requests
from dexcare.report import DEFAULT_LOOKBACK_DAYS, REPORTS_PATH, ReportStatus, ReportType
from dexcare.sandbox import FAULTS_PATH, SandboxServer, iter_report_csv

from tests.support.helpers import SANDBOX_TOKEN
from tests.support.sandbox_api import Api

AUTH_FAILED = {"message": "Authorization failed: bad service token"}
UNKNOWN_ID = "3f2b8c1e-4d5a-4b6c-9e7f-0a1b2c3d4e5f"


def test_start_returns_a_guid_and_records_the_window(fast, api):
    response = api.start({"type": "retail", "startDate": "2026-11-01", "endDate": "2026-11-10"})
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    report_id = response.json()["id"]
    assert str(uuid.UUID(report_id)) == report_id
    report = fast.reports[report_id]
    assert report.report_type is ReportType.RETAIL
    assert (report.start_date, report.end_date) == (dt.date(2026, 11, 1), dt.date(2026, 11, 10))
    assert report.faults == []


def test_without_dates_the_report_covers_the_past_ten_days(fast, api):
    report = fast.reports[api.start_id({"type": "provider_booking"})]
    today = dt.datetime.now(dt.UTC).date()
    assert report.end_date in (today, today - dt.timedelta(days=1))  # midnight may pass mid-test
    assert (report.end_date - report.start_date).days == DEFAULT_LOOKBACK_DAYS - 1


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        ({}, "'type' is required"),
        ({"type": ""}, "'type' is required"),
        ({"startDate": "2026-11-01", "endDate": "2026-11-02"}, "'type' is required"),
        ({"type": "telehealth"}, "'type' must be one of [provider_booking, retail, virtual]"),
        ({"type": "Virtual"}, "'type' must be one of [provider_booking, retail, virtual]"),
        ({"type": 3}, "'type' must be one of [provider_booking, retail, virtual]"),
    ],
)
def test_start_rejects_a_missing_or_invalid_type(fast, api, payload, error):
    response = api.start(payload)
    assert (response.status_code, response.json()) == (400, {"error": error})
    assert fast.reports == {}


@pytest.mark.parametrize(
    ("dates", "fragment"),
    [
        ({"startDate": "2026-11-01"}, "both startDate and endDate or neither"),
        ({"endDate": "2026-11-01"}, "both startDate and endDate or neither"),
        ({"startDate": "11/01/2026", "endDate": "2026-11-10"}, "is not an ISO date"),
        ({"startDate": "2026-11-01", "endDate": "2026-13-40"}, "is not an ISO date"),
        ({"startDate": "2026-11-10", "endDate": "2026-11-01"}, "is after endDate"),
    ],
)
def test_start_rejects_bad_lonely_or_inverted_dates(fast, api, dates, fragment):
    response = api.start({"type": "virtual", **dates})
    assert response.status_code == 400
    assert fragment in response.json()["error"]
    assert fast.reports == {}


@pytest.mark.parametrize("body", [b"{not json", b"\xff\xfe", b"", b"[1, 2]", b'"virtual"'])
def test_start_rejects_a_body_that_is_not_a_json_object(api, body):
    response = api.request("POST", REPORTS_PATH, data=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.json()["error"]


@pytest.mark.parametrize("token", [None, "wrong", SANDBOX_TOKEN + "x", ""])
def test_every_endpoint_refuses_a_missing_or_wrong_token_first(fast, api, token):
    report_id = api.start_id()
    intruder = Api(fast.url, token)
    probes = [
        intruder.start({"type": "virtual"}),
        intruder.start({}),  # 403 wins over 400
        intruder.status(report_id),
        intruder.status("not-a-guid"),
        intruder.status(UNKNOWN_ID),
        intruder.data(report_id),
        intruder.data("not-a-guid"),
        intruder.request("GET", FAULTS_PATH),
        intruder.request("POST", FAULTS_PATH, json={"kind": "http_500"}),
        intruder.request("DELETE", FAULTS_PATH),
    ]
    assert [(p.status_code, p.json()) for p in probes] == [(403, AUTH_FAILED)] * len(probes)
    assert len(fast.reports) == 1 and fast.faults.pending() == []


@pytest.mark.parametrize("header", ["Bearer {t}", "dc-token", "{t}", "dc-token  wrong {t}"])
def test_other_authorization_schemes_are_refused(fast, api, header):
    response = requests.post(fast.url + REPORTS_PATH, json={"type": "virtual"}, timeout=10,
                             headers={"Authorization": header.format(t=SANDBOX_TOKEN)})
    assert response.status_code == 403


def test_unknown_report_is_404_on_status_and_data(api):
    for response in (api.status(UNKNOWN_ID), api.data(UNKNOWN_ID)):
        assert (response.status_code, response.json()) == (404, {"error": "QueryExecution Not Found"})


@pytest.mark.parametrize("bad_id", ["not-a-guid", "3f2b8c1e4d5a4b6c9e7f0a1b2c3d4e5f", "1234", "%20"])
def test_malformed_id_is_400_with_each_endpoints_wording(api, bad_id):
    status, data = api.status(bad_id), api.data(bad_id)
    assert (status.status_code, status.json()) == (400, {"msg": "'reportId' must be a valid GUID"})
    assert (data.status_code, data.json()) == (400, {"error": "'reportId' must be a valid GUID"})


def test_upper_case_id_is_the_same_report(api):
    report_id = api.start_id()
    assert api.status(report_id.upper()).json() == {"status": "SUCCEEDED"}


def test_status_moves_queued_running_succeeded(make_server):
    server = make_server(queue_seconds=0.4, run_seconds=0.4)
    api = Api(server.url)
    report_id = api.start_id()
    assert api.statuses_until(report_id, {ReportStatus.SUCCEEDED}) == ["QUEUED", "RUNNING", "SUCCEEDED"]


def test_status_is_a_pure_function_of_elapsed_time(fast, api):
    report = fast.reports[api.start_id()]
    report.queue_seconds, report.run_seconds = 1.0, 2.0
    t0 = report.created
    assert [report.status_at(t0 + t) for t in (0, 0.99, 1.0, 2.99, 3.0, 1e6)] == [
        "QUEUED", "QUEUED", "RUNNING", "RUNNING", "SUCCEEDED", "SUCCEEDED"]


def test_data_before_success_is_400(make_server):
    server = make_server(queue_seconds=30, run_seconds=30)
    api = Api(server.url)
    report_id = api.start_id()
    response = api.data(report_id)
    assert (response.status_code, response.json()) == (400, {"error": "QueryExecution did not succeed"})


def test_data_streams_the_generated_csv_with_content_length(fast, api):
    report_id = api.start_id({"type": "retail", "startDate": "2026-11-01", "endDate": "2026-11-07"})
    response = api.data(report_id)
    expected = b"".join(iter_report_csv("retail", dt.date(2026, 11, 1), dt.date(2026, 11, 7),
                                        seed=fast.seed, visits_per_day=fast.visits_per_day))
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/csv; charset=utf-8"
    assert int(response.headers["Content-Length"]) == len(expected)
    assert "Transfer-Encoding" not in response.headers
    assert response.content == expected
    rows = list(csv.reader(io.StringIO(response.content.decode("utf-8"), newline="")))
    assert rows[0][0] == "Visit ID" and len(rows) > 7 * 20
    assert fast.reports[report_id].size == len(expected)  # measured once, then cached


def test_data_uses_chunked_encoding_without_content_length(make_server):
    server = make_server(content_length=False, seed=4)
    api = Api(server.url)
    report_id = api.start_id({"type": "virtual", "startDate": "2026-11-01", "endDate": "2026-11-03"})
    response = api.data(report_id)
    assert response.headers.get("Transfer-Encoding") == "chunked"
    assert "Content-Length" not in response.headers
    assert response.content == b"".join(iter_report_csv("virtual", dt.date(2026, 11, 1), dt.date(2026, 11, 3),
                                                        seed=4, visits_per_day=20))
    assert api.status(report_id).json() == {"status": "SUCCEEDED"}  # the connection is still usable


def test_seed_and_visits_per_day_shape_the_data(make_server):
    bodies = []
    for seed in (1, 1, 2):
        server = make_server(seed=seed, visits_per_day=7)
        api = Api(server.url)
        bodies.append(api.data(api.start_id({"type": "virtual", "startDate": "2026-11-01",
                                              "endDate": "2026-11-01"})).content)
    assert bodies[0] == bodies[1] != bodies[2]
    assert len(list(csv.reader(io.StringIO(bodies[0].decode(), newline="")))) >= 1 + 7


def test_request_log_records_method_path_status(fast, api):
    report_id = api.start_id()
    api.status(report_id)
    api.data("nope")
    Api(fast.url, "wrong").status(report_id)
    assert fast.request_log == [
        ("POST", REPORTS_PATH, 200),
        ("GET", f"{REPORTS_PATH}/{report_id}", 200),
        ("GET", f"{REPORTS_PATH}/nope/data", 400),
        ("GET", f"{REPORTS_PATH}/{report_id}", 403),
    ]


def test_unknown_paths_and_methods(api):
    assert api.request("GET", "/api/8/reporting/other").status_code == 404
    assert api.request("GET", REPORTS_PATH).status_code == 405
    wrong = api.request("DELETE", f"{REPORTS_PATH}/{UNKNOWN_ID}")
    assert wrong.status_code == 405 and wrong.headers["Allow"] == "GET"


def test_neither_token_nor_rows_reach_the_logs(fast, api, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    report_id = api.start_id({"type": "virtual", "startDate": "2026-11-01", "endDate": "2026-11-02"})
    body = api.data(report_id).text
    Api(fast.url, "wrong-token-value").status(report_id)
    out, err = capfd.readouterr()
    logged = caplog.text + out + err
    assert f"GET {REPORTS_PATH}/{report_id}/data 200" in caplog.text
    assert SANDBOX_TOKEN not in logged and "wrong-token-value" not in logged
    first_row = body.splitlines()[1]
    assert first_row.split(",")[0] not in logged  # not even a visit id
    assert SANDBOX_TOKEN not in repr(fast)


def test_concurrent_clients(fast):
    from concurrent.futures import ThreadPoolExecutor

    def one(i: int) -> bytes:
        api = Api(fast.url)
        report_id = api.start_id({"type": "virtual", "startDate": "2026-11-01", "endDate": "2026-11-05"})
        return api.data(report_id).content

    with ThreadPoolExecutor(8) as pool:
        bodies = list(pool.map(one, range(16)))
    assert len(set(bodies)) == 1 and len(fast.reports) == 16


def test_start_stop_and_restart_on_a_new_port():
    server = SandboxServer(token=SANDBOX_TOKEN, queue_seconds=0, run_seconds=0)
    with pytest.raises(RuntimeError):
        _ = server.url
    with server:
        assert Api(server.url).start().status_code == 200
        url = server.url
    server.stop()  # idempotent
    with pytest.raises(requests.ConnectionError):
        requests.get(url + REPORTS_PATH, timeout=5)
    with pytest.raises(ValueError):
        SandboxServer(token="")
