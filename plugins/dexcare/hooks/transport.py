"""How this provider reaches DexCare: one configuration, read once from the connection, for both HTTP clients.

The worker's calls (requests) and the trigger's status checks (aiohttp) must reach DexCare the same way.
When they did not, a hospital network that only lets traffic out through a proxy saw the report start on
the worker and the deferred wait fail to reach DexCare. aiohttp also reads the environment differently
from requests: it ignores an ``https://`` proxy from the environment, does not understand CIDR ranges in
``NO_PROXY``, and trusts the system's CA store where requests trusts certifi's. So neither client is left
to read the environment on its own: ``DexCareTransport`` decides the proxy and the CA bundle with requests'
rules (the ones ``HttpHook`` users know) and hands both clients the same answer.

Connection extra, with the names ``HttpHook`` reads:

- ``timeout``: read timeout in seconds (default 60; the connect timeout is 10).
- ``verify`` (or ``verify_ssl``): false, or the path of a CA bundle file or directory. Default true:
  ``REQUESTS_CA_BUNDLE`` / ``CURL_CA_BUNDLE`` when set, else certifi's bundle.
- ``cert``: a client certificate, a path or ``[cert, key]``.
- ``proxies`` (or ``proxy``): requests' mapping, e.g. ``{"https": "http://proxy.example:3128"}``, or one
  proxy URL for every scheme. It wins over the environment.
- ``trust_env``: false ignores ``HTTPS_PROXY`` / ``HTTP_PROXY`` / ``ALL_PROXY`` / ``NO_PROXY`` and the CA
  bundle variables. Default true.
- Any other key is sent as an HTTP header, as ``HttpHook`` does; its value must be a string.
"""

from __future__ import annotations

import os
import ssl
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import requests
import requests.utils
from airflow.sdk.log import mask_secret

from dexcare.exceptions import DexCareValidationError
from dexcare.redaction import redact_url
from dexcare.validation import given_seconds

if TYPE_CHECKING:
    import aiohttp
    from airflow.sdk import Connection

DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_READ_TIMEOUT = 60.0

#: Extra keys ``HttpHook`` treats as settings, not headers. Those that make no sense here (DexCare never
#: redirects, and streaming is decided per call) are accepted and ignored, so an HTTP connection's extra
#: can be reused as it is.
_SETTINGS = frozenset(
    {
        "timeout",
        "verify",
        "verify_ssl",
        "cert",
        "proxies",
        "proxy",
        "trust_env",
        "stream",
        "allow_redirects",
        "max_redirects",
        "check_response",
        "srv_lookup",
    }
)


def base_url_from_connection(conn: Connection) -> str:
    """The connection host is a base URL; a bare host name means https, because DexCare only serves TLS."""
    host = (conn.host or "").strip().rstrip("/")
    if not host:
        raise DexCareValidationError(
            f"Connection {conn.conn_id!r} has no host: set it to the DexCare REST endpoint, "
            "e.g. https://ecvapi.care.<customer-domain>.com"
        )
    url = host if "://" in host else f"https://{host}"
    if conn.port:
        url = f"{url}:{conn.port}"
    return url


def service_key_from_connection(conn: Connection) -> str:
    key = (conn.password or "").strip()
    if not key:
        raise DexCareValidationError(
            f"Connection {conn.conn_id!r} has no reporting service key: put the key in the connection's "
            "password field (labelled 'Reporting service key')."
        )
    # Airflow masks connection passwords it hands out, but only on some code paths; make sure.
    mask_secret(key)
    return key


class DcTokenAuth(requests.auth.AuthBase):
    """Adds the header at send time; its repr is redacted so the key cannot reach a log through a session."""

    def __init__(self, key: str) -> None:
        self._key = key

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = self.header
        return request

    @property
    def header(self) -> str:
        return f"dc-token {self._key}"

    def __repr__(self) -> str:
        return "<dc-token ***>"


