"""Each fault kind, its filters and parameters, and the HTTP endpoint that injects them."""

from __future__ import annotations

import http.client
import time
import urllib.parse

import pytest
import requests
from dexcare.report import REPORTS_PATH
from dexcare.sandbox import FAULTS_PATH, Fault, FaultKind, parse_fault_spec

from tests.support.helpers import SANDBOX_TOKEN
from tests.support.sandbox_api import Api

WINDOW = {"type": "virtual", "startDate": "2026-11-01", "endDate": "2026-11-05"}


def test_http_500_answers_the_next_matching_requests(fast, api):
    fast.inject("http_500", count=2, endpoint="start")
    first, second, third = api.start(), api.start(), api.start()
    assert [r.status_code for r in (first, second, third)] == [500, 500, 200]
    assert first.json() == {"error": "Unknown error"}
    assert len(fast.reports) == 1


def test_http_429_sends_retry_after(fast, api):
    report_id = api.start_id()
    fast.inject("http_429", endpoint="status", retry_after=3)
    limited = api.status(report_id)
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "3"
    assert limited.json()["error"]
    assert api.status(report_id).status_code == 200
    fast.inject("http_429")
    assert api.data(report_id).headers["Retry-After"] == "1"  # default, on any endpoint


def test_endpoint_filter(fast, api):
    report_id = api.start_id()
    fast.inject("http_500", endpoint="download")
    assert api.status(report_id).status_code == 200
    assert api.start().status_code == 200
    assert api.data(report_id).status_code == 500
    assert api.data(report_id).status_code == 200


def test_report_type_filter_applies_to_starts_and_to_a_reports_calls(fast, api):
    virtual = api.start_id()
    fast.inject("http_500", count=3, report_type="retail")
    assert api.start().status_code == 200
    assert api.status(virtual).status_code == 200
    assert api.start({"type": "retail"}).status_code == 500
    fast.clear_faults()
    retail_id = api.start_id({"type": "retail"})
    fast.inject("http_500", report_type="retail")
    assert api.status(virtual).status_code == 200
    assert api.status(retail_id).status_code == 500


def test_faults_apply_only_after_authentication(fast, api):
    fast.inject("http_500")
    assert Api(fast.url, "wrong").start().status_code == 403
    assert api.start().status_code == 500


def test_slow_delays_the_answer(fast, api):
    report_id = api.start_id()
    fast.inject("slow", endpoint="status", delay=0.5)
    began = time.monotonic()
    assert api.status(report_id).status_code == 200
    assert time.monotonic() - began >= 0.5
    began = time.monotonic()
    api.status(report_id)
    assert time.monotonic() - began < 0.5


def test_slow_combines_with_an_error(fast, api):
    fast.inject("slow", delay=0.2)
    fast.inject("http_500")
    began = time.monotonic()
    assert api.start().status_code == 500
    assert time.monotonic() - began >= 0.2


