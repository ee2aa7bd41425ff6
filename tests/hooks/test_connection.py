"""The connection as users give it, test_connection(), and answers that are not what DexCare documents."""

from __future__ import annotations

import functools
import http.server
import threading
import urllib.parse

import pytest
from dexcare.exceptions import DexCareResponseError, DexCareUnknownStatusError, DexCareValidationError
from dexcare.hooks.dexcare import DexCareHook
from dexcare.hooks.transport import base_url_from_connection
from dexcare.report import REPORTS_PATH

from tests.support.helpers import SANDBOX_TOKEN, set_connection

REPORT_ID = "3f2b8c1e-4d5a-4b6c-9e7f-0a1b2c3d4e5f"


def test_uri_form_connection_works(sandbox, monkeypatch):
    host = urllib.parse.quote(sandbox.url, safe="")
    monkeypatch.setenv("AIRFLOW_CONN_DEXCARE_URI", f"dexcare://:{SANDBOX_TOKEN}@{host}")
    hook = DexCareHook("dexcare_uri")
    assert hook.test_connection()[0]
    assert hook.base_url == sandbox.url


@pytest.mark.parametrize(
    ("host", "port", "expected"),
    [
        ("ecvapi.care.example.com", None, "https://ecvapi.care.example.com"),
        ("https://ecvapi.care.example.com/", None, "https://ecvapi.care.example.com"),
        ("http://127.0.0.1", 8080, "http://127.0.0.1:8080"),
    ],
)
def test_base_url_defaults_to_https(host, port, expected):
    from airflow.sdk import Connection

    assert base_url_from_connection(Connection(conn_id="x", conn_type="dexcare", host=host, port=port)) == expected


def test_missing_host_or_key_is_named(monkeypatch):
    set_connection(monkeypatch, "dexcare_nokey", "https://x.example.com", None)
    with pytest.raises(DexCareValidationError, match="no reporting service key"):
        DexCareHook("dexcare_nokey").get_report_status(REPORT_ID)
    set_connection(monkeypatch, "dexcare_nohost", "", "k-12345")
    with pytest.raises(DexCareValidationError, match="has no host"):
        DexCareHook("dexcare_nohost").get_report_status(REPORT_ID)


def test_test_connection_tells_good_key_bad_key_and_unreachable_apart(sandbox, monkeypatch, dexcare_conn_id):
    ok, message = DexCareHook().test_connection()
    assert ok, message

    set_connection(monkeypatch, "dexcare_bad", sandbox.url, "bad-key-99")
    ok, message = DexCareHook("dexcare_bad").test_connection()
    assert not ok and "Reporting service key" in message and "bad-key-99" not in message

    set_connection(monkeypatch, "dexcare_gone", "http://127.0.0.1:1", "k-12345")
    ok, message = DexCareHook("dexcare_gone").test_connection()
    assert not ok and "unreachable" in message

    assert all(method == "GET" for method, _, _ in sandbox.request_log)
    assert not any(method == "POST" for method, _, _ in sandbox.request_log)


@pytest.fixture
def impostor(tmp_path, monkeypatch):
    """A real HTTP server that is not DexCare (say a proxy page), serving files laid out at API paths."""
    root = tmp_path / "www"
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    set_connection(monkeypatch, "dexcare_impostor", f"http://127.0.0.1:{server.server_port}")

    def serve(body: str) -> None:
        path = root / REPORTS_PATH.lstrip("/") / REPORT_ID
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body)

    yield serve
    server.shutdown()
    server.server_close()


def test_a_non_json_body_is_a_clear_error(impostor):
    impostor("<html><body>Please sign in</body></html>")
    with pytest.raises(DexCareResponseError, match=r"not JSON.*DexCare API endpoint"):
        DexCareHook("dexcare_impostor").get_report_status(REPORT_ID)


def test_an_unknown_status_is_shown_not_guessed(impostor):
    impostor('{"status": "PAUSED"}')
    with pytest.raises(DexCareUnknownStatusError, match="'PAUSED'"):
        DexCareHook("dexcare_impostor").get_report_status(REPORT_ID)