@dataclass(frozen=True)
class DexCareTransport:
    """Everything needed to send a request to DexCare, resolved once: no client reads the environment later.

    ``verify`` is False or the CA bundle to trust; ``proxy`` is the proxy URL for ``base_url`` or None.
    """

    conn_id: str
    base_url: str
    auth: DcTokenAuth = field(repr=False)
    read_timeout: float = DEFAULT_READ_TIMEOUT
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    verify: str | bool = True
    cert: str | tuple[str, str] | None = None
    proxy: str | None = field(default=None, repr=False)
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)

    @classmethod
    def from_connection(cls, conn: Connection, *, read_timeout: float | None = None) -> DexCareTransport:
        """Read the connection and the environment. ``read_timeout`` (the hook's argument) wins over the
        connection's ``timeout``."""
        # A form field left empty arrives as null or "": both mean "not set".
        extra = {k: v for k, v in (conn.extra_dejson or {}).items() if v is not None and v != ""}
        base_url = base_url_from_connection(conn)
        trust_env = _boolean(conn.conn_id, "trust_env", extra.get("trust_env", True))
        if read_timeout is None:
            read_timeout = extra.get("timeout", DEFAULT_READ_TIMEOUT)
        return cls(
            conn_id=conn.conn_id,
            base_url=base_url,
            auth=DcTokenAuth(service_key_from_connection(conn)),
            read_timeout=given_seconds(f"Connection {conn.conn_id!r} timeout", read_timeout, positive=True),
            verify=_ca_bundle(conn.conn_id, extra.get("verify", extra.get("verify_ssl", True)), trust_env),
            cert=_client_cert(conn.conn_id, extra.get("cert")),
            proxy=_proxy_for(conn.conn_id, base_url, extra.get("proxies", extra.get("proxy")), trust_env),
            headers=_headers(conn.conn_id, extra),
        )

    def __repr__(self) -> str:
        through = f", proxy={redact_url(self.proxy)!r}" if self.proxy else ""
        return f"DexCareTransport(conn_id={self.conn_id!r}, base_url={self.base_url!r}{through})"

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    def describe(self) -> str:
        """Where requests go, for messages: the proxy too, without its password."""
        through = f" through proxy {redact_url(self.proxy)}" if self.proxy else ""
        return f"DexCare at {self.base_url}{through}"

    # --- requests ------------------------------------------------------------------------------------

    def requests_session(self) -> requests.Session:
        """A session that needs nothing else: auth, headers, TLS and proxy are all set on it."""
        session = requests.Session()
        # Everything the environment may say is already in this transport; reading it again per request
        # could only disagree with the trigger's session.
        session.trust_env = False
        session.auth = self.auth
        session.headers.update(self.headers)
        session.verify = self.verify
        session.cert = self.cert
        scheme = urllib.parse.urlsplit(self.base_url).scheme
        session.proxies = {scheme: self.proxy} if self.proxy else {}
        return session

    @property
    def requests_timeout(self) -> tuple[float, float]:
        return self.connect_timeout, self.read_timeout

    # --- aiohttp -------------------------------------------------------------------------------------

    def ssl_context(self) -> ssl.SSLContext | bool:
        """For aiohttp, the same trust as requests: False, or a context over the same CA bundle.

        Reads files, so the trigger calls it off the event loop.
        """
        if self.verify is False:
            return False
        bundle = self.verify if isinstance(self.verify, str) else requests.utils.DEFAULT_CA_BUNDLE_PATH
        if os.path.isdir(bundle):
            context = ssl.create_default_context(capath=bundle)
        else:
            context = ssl.create_default_context(cafile=bundle)
        if self.cert is not None:
            certfile, keyfile = (self.cert, None) if isinstance(self.cert, str) else self.cert
            context.load_cert_chain(certfile, keyfile)
        return context

    def aiohttp_session(self, ssl_context: ssl.SSLContext | bool) -> aiohttp.ClientSession:
        import aiohttp

        timeout = aiohttp.ClientTimeout(
            total=self.read_timeout + self.connect_timeout,
            connect=self.connect_timeout,
            sock_read=self.read_timeout,
        )
        return aiohttp.ClientSession(
            timeout=timeout,
            connector=aiohttp.TCPConnector(ssl=ssl_context),
            headers=dict(self.headers),
            # The proxy is passed with each request (``aiohttp_request_kwargs``); see the module docstring.
            trust_env=False,
        )

    def aiohttp_request_kwargs(self) -> dict[str, Any]:
        """Per request, so the key is never stored in the aiohttp session."""
        return {"proxy": self.proxy, "allow_redirects": False, "headers": {"Authorization": self.auth.header}}


