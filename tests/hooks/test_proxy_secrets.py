"""A proxy's user and password never leave the transport layer, and a proxy's 407 is the non-retried 407 error.

aiohttp quotes the proxy URL it was given, user and password included, in its ``ClientHttpProxyError``; that text
went into the trigger's log, the TriggerEvent (stored in the metadata database) and the resumed sensor's error.
And a proxy that answers 407 to the CONNECT of an https request was taken for an unreachable DexCare and
retried. Everything here goes through a real proxy (proxy.py with basic auth) on loopback, to a real TLS endpoint
(``tls_dexcare``) or to the sandbox; every text a user could see is searched for the secrets.
"""

from __future__ import annotations

import json
import socket
import time
import traceback
import uuid

import pytest
from dexcare.compat import AirflowFailException
from dexcare.exceptions import DexCareConnectionError, DexCareError, DexCareResponseError
from dexcare.hooks.dexcare import DexCareHook
from dexcare.sensors.report import DexCareReportSensor
from dexcare.triggers.report_status import DexCareReportStatusTrigger

from tests.hooks import test_transport
from tests.support.airflow_compat import serialize
from tests.support.forward_proxy import ForwardProxy
from tests.support.helpers import SANDBOX_TOKEN, fast_hook, logged, run_trigger, set_connection
from tests.support.task_runtime import Runtime

# The TLS endpoint with its private CA, and a clean proxy environment, as the transport tests have them.
tls_dexcare = test_transport.tls_dexcare
clean_environment = test_transport.clean_environment

PASSWORD = "pr0xy-PASS-4e1b9"
#: A proxy credential that is only a user name (``http://TOKEN@proxy``): the name is the secret.
TOKEN = "pr0xy-TOKEN-93d2a"
SECRETS = (PASSWORD, TOKEN, "WRONG-pass-77c0")
#: Credentials the proxy refuses: a wrong password, and a username-only token.
REFUSED = {"wrong password": "relay:WRONG-pass-77c0", "token only": TOKEN}


@pytest.fixture(scope="module")
def auth_proxy(tmp_path_factory):
    """proxy.py on loopback that relays only for ``relay:PASSWORD`` (407 otherwise, also to CONNECT)."""
    with ForwardProxy(tmp_path_factory.mktemp("auth-proxy"), basic_auth=f"relay:{PASSWORD}") as proxy:
        yield proxy


