"""One transport for both HTTP paths: the worker's requests session and the trigger's aiohttp session.

The proxy tests run a real forward proxy (proxy.py) on loopback and read its own record of what it relayed;
the TLS tests run a real TLS server with a private CA. Nothing is mocked.
"""

from __future__ import annotations

import datetime as dt
import http.server
import ipaddress
import json
import ssl
import threading
import time
import uuid
from pathlib import Path

import pytest
from airflow.sdk import Connection
from dexcare.exceptions import DexCareConnectionError, DexCareResponseError, DexCareValidationError
from dexcare.hooks.dexcare import DexCareHook
from dexcare.hooks.transport import DexCareTransport
from dexcare.report import REPORTS_PATH, ReportStatus
from dexcare.triggers.report_status import DexCareReportStatusTrigger

from tests.support.helpers import SANDBOX_TOKEN, run_trigger, set_connection


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    """Each test sets exactly the proxy and CA variables it is about."""
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


def transport(host: str = "https://ecvapi.care.example.com", **extra) -> DexCareTransport:
    conn = Connection(conn_id="dexcare_t", conn_type="dexcare", host=host, password="k-12345", extra=json.dumps(extra))
    return DexCareTransport.from_connection(conn)


# --- what the transport reads (no network) -----------------------------------------------------------------


@pytest.mark.parametrize(
    "extra", [{}, {"timeout": None, "verify": None, "proxies": None}, {"timeout": "", "verify": ""}]
)
def test_defaults(extra):
    t = transport(**extra)
    assert (t.base_url, t.proxy, t.verify, t.cert, t.requests_timeout) == (
        "https://ecvapi.care.example.com",
        None,
        True,
        None,
        (10.0, 60.0),
    )


@pytest.mark.parametrize(
    ("host", "environment", "extra", "expected"),
    [
        ("https://dexcare.example", {"HTTPS_PROXY": "http://p:3128"}, {}, "http://p:3128"),
        ("https://dexcare.example", {"https_proxy": "p:3128"}, {}, "http://p:3128"),  # no scheme: http
        ("http://dexcare.example", {"HTTPS_PROXY": "http://p:3128"}, {}, None),  # another scheme's proxy
        ("https://dexcare.example", {"ALL_PROXY": "http://all:1"}, {}, "http://all:1"),
        ("https://dexcare.example", {"HTTPS_PROXY": "http://p:3128", "NO_PROXY": ".example"}, {}, None),
        ("https://dexcare.example", {"HTTPS_PROXY": "http://p:3128", "NO_PROXY": "other.org,dexcare.example"}, {},
         None),
        ("http://10.1.2.3:8080", {"HTTP_PROXY": "http://p:3128", "NO_PROXY": "10.0.0.0/8"}, {}, None),  # CIDR
        ("https://dexcare.example", {"HTTPS_PROXY": "http://env:1"}, {"proxies": {"https": "http://conn:2"}},
         "http://conn:2"),  # the connection wins over the environment
        ("https://dexcare.example", {}, {"proxy": "http://one:3"}, "http://one:3"),  # one URL, every scheme
        ("https://dexcare.example", {"HTTPS_PROXY": "http://env:1"}, {"trust_env": False}, None),
        ("https://dexcare.example", {"HTTPS_PROXY": "http://env:1"}, {"trust_env": "false"}, None),
        ("https://dexcare.example", {}, {"proxies": {"https://dexcare.example": "http://host:4"}}, "http://host:4"),
    ],
)
def test_the_proxy_is_decided_with_requests_rules(monkeypatch, host, environment, extra, expected):
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert transport(host, **extra).proxy == expected


def test_ca_bundle_from_the_connection_or_the_environment(monkeypatch, tmp_path):
    bundle = tmp_path / "hospital-ca.pem"
    bundle.write_text("-")
    assert transport(verify=False).verify is False
    assert transport(verify="false").verify is False
    assert transport(verify_ssl=False).verify is False
    assert transport(verify=str(bundle)).verify == str(bundle)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bundle))
    assert transport().verify == str(bundle)
    assert transport(trust_env=False).verify is True
    with pytest.raises(DexCareValidationError, match=r"CA bundle '.*missing.pem'.*does not exist"):
        transport(verify=str(tmp_path / "missing.pem"))


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        ({"timeout": "soon"}, "timeout must be a finite number of seconds"),
        ({"timeout": 0}, "timeout must be > 0"),
        ({"proxies": 5}, "'proxies' must be a proxy URL or a mapping"),
        ({"cert": [1, 2]}, "'cert' must be a path"),
        ({"verify": 3}, "'verify' must be true, false or the path"),
        ({"trust_env": "maybe"}, "'trust_env' must be true or false"),
        ({"X-Team": 7}, "'X-Team' is not a setting this hook knows"),
    ],
)
def test_bad_extra_is_named(extra, fragment):
    with pytest.raises(DexCareValidationError, match=fragment):
        transport(**extra)