def test_drop_download_sends_full_length_then_half_the_body(make_server):
    server = make_server(content_length=False)  # a drop announces a length even in chunked mode
    api = Api(server.url)
    report_id = api.start_id(WINDOW)
    full = api.data(report_id).content
    server.inject("drop_download")
    parts = urllib.parse.urlsplit(server.url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    conn.request("GET", f"{REPORTS_PATH}/{report_id}/data", headers={"Authorization": f"dc-token {SANDBOX_TOKEN}"})
    response = conn.getresponse()
    assert response.status == 200 and int(response.getheader("Content-Length")) == len(full)
    with pytest.raises(http.client.IncompleteRead) as caught:
        response.read()
    assert 0 < len(caught.value.partial) < len(full)
    assert abs(len(caught.value.partial) - len(full) // 2) <= 1
    assert full.startswith(caught.value.partial)
    conn.close()
    # requests/urllib3 see the same short read as an error, and the next download is whole again.
    server.inject("drop_download")
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        api.data(report_id).content  # noqa: B018
    assert Api(server.url).data(report_id).content == full


def test_fail_then_retry_goes_failed_then_queued_again_then_succeeds(make_server):
    server = make_server(queue_seconds=0.2, run_seconds=0.2)
    api = Api(server.url)
    server.inject("fail_then_retry", failed_seconds=0.4)
    report_id = api.start_id()
    assert server.reports[report_id].faults == ["fail_then_retry"]
    seen = api.statuses_until(report_id, {"SUCCEEDED"})
    assert seen[-1] == "SUCCEEDED" and "FAILED" in seen
    assert "QUEUED" in seen[seen.index("FAILED"):] or "RUNNING" in seen[seen.index("FAILED"):]
    assert api.data(report_id).status_code == 200


def test_fail_then_retry_timeline_exactly(fast, api):
    fast.inject("fail_then_retry", failed_seconds=0.5)
    report = fast.reports[api.start_id()]
    report.queue_seconds, report.run_seconds = 1.0, 1.0
    t0 = report.created
    timeline = [report.status_at(t0 + t) for t in (0.5, 1.5, 2.2, 2.6, 3.6, 4.6)]
    assert timeline == ["QUEUED", "RUNNING", "FAILED", "QUEUED", "RUNNING", "SUCCEEDED"]


@pytest.mark.parametrize(("kind", "final"), [("fail", "FAILED"), ("cancel", "CANCELLED")])
def test_fail_and_cancel_are_for_good(fast, api, kind, final):
    fast.inject(kind)
    report_id = api.start_id()
    other = api.start_id()  # count=1: the next report is healthy
    time.sleep(0.3)
    assert api.status(report_id).json() == {"status": final}
    assert api.data(report_id).json() == {"error": "QueryExecution did not succeed"}
    assert api.status(other).json() == {"status": "SUCCEEDED"}


def test_report_faults_follow_the_report_type(fast, api):
    fast.inject("cancel", report_type="retail")
    virtual, retail = api.start_id(), api.start_id({"type": "retail"})
    assert api.status(virtual).json()["status"] == "SUCCEEDED"
    assert api.status(retail).json()["status"] == "CANCELLED"


def test_expire_turns_everything_into_404(fast, api):
    fast.inject("expire", expire_seconds=0.3)
    report_id = api.start_id()
    assert api.status(report_id).status_code == 200
    time.sleep(0.4)
    for response in (api.status(report_id), api.data(report_id)):
        assert (response.status_code, response.json()) == (404, {"error": "QueryExecution Not Found"})


def test_clear_faults(fast, api):
    fast.inject("http_500", count=5)
    fast.inject("cancel")
    fast.clear_faults()
    report_id = api.start_id()
    assert api.status(report_id).json() == {"status": "SUCCEEDED"}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "meteor"}, "Unknown fault kind"),
        ({"kind": "http_500", "count": 0}, "count must be >= 1"),
        ({"kind": "http_500", "endpoint": "upload"}, "Unknown endpoint"),
        ({"kind": "http_429", "delay": 1}, "has no parameter delay"),
        ({"kind": "slow", "delay": "soon"}, "must be a number"),
        ({"kind": "drop_download", "endpoint": "status"}, "download endpoint"),
        ({"kind": "fail", "endpoint": "status"}, "endpoint must be 'start'"),
        ({"kind": "http_500", "report_type": "telehealth"}, "Unknown DexCare report type"),
    ],
)
def test_bad_fault_specs_are_refused(fast, kwargs, message):
    with pytest.raises(ValueError, match=message):
        fast.inject(**kwargs)
    response = Api(fast.url).request("POST", FAULTS_PATH, json=kwargs)
    assert response.status_code == 400 and message in response.json()["error"]
    assert fast.faults.pending() == []


def test_fault_http_endpoint_injects_lists_and_clears(fast, api):
    added = api.request("POST", FAULTS_PATH, json={"kind": "http_429", "count": 2, "endpoint": "start",
                                                   "retry_after": 2})
    assert added.status_code == 200
    assert added.json()["fault"] == {"kind": "http_429", "count": 2, "report_type": None, "endpoint": "start",
                                     "retry_after": 2.0}
    assert [f["kind"] for f in api.request("GET", FAULTS_PATH).json()["faults"]] == ["http_429"]
    assert api.start().status_code == 429
    assert api.request("DELETE", FAULTS_PATH).json() == {"cleared": 1}
    assert api.start().status_code == 200
    assert api.request("POST", FAULTS_PATH, data=b"nope").status_code == 400
    # Fault endpoint traffic never consumes faults meant for the API.
    fast.inject("http_500")
    assert api.request("GET", FAULTS_PATH).status_code == 200
    assert api.start().status_code == 500


def test_faults_given_to_the_constructor(make_server):
    server = make_server(faults=["http_500:count=2,endpoint=start", {"kind": "cancel"}])
    api = Api(server.url)
    assert [api.start().status_code for _ in range(3)] == [500, 500, 200]
    report_id = next(iter(server.reports))
    assert api.status(report_id).json()["status"] == "CANCELLED"


def test_parse_fault_spec():
    assert parse_fault_spec("http_429:count=2,retry_after=1") == {"kind": "http_429", "count": "2",
                                                                  "retry_after": "1"}
    assert parse_fault_spec("fail") == {"kind": "fail"}
    fault = Fault.build(**parse_fault_spec("fail_then_retry:report_type=retail,failed_seconds=0.2"))
    assert fault.kind is FaultKind.FAIL_THEN_RETRY and fault.params == {"failed_seconds": 0.2}
    with pytest.raises(ValueError, match="key=value"):
        parse_fault_spec("http_500:count")
