"""DexCareHook: the one place that speaks DexCare's asynchronous reporting API.

Built on the HTTP provider's ``HttpHook`` so a DexCare connection gets the same session handling (proxies,
TLS options, keep-alive) as any Airflow HTTP connection; what it adds is what DexCare needs and ``HttpHook``
does not do: a ``dc-token`` key that never leaks, https by default, typed errors for every documented
answer, bounded Retry-After-aware retries, and a streamed, verified, atomic download.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import aiohttp
import requests
from airflow.providers.common.compat.connection import get_async_connection
from airflow.providers.http.hooks.http import HttpHook
from airflow.sdk.log import mask_secret

from dexcare.csv_records import CsvRecordCounter
from dexcare.exceptions import (
    DexCareAuthError,
    DexCareConnectionError,
    DexCareError,
    DexCareIncompleteDownloadError,
    DexCareNotFoundError,
    DexCareResponseError,
    DexCareTimeoutError,
    DexCareValidationError,
)
from dexcare.hooks.responses import error_for_response, parse_json_body, parse_report_id, parse_status
from dexcare.report import REPORTS_PATH, DownloadResult, ReportRequest, ReportStatus, validate_report_id
from dexcare.retry import RetryPolicy, call_with_retries
from dexcare.storage import ReportLocation

if TYPE_CHECKING:
    from airflow.sdk import Connection, ObjectStoragePath

DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_READ_TIMEOUT = 60.0
DOWNLOAD_CHUNK_BYTES = 1 << 20


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


class _DcTokenAuth(requests.auth.AuthBase):
    """Adds the header at send time; its repr is redacted so the key cannot reach a log through a session."""

    def __init__(self, key: str) -> None:
        self._key = key

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"dc-token {self._key}"
        return request

    def __repr__(self) -> str:
        return "<dc-token ***>"


class DexCareHook(HttpHook):
    """Start, poll and download DexCare All Visits Reports.

    :param dexcare_conn_id: connection of type ``dexcare``: host = REST endpoint, password = reporting
        service key.
    :param max_attempts: tries per call, first one included, for 5xx, 429, connection errors and timeouts.
    :param max_retry_seconds: bound on the time one call may spend retrying, whatever ``max_attempts`` says.
    :param timeout: read timeout per request in seconds (default: the connection's ``timeout`` extra, or 60).
    """

    conn_name_attr = "dexcare_conn_id"
    default_conn_name = "dexcare_default"
    conn_type = "dexcare"
    hook_name = "DexCare"

    def __init__(
        self,
        dexcare_conn_id: str = default_conn_name,
        *,
        max_attempts: int = 5,
        max_retry_seconds: float = 300.0,
        timeout: float | None = None,
    ) -> None:
        super().__init__(method="GET", http_conn_id=dexcare_conn_id)
        self.dexcare_conn_id = dexcare_conn_id
        self.retry_policy = RetryPolicy(max_attempts=max_attempts, max_total_seconds=max_retry_seconds)
        self.timeout = timeout
        self._session: requests.Session | None = None

    # --- HttpHook extension points -------------------------------------------------------------------

    def _set_base_url(self, connection: Connection) -> None:
        self.base_url = base_url_from_connection(connection)
        self._base_url_initialized = True

    def _extract_auth(self, connection: Connection) -> requests.auth.AuthBase:
        return _DcTokenAuth(service_key_from_connection(connection))

    # --- plumbing ------------------------------------------------------------------------------------

    def _get_session(self) -> requests.Session:
        if self._session is None:
            self._session = self.get_conn()
        return self._session

    def _timeouts(self) -> tuple[float, float]:
        read = self.timeout or self.merged_extra.get("timeout") or DEFAULT_READ_TIMEOUT
        return DEFAULT_CONNECT_TIMEOUT, float(read)

    def _send(
        self, method: str, path: str, *, what: str, report_id: str | None = None, **kwargs: Any
    ) -> requests.Response:
        """One request, no retries; any non-2xx answer becomes the matching DexCareError."""
        session = self._get_session()
        url = self.url_from_endpoint(path)
        try:
            response = session.request(method, url, timeout=self._timeouts(), allow_redirects=False, **kwargs)
        except requests.Timeout as exc:
            raise DexCareTimeoutError(f"DexCare did not answer {what} within the timeout ({exc}).") from None
        except requests.ConnectionError as exc:
            raise DexCareConnectionError(
                f"Cannot reach DexCare at {self.base_url} for {what}: {_reason(exc)}"
            ) from None
        self.log.debug("DexCare %s %s -> %s", method, path, response.status_code)
        if response.status_code >= 300:
            with response:
                # Error bodies are small JSON; cap the read so a misbehaving proxy cannot flood memory.
                body = (
                    response.raw.read(4096, decode_content=True) if kwargs.get("stream") else response.content
                )
            raise error_for_response(
                response.status_code,
                body[:4096],
                response.headers.get("Retry-After"),
                what=what,
                conn_id=self.dexcare_conn_id,
                report_id=report_id,
            )
        return response

    def _retrying(self, func: Any, describe: str) -> Any:
        return call_with_retries(func, self.retry_policy, describe=describe, log_retry=self.log.warning)

    # --- the API ---------------------------------------------------------------------------------------

    def start_report(
        self,
        report_type: str,
        start_date: Any = None,
        end_date: Any = None,
    ) -> str:
        """Ask DexCare to build a report; returns its id. Input is validated before anything is sent."""
        request = ReportRequest.build(report_type, start_date, end_date)
        what = f"the request for a {request.report_type.value} report"

        def once() -> str:
            with self._send("POST", REPORTS_PATH, what=what, json=request.to_payload()) as response:
                return parse_report_id(parse_json_body(response.content, response.headers, what))

        report_id = self._retrying(once, f"Starting a {request.report_type.value} report")
        window = (
            f"{request.start_date}..{request.end_date}" if request.start_date else "DexCare's default window"
        )
        self.log.info("Started DexCare %s report %s for %s", request.report_type.value, report_id, window)
        return report_id

    def get_report_status(self, report_id: str) -> ReportStatus:
        report_id = validate_report_id(report_id)
        what = f"the status request for report {report_id}"

        def once() -> ReportStatus:
            with self._send("GET", f"{REPORTS_PATH}/{report_id}", what=what, report_id=report_id) as response:
                return parse_status(parse_json_body(response.content, response.headers, what), report_id)

        return self._retrying(once, f"Checking report {report_id}")

    def download_report(
        self, report_id: str, destination: str | os.PathLike | ObjectStoragePath | ReportLocation
    ) -> DownloadResult:
        """Stream the report's CSV to ``destination`` and return its size and sha256.

        The body is written in 1 MiB chunks through :meth:`ReportLocation.write`, which makes the file appear
        only once it is complete and checked against Content-Length: a report of any size needs constant
        memory, and a download that breaks off never leaves a file (or object) that looks finished.
        ``destination`` is a path, a ``file://`` or object-store URI, or an ``ObjectStoragePath``.
        """
        report_id = validate_report_id(report_id)
        location = ReportLocation.parse(destination)
        what = f"the download of report {report_id}"

        def once() -> DownloadResult:
            with self._send(
                "GET", f"{REPORTS_PATH}/{report_id}/data", what=what, report_id=report_id, stream=True
            ) as response:
                return _stream_body(response, location, what)

        result = self._retrying(once, f"Downloading report {report_id}")
        self.log.info(
            "Downloaded DexCare report %s: %d bytes, sha256 %s", report_id, result.bytes, result.sha256
        )
        return result

    def test_connection(self) -> tuple[bool, str]:
        """Read-only probe: the status of a random report id (never starts a report).

        DexCare checks the key before it looks the report up, so 404 proves the key works, 403 proves it does
        not, and a connection error means the endpoint is wrong or unreachable.
        """
        probe = str(uuid.uuid4())
        try:
            with self._send("GET", f"{REPORTS_PATH}/{probe}", what="the connection test", report_id=probe):
                pass
        except DexCareNotFoundError:
            pass
        except DexCareAuthError as exc:
            return False, str(exc)
        except DexCareConnectionError as exc:
            return False, f"DexCare endpoint unreachable: {exc}"
        except DexCareError as exc:
            return False, f"DexCare answered unexpectedly: {exc}"
        return True, f"Connected to DexCare at {self.base_url}; the reporting service key was accepted."

    @asynccontextmanager
    async def async_session(self) -> AsyncIterator[DexCareAsyncSession]:
        """One aiohttp session for a whole trigger run, with the connection looked up without blocking.

        ``HttpAsyncHook`` is not used because it defaults to http and Basic auth and retries on its own with
        a fixed wait: the trigger must own backoff, Retry-After and its failure budget.
        """
        conn = await get_async_connection(conn_id=self.dexcare_conn_id, hook=self)
        base_url = base_url_from_connection(conn)
        key = service_key_from_connection(conn)
        read = self.timeout or conn.extra_dejson.get("timeout") or DEFAULT_READ_TIMEOUT
        client_timeout = aiohttp.ClientTimeout(
            total=float(read) + DEFAULT_CONNECT_TIMEOUT,
            connect=DEFAULT_CONNECT_TIMEOUT,
            sock_read=float(read),
        )
        verify = conn.extra_dejson.get("verify", True)
        connector = aiohttp.TCPConnector(ssl=None if verify else False)
        async with aiohttp.ClientSession(timeout=client_timeout, connector=connector) as session:
            yield DexCareAsyncSession(session, base_url, _DcTokenAuth(key), self.dexcare_conn_id)


class DexCareAsyncSession:
    """Single-attempt async calls: retrying is the trigger's decision, informed by the error type."""

    def __init__(
        self, session: aiohttp.ClientSession, base_url: str, auth: _DcTokenAuth, conn_id: str
    ) -> None:
        self._session = session
        self.base_url = base_url
        self._auth = auth
        self.conn_id = conn_id

    def __repr__(self) -> str:
        return f"DexCareAsyncSession(base_url={self.base_url!r}, conn_id={self.conn_id!r})"

    async def get_report_status(self, report_id: str) -> ReportStatus:
        report_id = validate_report_id(report_id)
        what = f"the status request for report {report_id}"
        headers = {"Authorization": f"dc-token {self._auth._key}"}
        try:
            async with self._session.get(
                f"{self.base_url}{REPORTS_PATH}/{report_id}", headers=headers, allow_redirects=False
            ) as response:
                body = await response.content.read(1 << 16)
                if response.status >= 300:
                    raise error_for_response(
                        response.status,
                        body,
                        response.headers.get("Retry-After"),
                        what=what,
                        conn_id=self.conn_id,
                        report_id=report_id,
                    )
                return parse_status(parse_json_body(body, response.headers, what), report_id)
        except TimeoutError:
            raise DexCareTimeoutError(f"DexCare did not answer {what} within the timeout.") from None
        except aiohttp.ClientError as exc:
            raise DexCareConnectionError(
                f"Cannot reach DexCare at {self.base_url} for {what}: {type(exc).__name__}: {exc}"
            ) from None


# --- download helpers ------------------------------------------------------------------------------------


def _stream_body(response: requests.Response, location: ReportLocation, what: str) -> DownloadResult:
    """Copy the body into ``location``, hashing and counting records on the way; an error anywhere inside the
    ``write()`` block (a cut connection, a short body) leaves nothing at the destination."""
    expected = _content_length(response)
    digest = hashlib.sha256()
    records = CsvRecordCounter()
    written = 0
    with location.write() as out:
        try:
            for chunk in response.iter_content(chunk_size=DOWNLOAD_CHUNK_BYTES):
                out.write(chunk)
                digest.update(chunk)
                records.feed(chunk)
                written += len(chunk)
        except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as exc:
            raise DexCareIncompleteDownloadError(
                f"The connection broke off during {what} after {written} bytes ({type(exc).__name__})."
            ) from None
        except requests.Timeout:
            raise DexCareTimeoutError(f"DexCare stopped sending {what} after {written} bytes.") from None
        if expected is not None and written != expected:
            raise DexCareIncompleteDownloadError(
                f"{what.capitalize()} ended after {written} of {expected} announced bytes."
            )
    return DownloadResult(path=location.display, bytes=written, sha256=digest.hexdigest(), rows=records.data_rows)


def _reason(exc: requests.RequestException) -> str:
    """urllib3 nests the useful part ("Connection refused", "Name or service not known") inside its retry error."""
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return str(reason or exc)


def _content_length(response: requests.Response) -> int | None:
    """Content-Length counts encoded bytes, so it can only be checked when the body is not compressed."""
    if response.headers.get("Content-Encoding", "identity").lower() not in ("", "identity"):
        return None
    value = response.headers.get("Content-Length")
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise DexCareResponseError(f"DexCare sent an invalid Content-Length {value!r}.") from None