def test_other_extra_keys_are_headers_as_in_httphook():
    t = transport(timeout="30", **{"X-Team": "data", "stream": True})
    assert t.headers == {"X-Team": "data"} and t.read_timeout == 30.0
    assert t.requests_session().headers["X-Team"] == "data"


def test_the_hook_argument_wins_over_the_connection_timeout(monkeypatch):
    set_connection(monkeypatch, "dexcare_t", "https://dexcare.example", timeout=30)
    assert DexCareHook("dexcare_t").transport.read_timeout == 30.0
    assert DexCareHook("dexcare_t", timeout=5).transport.read_timeout == 5.0


def test_get_conn_is_the_transport_session(monkeypatch):
    """HttpHook's public entry point gives the same session the hook's own calls use."""
    set_connection(monkeypatch, "dexcare_t", "https://dexcare.example", proxies={"https": "http://p:3128"})
    hook = DexCareHook("dexcare_t")
    session = hook.get_conn(headers={"X-Run": "1"})
    assert (session.proxies, session.trust_env, session.headers["X-Run"]) == ({"https": "http://p:3128"}, False, "1")
    assert hook.base_url == "https://dexcare.example" and hook.merged_extra["timeout"] == (10.0, 60.0)
    with pytest.raises(DexCareValidationError, match=r"put \['verify'\] in the connection's extra"):
        hook.get_conn(extra_options={"verify": False})


def test_key_and_proxy_password_stay_out_of_reprs_and_messages():
    t = transport(proxies={"https": "http://user:pa55word@proxy.example:3128"})
    texts = [repr(t), t.describe(), repr(t.requests_session().auth), str(t.aiohttp_request_kwargs()["proxy"])]
    assert "through proxy http://***@proxy.example:3128" in t.describe()
    assert all("k-12345" not in text for text in texts[:3])
    assert all("pa55word" not in text for text in texts[:3])
    assert transport(proxies={"https": "http://proxy.example:3128"}).describe().endswith("proxy.example:3128")


# --- through a real forward proxy ------------------------------------------------------------------------------


def relayed(proxy, sandbox) -> list[str]:
    """The proxy's record, in the sandbox's own terms (method and path)."""
    prefix = f"127.0.0.1:{sandbox.port}"
    return [line.replace(f" {prefix}", " ") for line in proxy.requests]


def seen_by(sandbox) -> list[str]:
    return [f"{method} {path}" for method, path, _status in sandbox.request_log]


async def use_both_paths(conn_id: str = "dexcare_default") -> str:
    """A start and a status check on the worker's session, two status checks on the trigger's."""
    hook = DexCareHook(conn_id)
    report_id = hook.start_report("virtual")
    assert hook.get_report_status(report_id) in set(ReportStatus)
    async with DexCareHook(conn_id).async_session() as session:
        for _ in range(2):
            assert await session.get_report_status(report_id) in set(ReportStatus)
    return report_id


async def test_both_paths_go_through_the_proxy_of_the_connection(sandbox, forward_proxy, monkeypatch):
    set_connection(monkeypatch, "dexcare_default", sandbox.url, SANDBOX_TOKEN, proxies={"http": forward_proxy.url})
    report_id = await use_both_paths()
    status = f"GET {REPORTS_PATH}/{report_id}"
    assert relayed(forward_proxy, sandbox) == [f"POST {REPORTS_PATH}", status, status, status]
    assert relayed(forward_proxy, sandbox) == seen_by(sandbox)  # nothing reached DexCare around the proxy


async def test_both_paths_honour_the_environment_proxy(sandbox, forward_proxy, monkeypatch):
    set_connection(monkeypatch, "dexcare_default", sandbox.url, SANDBOX_TOKEN)
    monkeypatch.setenv("HTTP_PROXY", forward_proxy.url)
    await use_both_paths()
    assert len(forward_proxy.requests) == 4
    assert relayed(forward_proxy, sandbox) == seen_by(sandbox)