def _spelled_boolean(value: Any) -> Any:
    """An extra that arrives as text (from a connection URI or a text field of the form) spells a boolean out."""
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return value


def _boolean(conn_id: str, name: str, value: Any) -> bool:
    value = _spelled_boolean(value)
    if not isinstance(value, bool):
        raise DexCareValidationError(f"Connection {conn_id!r}: extra {name!r} must be true or false, got {value!r}.")
    return value


def _ca_bundle(conn_id: str, value: Any, trust_env: bool) -> str | bool:
    """False, or the CA bundle to trust, resolved as requests resolves it."""
    value = _spelled_boolean(value)
    if value is False:
        return False
    if value is True:
        if trust_env:
            value = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
        if value is True:
            return True
    if not isinstance(value, str) or not value.strip():
        raise DexCareValidationError(
            f"Connection {conn_id!r}: extra 'verify' must be true, false or the path of a CA bundle, got {value!r}."
        )
    path = os.path.expanduser(value.strip())
    if not os.path.exists(path):
        raise DexCareValidationError(
            f"Connection {conn_id!r}: the CA bundle {path!r} (extra 'verify', or REQUESTS_CA_BUNDLE / "
            "CURL_CA_BUNDLE) does not exist on this machine; install it here, or fix the path."
        )
    return path


def _client_cert(conn_id: str, value: Any) -> str | tuple[str, str] | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, str) for v in value):
        return (value[0], value[1])
    raise DexCareValidationError(
        f"Connection {conn_id!r}: extra 'cert' must be a path or [certificate path, key path], got {value!r}."
    )


def _proxy_for(conn_id: str, url: str, proxies: Any, trust_env: bool) -> str | None:
    """requests' rule: the connection's proxies first, then (with trust_env) the environment's, unless
    NO_PROXY (or the ``no_proxy`` key of the connection's proxies) names the host."""
    if proxies is None:
        proxies = {}
    elif isinstance(proxies, str):
        proxies = {"all": proxies}
    if not isinstance(proxies, Mapping) or not all(isinstance(v, str) for v in proxies.values()):
        raise DexCareValidationError(
            f"Connection {conn_id!r}: extra 'proxies' must be a proxy URL or a mapping like "
            '{"https": "http://proxy.example:3128"}.'
        )
    resolved = requests.utils.resolve_proxies(requests.Request(url=url), dict(proxies), trust_env)
    proxy = requests.utils.select_proxy(url, resolved)
    if not proxy:
        return None
    if "://" not in proxy:
        proxy = f"http://{proxy}"  # as requests reads a proxy without a scheme
    # The secret of a proxy URL is its password, or its user name when that is all it has (a token).
    parts = urllib.parse.urlsplit(proxy)
    secret = parts.password if parts.password is not None else parts.username
    if secret:
        mask_secret(urllib.parse.unquote(secret))
    return proxy


def _headers(conn_id: str, extra: Mapping[str, Any]) -> dict[str, str]:
    headers = {k: v for k, v in extra.items() if k not in _SETTINGS}
    wrong = sorted(k for k, v in headers.items() if not isinstance(v, str))
    if wrong:
        raise DexCareValidationError(
            f"Connection {conn_id!r}: extra {', '.join(map(repr, wrong))} is not a setting this hook knows "
            f"({', '.join(sorted(_SETTINGS))}); other keys are sent as HTTP headers, so their values must be "
            "strings."
        )
    return headers