def closed_port() -> int:
    """A loopback port nothing listens on: the proxy answers 502 to a CONNECT there."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def shown(exc: BaseException) -> str:
    """All an error shows once logged: its text, its repr and the whole traceback with its cause chain."""
    texts = ["".join(traceback.format_exception(exc)), repr(exc)]
    cause = exc.__cause__
    while cause is not None:
        texts.append(f"{type(cause).__name__}: {cause}")
        cause = cause.__cause__
    return "\n".join(texts)


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        for secret in SECRETS:
            assert secret not in text


async def errors_of_both_paths(conn_id: str, hook: DexCareHook) -> list[BaseException]:
    report_id = str(uuid.uuid4())
    errors: list[BaseException] = []
    with pytest.raises(DexCareError) as sync:
        hook.get_report_status(report_id)
    errors.append(sync.value)
    async with DexCareHook(conn_id).async_session() as session:
        with pytest.raises(DexCareError) as on_aiohttp:
            await session.get_report_status(report_id)
    errors.append(on_aiohttp.value)
    return errors


def trigger(report_id: str, **kwargs) -> DexCareReportStatusTrigger:
    fast = {"poll_interval": 0.05, "backoff_initial": 0.01, "backoff_max": 0.05, **kwargs}
    return DexCareReportStatusTrigger(report_id=report_id, deadline=time.time() + 20, **fast)


def stored(event: dict) -> str:
    """The TriggerEvent payload as the triggerer writes it to the metadata database."""
    return json.dumps(serialize(event))


# --- 407 -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("credentials", REFUSED.values(), ids=REFUSED.keys())
@pytest.mark.parametrize("https", [True, False], ids=["https via CONNECT", "plain http"])
async def test_a_proxy_407_is_the_non_retried_error_naming_the_proxy_on_both_paths(
    https, credentials, auth_proxy, tls_dexcare, sandbox, monkeypatch, caplog, capfd
):
    target, extra = (tls_dexcare.url, {"verify": str(tls_dexcare.ca_path)}) if https else (sandbox.url, {})
    scheme = "https" if https else "http"
    proxies = {scheme: auth_proxy.url_with(credentials)}
    set_connection(monkeypatch, "dexcare_default", target, SANDBOX_TOKEN, proxies=proxies, **extra)
    errors = await errors_of_both_paths("dexcare_default", fast_hook(attempts=3))
    for error in errors:
        assert type(error) is DexCareResponseError, shown(error)
        assert isinstance(error, AirflowFailException)  # no Airflow task retry either
        assert f"The proxy http://***@127.0.0.1:{auth_proxy.port} between Airflow and DexCare" in str(error)
        assert "407 Proxy Authentication Required" in str(error) and "proxy user and password" in str(error)
    event = await run_trigger(trigger(str(uuid.uuid4()), max_consecutive_errors=3))
    assert (event["status"], event["error"], event["polls"]) == ("error", "DexCareResponseError", 0)
    assert "407 Proxy Authentication Required" in event["message"]
    text = logged(caplog, capfd)
    assert "retrying in" not in text and "Status check 1 of at most 3" not in text  # tried once on each path
    assert tls_dexcare.served == [] and sandbox.request_log == []
    assert_no_secret(*map(shown, errors), stored(event), text)


def test_the_transport_shows_a_proxy_without_any_of_its_user_info():
    for proxy, shown_as in [
        (f"http://{TOKEN}@proxy.example:3128", "http://***@proxy.example:3128"),
        (f"http://relay:{PASSWORD}@[fd00::3]:3128", "http://***@[fd00::3]:3128"),
        (f"http://relay:{PASSWORD}@proxy.example", "http://***@proxy.example"),
    ]:
        t = test_transport.transport(proxies={"https": proxy})
        assert t.describe().endswith(f" through proxy {shown_as}")
        assert f"proxy='{shown_as}'" in repr(t)
        assert_no_secret(t.describe(), repr(t))


# --- any other proxy error: the text of the client's error, on every path it takes -------------------------------


async def test_a_proxy_error_never_carries_the_password_on_the_hook_the_trigger_and_the_sensor(
    auth_proxy, monkeypatch, caplog, capfd
):
    """The proxy accepts the credentials but cannot reach DexCare (502 to CONNECT): a retried connection error,
    whose aiohttp text quotes the proxy URL."""
    set_connection(
        monkeypatch,
        "dexcare_default",
        f"https://127.0.0.1:{closed_port()}",
        SANDBOX_TOKEN,
        proxies={"https": auth_proxy.url_with(f"relay:{PASSWORD}")},
    )
    errors = await errors_of_both_paths("dexcare_default", fast_hook(attempts=2))
    for error in errors:
        assert type(error) is DexCareConnectionError, shown(error)
        assert "502" in str(error) and "through proxy http://" in str(error)

    event = await run_trigger(trigger(str(uuid.uuid4()), max_consecutive_errors=2))
    assert (event["status"], event["error"]) == ("error", "DexCareConnectionError")
    assert "ClientHttpProxyError: 502" in event["message"]

    wait = DexCareReportSensor(
        task_id="wait", report_id=str(uuid.uuid4()), deferrable=True, poll_interval=0.05, max_consecutive_errors=2
    )
    with pytest.raises(DexCareError, match="2 transient errors in a row") as resumed:
        await Runtime().run_deferrable(wait)
    assert "ClientHttpProxyError: 502" in str(resumed.value)

    text = logged(caplog, capfd)
    assert "attempt 1 of 2 failed" in text and "Status check 1 of at most 2" in text  # the retries were logged
    assert_no_secret(*map(shown, [*errors, resumed.value]), stored(event), text)
