"""DexCare's answers to values or typed errors: the one mapping both HTTP clients use."""

from __future__ import annotations

import json

import pytest
from dexcare.exceptions import (
    DexCareAuthError,
    DexCareBadRequestError,
    DexCareNotFoundError,
    DexCareRateLimitError,
    DexCareResponseError,
    DexCareServerError,
    DexCareUnknownStatusError,
)
from dexcare.hooks.responses import error_for_response, parse_json_body, parse_report_id, parse_status, server_message
from dexcare.report import ReportStatus

RID = "3f2b8c1e-4d5a-4b6c-9e7f-0a1b2c3d4e5f"


def error(status: int, body: object = b"", retry_after: str | None = None):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return error_for_response(status, raw, retry_after, what="the status request", conn_id="dexcare_x", report_id=RID)


@pytest.mark.parametrize(
    ("status", "kind", "retryable", "fragment"),
    [
        (400, DexCareBadRequestError, False, "DexCare rejected the status request (400): QueryExecution"),
        (401, DexCareAuthError, False, "Check the password ('Reporting service key') of connection 'dexcare_x'"),
        (403, DexCareAuthError, False, "refused the reporting service key"),
        (404, DexCareNotFoundError, False, f"DexCare does not know report {RID} (404"),
        (407, DexCareResponseError, False, "A proxy between Airflow and DexCare refused"),
        (429, DexCareRateLimitError, True, "rate limiting"),
        (500, DexCareServerError, True, "DexCare failed on the status request (500"),
        (503, DexCareServerError, True, "(503"),
        (302, DexCareResponseError, False, "unexpected HTTP 302"),
    ],
)
def test_every_status_maps_to_one_error(status, kind, retryable, fragment):
    exc = error(status, {"error": "QueryExecution did not succeed"})
    assert type(exc) is kind and exc.retryable is retryable
    assert fragment in str(exc)


def test_api_errors_carry_status_server_message_and_retry_after():
    exc = error(429, {"message": "slow down"}, retry_after="7")
    assert (exc.status_code, exc.server_message, exc.retry_after) == (429, "slow down", 7.0)
    assert error(503, b"<html>busy</html>", retry_after="soon").retry_after is None
    assert error(500, b"").server_message is None


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"error": "a"}', "a"),
        (b'{"message": "b"}', "b"),
        (b'{"msg": "c"}', "c"),
        (b'{"error": 5, "msg": "d"}', "d"),
        (b'["error"]', None),
        (b"not json", None),
        (b"\xff\xfe", None),
    ],
)
def test_server_message(body, expected):
    assert server_message(body) == expected


def test_server_message_is_capped():
    assert len(server_message(json.dumps({"error": "x" * 5000}).encode())) == 300


def test_json_bodies():
    assert parse_json_body(b'{"id": 1}', {}, "x") == {"id": 1}
    with pytest.raises(DexCareResponseError, match=r"not JSON \(Content-Type text/html, 6 bytes\)"):
        parse_json_body(b"<html>", {"Content-Type": "text/html"}, "the start request")
    with pytest.raises(DexCareResponseError, match="not an object"):
        parse_json_body(b"[1]", {}, "the start request")


def test_report_ids_from_dexcare_are_checked():
    assert parse_report_id({"id": RID.upper()}) == RID
    with pytest.raises(DexCareResponseError, match=r"sent no 'id' \(keys: \['reportId'\]\)"):
        parse_report_id({"reportId": RID})
    with pytest.raises(DexCareResponseError, match="not a GUID: 42"):
        parse_report_id({"id": 42})


def test_statuses_are_never_guessed():
    assert parse_status({"status": "RUNNING"}, RID) is ReportStatus.RUNNING
    for raw in ("PAUSED", "running", None):
        with pytest.raises(DexCareUnknownStatusError, match="refusing to guess"):
            parse_status({"status": raw}, RID)