async def test_both_paths_honour_no_proxy(sandbox, forward_proxy, monkeypatch):
    set_connection(monkeypatch, "dexcare_default", sandbox.url, SANDBOX_TOKEN)
    monkeypatch.setenv("HTTP_PROXY", forward_proxy.url)
    monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1")
    await use_both_paths()
    assert len(sandbox.request_log) == 4
    assert forward_proxy.requests == []


async def test_a_proxy_that_is_down_is_a_connection_error_on_both_paths(sandbox, forward_proxy, monkeypatch):
    set_connection(monkeypatch, "dexcare_default", sandbox.url, SANDBOX_TOKEN)
    monkeypatch.setenv("HTTP_PROXY", forward_proxy.url)
    forward_proxy.stop()
    hook = DexCareHook("dexcare_default", max_attempts=1)
    report_id = str(uuid.uuid4())
    with pytest.raises(DexCareConnectionError, match=r"through proxy http://127\.0\.0\.1"):
        hook.get_report_status(report_id)
    async with DexCareHook().async_session() as session:
        with pytest.raises(DexCareConnectionError, match=r"through proxy http://127\.0\.0\.1"):
            await session.get_report_status(report_id)
    assert sandbox.request_log == []


async def test_the_trigger_waits_through_the_proxy(sandbox, forward_proxy, monkeypatch):
    set_connection(monkeypatch, "dexcare_default", sandbox.url, SANDBOX_TOKEN, proxies={"http": forward_proxy.url})
    report_id = DexCareHook().start_report("virtual")
    trigger = DexCareReportStatusTrigger(report_id, time.time() + 30, poll_interval=0.05)
    event = await run_trigger(trigger)
    assert event["status"] == "success"
    checks = [line for line in relayed(forward_proxy, sandbox) if line.startswith("GET ")]
    assert len(checks) == event["polls"] >= 2
    assert relayed(forward_proxy, sandbox) == seen_by(sandbox)


async def test_a_deferred_sensor_waits_through_the_proxy_on_the_worker_and_in_the_trigger(
    sandbox, forward_proxy, monkeypatch, caplog, capfd
):
    """The bug this transport fixes: the report started through the proxy, then the deferred wait could not
    reach DexCare. Here every request (the start, the worker's check, the trigger's checks) goes through the
    proxy, and a poking sensor reads the connection once for all its checks."""
    from dexcare.operators.start_report import DexCareStartReportOperator
    from dexcare.sensors.report import DexCareReportSensor

    from tests.support.task_runtime import Runtime

    set_connection(monkeypatch, "dexcare_default", sandbox.url, SANDBOX_TOKEN, proxies={"http": forward_proxy.url})
    rt = Runtime()
    start = DexCareStartReportOperator(task_id="start", report_type="virtual")
    report_id = rt.run(start)
    wait = DexCareReportSensor(task_id="wait", report_id=report_id, deferrable=True, poll_interval=0.05)
    assert await rt.run_deferrable(wait) == report_id
    assert len(rt.deferrals) == 1
    assert relayed(forward_proxy, sandbox) == seen_by(sandbox)
    assert len(seen_by(sandbox)) >= 3  # the start, the worker's check, the trigger's checks

    second = rt.run(DexCareStartReportOperator(task_id="start2", report_type="retail"))
    caplog.clear()
    capfd.readouterr()
    poking = DexCareReportSensor(task_id="poke", report_id=second, deferrable=False, poll_interval=0.05)
    assert rt.run(poking) == second
    assert relayed(forward_proxy, sandbox) == seen_by(sandbox)
    assert len([line for line in seen_by(sandbox) if line.endswith(second)]) >= 2  # QUEUED ... SUCCEEDED
    captured = capfd.readouterr()
    # Once in the log, whichever way Airflow routes it (3.0 sends task logs both to logging and to stdout).
    assert max(caplog.text.count("through proxy"), captured.out.count("through proxy")) == 1


async def test_proxy_credentials_work_on_both_paths_and_never_show(sandbox, tmp_path, monkeypatch, caplog, capfd):
    from tests.support.forward_proxy import ForwardProxy

    workdir = tmp_path / "auth-proxy"
    workdir.mkdir()
    with ForwardProxy(workdir, basic_auth="relay:s3cret-proxy-pass") as proxy:
        good = proxy.url_with("relay:s3cret-proxy-pass")
        set_connection(monkeypatch, "dexcare_default", sandbox.url, SANDBOX_TOKEN, proxies={"http": good})
        await use_both_paths()
        assert len(proxy.requests) == 4

        set_connection(
            monkeypatch, "dexcare_wrong", sandbox.url, SANDBOX_TOKEN, proxies={"http": proxy.url_with("relay:wrong")}
        )
        with pytest.raises(DexCareResponseError, match="407 Proxy Authentication Required"):
            DexCareHook("dexcare_wrong").get_report_status(str(uuid.uuid4()))
        async with DexCareHook("dexcare_wrong").async_session() as session:
            with pytest.raises(DexCareResponseError, match="407"):
                await session.get_report_status(str(uuid.uuid4()))
    captured = capfd.readouterr()
    assert "s3cret-proxy-pass" not in caplog.text + captured.out + captured.err
    assert "through proxy http://***@127.0.0.1" in caplog.text + captured.out


# --- TLS: the same CA bundle on both paths, also through the proxy ----------------------------------------------


def _certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A private CA and a server certificate for 127.0.0.1 signed by it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "DexCare test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_path, cert_path, key_path = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return ca_path, cert_path, key_path


@pytest.fixture
def tls_dexcare(tmp_path):
    """A TLS endpoint that answers status checks like DexCare (SUCCEEDED for any id, 403 for a wrong key)."""
    ca_path, cert_path, key_path = _certificates(tmp_path)
    served: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            served.append(self.path)
            ok = self.headers.get("Authorization") == f"dc-token {SANDBOX_TOKEN}"
            body = json.dumps({"status": "SUCCEEDED"} if ok else {"error": "Forbidden"}).encode()
            self.send_response(200 if ok else 403)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    class Server(http.server.ThreadingHTTPServer):
        daemon_threads = True

        def handle_error(self, request, client_address) -> None:
            pass  # refused handshakes are what some tests are about

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    server = Server(("127.0.0.1", 0), Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
    server.ca_path = ca_path
    server.url = f"https://127.0.0.1:{server.server_port}"
    server.served = served
    yield server
    server.shutdown()
    server.server_close()


async def check_both_paths(conn_id: str) -> list[ReportStatus]:
    report_id = str(uuid.uuid4())
    statuses = [DexCareHook(conn_id, max_attempts=1).get_report_status(report_id)]
    async with DexCareHook(conn_id).async_session() as session:
        statuses.append(await session.get_report_status(report_id))
    return statuses


async def test_a_ca_bundle_path_serves_both_paths_through_the_proxy(tls_dexcare, forward_proxy, monkeypatch):
    set_connection(
        monkeypatch,
        "dexcare_default",
        tls_dexcare.url,
        SANDBOX_TOKEN,
        verify=str(tls_dexcare.ca_path),
        proxies={"https": forward_proxy.url},
    )
    assert await check_both_paths("dexcare_default") == [ReportStatus.SUCCEEDED] * 2
    # https goes through a CONNECT tunnel: the proxy sees the tunnel, DexCare sees the requests.
    assert forward_proxy.requests == [f"CONNECT 127.0.0.1:{tls_dexcare.server_port}"] * 2
    assert len(tls_dexcare.served) == 2


async def test_the_ca_bundle_variable_serves_both_paths(tls_dexcare, monkeypatch):
    set_connection(monkeypatch, "dexcare_default", tls_dexcare.url, SANDBOX_TOKEN)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tls_dexcare.ca_path))
    assert await check_both_paths("dexcare_default") == [ReportStatus.SUCCEEDED] * 2


async def test_an_unknown_ca_is_refused_on_both_paths(tls_dexcare, monkeypatch):
    set_connection(monkeypatch, "dexcare_default", tls_dexcare.url, SANDBOX_TOKEN)
    with pytest.raises(DexCareConnectionError, match=r"CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
        DexCareHook(max_attempts=1).get_report_status(str(uuid.uuid4()))
    async with DexCareHook().async_session() as session:
        with pytest.raises(DexCareConnectionError, match=r"CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
            await session.get_report_status(str(uuid.uuid4()))
    assert tls_dexcare.served == []
