"""DexCareHook: the one place that speaks DexCare's asynchronous reporting API.

Built on the HTTP provider's ``HttpHook``, so a DexCare connection's extra means what it means for any Airflow
HTTP connection (proxies, TLS options, timeout; read once into a ``DexCareTransport`` that sets up both the
worker's requests session and the trigger's aiohttp session). What it adds is what DexCare needs and
``HttpHook`` does not do: a ``dc-token`` key that never leaks, https by default, typed errors for every
documented answer, bounded Retry-After-aware retries, and a streamed, verified, atomic download.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import uuid
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import aiohttp
import requests
from airflow.providers.common.compat.connection import get_async_connection
from airflow.providers.http.hooks.http import HttpHook

from dexcare.compat import connection_form_before_3_2
from dexcare.csv_records import DEFAULT_KEY, CsvRecordCounter, CsvShapeError
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
from dexcare.handoff import ReportHandoff
from dexcare.hooks.responses import (
    error_for_response,
    parse_json_body,
    parse_report_id,
    parse_status,
    proxy_refused,
)
from dexcare.hooks.retry import RetryPolicy, call_with_retries
from dexcare.hooks.transport import DexCareTransport
from dexcare.report import REPORTS_PATH, ReportRequest, ReportStatus, validate_report_id
from dexcare.storage import ReportLocation

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    import pandas as pd
    from airflow.sdk import ObjectStoragePath

#: Each of the download's three stages holds one chunk: 512 KiB received faster here than 1 MiB or 256 KiB
#: (benchmarks/load_benchmark.py, download case) and keeps the download's own memory near 1.5 MiB.
DOWNLOAD_CHUNK_BYTES = 1 << 19
#: What Airflow's UI and API show, and post back, in place of a connection's password.
MASKED_PASSWORD = "***"  # noqa: S105 (the mask, not a password)


@connection_form_before_3_2
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
        self._transport: DexCareTransport | None = None
        self._session: requests.Session | None = None

    # --- transport ---------------------------------------------------------------------------------------

    @property
    def transport(self) -> DexCareTransport:
        """How to reach DexCare, read from the connection on first use (building the hook makes no call)."""
        if self._transport is None:
            connection = self.get_connection(self.dexcare_conn_id)
            self._transport = self._announce(DexCareTransport.from_connection(connection, read_timeout=self.timeout))
            self.base_url = self._transport.base_url
        return self._transport

    def _announce(self, transport: DexCareTransport) -> DexCareTransport:
        if transport.proxy:
            self.log.info("Reaching %s.", transport.describe())
        return transport

    def get_conn(
        self, headers: dict[str, str] | None = None, extra_options: dict[str, Any] | None = None
    ) -> requests.Session:
        """A requests session set up by the transport: the same proxy, TLS and timeouts as the trigger's."""
        if extra_options:
            raise DexCareValidationError(
                f"DexCareHook reads its transport settings from connection {self.dexcare_conn_id!r}; "
                f"put {sorted(extra_options)} in the connection's extra instead of extra_options."
            )
        session = self._configure_session_from_mount_adapters(self.transport.requests_session())  # TCP keep-alive
        if headers:
            session.headers.update(headers)
        # HttpHook.run() sends with these; DexCareHook's own calls pass them explicitly.
        self.merged_extra = {"timeout": self.transport.requests_timeout, "allow_redirects": False}
        return session

    def _get_session(self) -> requests.Session:
        if self._session is None:
            self._session = self.get_conn()
        return self._session

    def _send(
        self, method: str, path: str, *, what: str, report_id: str | None = None, **kwargs: Any
    ) -> requests.Response:
        """One request, no retries; any non-2xx answer becomes the matching DexCareError."""
        session = self._get_session()
        transport = self.transport
        try:
            response = session.request(
                method, transport.url(path), timeout=transport.requests_timeout, allow_redirects=False, **kwargs
            )
        except requests.Timeout as exc:
            raise DexCareTimeoutError(f"DexCare did not answer {what} within the timeout ({exc}).") from None
        except requests.ConnectionError as exc:
            raise _unreachable(transport, what, _reason(exc), _tunnel_status(exc)) from None
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
                proxy=transport.proxy,
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
        self.log.info(
            "Started DexCare %s report %s for %s", request.report_type.value, report_id, request.describe_window()
        )
        return report_id

    def get_report_status(self, report_id: str) -> ReportStatus:
        report_id = validate_report_id(report_id)
        what = f"the status request for report {report_id}"

        def once() -> ReportStatus:
            with self._send("GET", f"{REPORTS_PATH}/{report_id}", what=what, report_id=report_id) as response:
                return parse_status(parse_json_body(response.content, response.headers, what), report_id)

        return self._retrying(once, f"Checking report {report_id}")

    def download_report(
        self,
        report_id: str,
        destination: str | os.PathLike | ObjectStoragePath | ReportLocation,
        *,
        key_columns: Sequence[str] = DEFAULT_KEY,
        request: ReportRequest | None = None,
    ) -> ReportHandoff:
        """Stream the report's CSV to ``destination`` and return the hand-off record: where the file is, its
        size, sha256, row count and header, and (given the ``request`` it answers) which report it is, ready
        for the load.

        The body is written in 1 MiB chunks through :meth:`ReportLocation.write`, which makes the file appear
        only once it is complete and checked against Content-Length: a report of any size needs constant
        memory, and a download that breaks off never leaves a file (or object) that looks finished.
        ``destination`` is a path, a ``file://`` or object-store URI, or an ``ObjectStoragePath``.
        ``key_columns`` (the load's, header or normalised names) tell a DexCare header from a patient's record:
        a body whose first line lacks them, or with CR-only line endings, is refused and nothing is kept.
        """
        report_id = validate_report_id(report_id)
        location = ReportLocation.parse(destination)
        what = f"the download of report {report_id}"

        def once() -> tuple[int, str, int, list[str] | None]:
            with self._send(
                "GET", f"{REPORTS_PATH}/{report_id}/data", what=what, report_id=report_id, stream=True
            ) as response:
                return _stream_body(response, location, what, key_columns)

        size, sha256, rows, header = self._retrying(once, f"Downloading report {report_id}")
        result = ReportHandoff.downloaded(location, report_id, bytes=size, sha256=sha256, rows=rows, header=header,
                                          request=request, endpoint=self.transport.base_url)
        self.log.info(
            "Downloaded DexCare report %s: %d bytes, sha256 %s", report_id, result.bytes, result.sha256
        )
        return result

    def test_connection(self) -> tuple[bool, str]:
        """Read-only probe: the status of a random report id (never starts a report).

        DexCare checks the key before it looks the report up, so 404 proves the key works, 403 proves it does
        not, and a connection error means the endpoint is wrong or unreachable.

        Test Connection in the UI reaches this through the api-server, which hands the hook a copy of the
        connection under a random id: the messages name the endpoint being tested, never that id. A password
        that is still Airflow's mask (the UI posts ``***`` for a key it does not show, and Airflow 3.0 does not
        put the stored key back) is refused before any request, saying to enter the key.
        """
        try:
            connection = self.get_connection(self.dexcare_conn_id)
            if (connection.password or "").strip() == MASKED_PASSWORD:
                return False, (
                    "The reporting service key reached the test masked ('***'), not the key itself. Enter the "
                    "key in the 'Reporting service key' field and test again."
                )
            transport = self.transport
        except DexCareValidationError as exc:
            return False, str(exc)
        tested = f"the connection being tested ({transport.describe()})"
        probe = str(uuid.uuid4())
        try:
            with self._send("GET", f"{REPORTS_PATH}/{probe}", what="the connection test", report_id=probe):
                pass
        except DexCareNotFoundError:
            pass
        except DexCareAuthError as exc:
            return False, (
                f"DexCare refused the reporting service key of {tested} (HTTP {exc.status_code}). Fix: enter a "
                "current DexCare reporting service key for this endpoint in the 'Reporting service key' field."
            )
        except DexCareConnectionError as exc:
            return False, f"DexCare endpoint of {tested} unreachable: {exc}"
        except DexCareError as exc:
            return False, f"DexCare answered {tested} unexpectedly: {exc}"
        return True, f"Connected to {transport.describe()}; the reporting service key was accepted."

    @asynccontextmanager
    async def async_session(self) -> AsyncIterator[DexCareAsyncSession]:
        """One aiohttp session for a whole trigger run, with the connection looked up without blocking.

        ``HttpAsyncHook`` is not used because it defaults to http and Basic auth and retries on its own with
        a fixed wait: the trigger must own backoff, Retry-After and its failure budget.
        """
        conn = await get_async_connection(conn_id=self.dexcare_conn_id, hook=self)
        # The environment and the CA bundle are files to read: off the event loop.
        transport = await asyncio.to_thread(DexCareTransport.from_connection, conn, read_timeout=self.timeout)
        ssl_context = await asyncio.to_thread(transport.ssl_context)
        self._announce(transport)
        async with transport.aiohttp_session(ssl_context) as session:
            yield DexCareAsyncSession(session, transport)

    # --- DataFrames (dexcare.frames; needs the airflow-provider-dexcare[pandas] extra) ---------------------

    def get_df(
        self,
        report_id: str | None = None,
        *,
        report_type: str | None = None,
        start_date: Any = None,
        end_date: Any = None,
        key_columns: Sequence[str] = ("visit_id",),
        timestamp_columns: Sequence[str] | None = None,
        poll_interval: float = 15.0,
        timeout: float = 3600.0,
        failed_grace_period: float = 600.0,
        max_resubmits: int = 0,
        temp_dir: str | os.PathLike | None = None,
    ) -> pd.DataFrame:
        """A report as one pandas DataFrame, like the SQL hooks' ``get_df``.

        ``report_id`` downloads a report DexCare has built; ``report_type`` with ``start_date``/``end_date``
        requests one and waits for it by the sensor's rules (FAILED is final only after
        ``failed_grace_period``, CANCELLED at once, ``max_resubmits`` requests again). Key columns and every
        other field are nullable strings (``0012`` stays ``0012``); columns whose values say they are UTC
        (``Z``/offset), or those in ``timestamp_columns``, are ``datetime64[ns, UTC]`` (:mod:`dexcare.frames.columns`).
        The file is read by the load's CSV rules and deleted before this returns or raises.
        """
        from dexcare.frames.report import report_frame

        return report_frame(self, report_id, report_type=report_type, start_date=start_date, end_date=end_date,
                            key_columns=key_columns, timestamp_columns=timestamp_columns,
                            poll_interval=poll_interval, timeout=timeout, failed_grace_period=failed_grace_period,
                            max_resubmits=max_resubmits, temp_dir=temp_dir)

    def get_df_by_chunks(
        self,
        report_id: str | None = None,
        *,
        chunksize: int,
        report_type: str | None = None,
        start_date: Any = None,
        end_date: Any = None,
        key_columns: Sequence[str] = ("visit_id",),
        timestamp_columns: Sequence[str] | None = None,
        poll_interval: float = 15.0,
        timeout: float = 3600.0,
        failed_grace_period: float = 600.0,
        max_resubmits: int = 0,
        temp_dir: str | os.PathLike | None = None,
    ) -> Iterator[pd.DataFrame]:
        """:meth:`get_df` as DataFrames of at most ``chunksize`` rows, for a report larger than memory; they
        concatenate to :meth:`get_df`'s frame. Arguments are checked now; the report is requested or downloaded
        on the first ``next()``, and its file deleted when the iterator ends, fails or is closed."""
        from dexcare.frames.report import report_chunks

        return report_chunks(self, report_id, chunksize=chunksize, report_type=report_type, start_date=start_date,
                             end_date=end_date, key_columns=key_columns, timestamp_columns=timestamp_columns,
                             poll_interval=poll_interval, timeout=timeout, failed_grace_period=failed_grace_period,
                             max_resubmits=max_resubmits, temp_dir=temp_dir)


class DexCareAsyncSession:
    """Single-attempt async calls: retrying is the trigger's decision, informed by the error type."""

    def __init__(self, session: aiohttp.ClientSession, transport: DexCareTransport) -> None:
        self._session = session
        self._transport = transport
        self.base_url = transport.base_url
        self.conn_id = transport.conn_id

    def __repr__(self) -> str:
        return f"DexCareAsyncSession(base_url={self.base_url!r}, conn_id={self.conn_id!r})"

    async def get_report_status(self, report_id: str) -> ReportStatus:
        report_id = validate_report_id(report_id)
        what = f"the status request for report {report_id}"
        transport = self._transport
        try:
            async with self._session.get(
                transport.url(f"{REPORTS_PATH}/{report_id}"), **transport.aiohttp_request_kwargs()
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
                        proxy=transport.proxy,
                    )
                return parse_status(parse_json_body(body, response.headers, what), report_id)
        except TimeoutError:
            raise DexCareTimeoutError(f"DexCare did not answer {what} within the timeout.") from None
        except aiohttp.ClientHttpProxyError as exc:  # the proxy refused the CONNECT tunnel of an https request
            raise _unreachable(transport, what, f"{type(exc).__name__}: {exc}", exc.status) from None
        except aiohttp.ClientError as exc:
            raise _unreachable(transport, what, f"{type(exc).__name__}: {exc}") from None


# --- download helpers ------------------------------------------------------------------------------------


def _stream_body(
    response: requests.Response, location: ReportLocation, what: str, key_columns: Sequence[str]
) -> tuple[int, str, int, list[str] | None]:
    """Copy the body into ``location``, hashing and counting records (and checking the header) on the way; an
    error anywhere inside the ``write()`` block (a cut connection, a short body, a body that is not a DexCare
    CSV) leaves nothing at the destination. Returns the bytes written, their sha256, the data records and the
    header fields."""
    expected = _content_length(response)
    digest = hashlib.sha256()
    records = CsvRecordCounter(key_columns)
    written = 0

    # Four stages run side by side, one chunk each: this thread receives and then hashes (the socket read and
    # the hash both release the GIL), one helper counts the chunk's records (C code that holds the GIL, but
    # overlaps the rest) and one writes it (releases the GIL). The download then runs at the pace of its slowest
    # stage rather than of their sum. Hashing here rather than on a third helper saves a hand-off per chunk
    # and a thread on the cores: a tenth of the download's time, measured against curl. Until the header has
    # been checked, counting comes first and inline: a refused header is never written. Memory stays flat (one
    # chunk in each stage); the file and the hash see the chunks in order (each helper takes the next chunk
    # only once it is done with the last); the pool is left, and the last write and count done, before
    # ``write()`` keeps or removes the file.
    with location.write() as out, ThreadPoolExecutor(2, thread_name_prefix="dexcare-download") as stages:
        try:
            kept: Future[Any] | None = None
            counted: Future[None] | None = None
            for chunk in response.iter_content(chunk_size=DOWNLOAD_CHUNK_BYTES):
                if records.checked:
                    if counted is not None:
                        counted.result()
                    counted = stages.submit(records.feed, chunk)
                else:
                    records.feed(chunk)
                if kept is not None:
                    kept.result()  # a write's error (a full disk) surfaces here, as it did inline
                kept = stages.submit(out.write, chunk)
                digest.update(chunk)
                written += len(chunk)
            for stage in (counted, kept):
                if stage is not None:
                    stage.result()
            records.finish()
        except CsvShapeError as exc:
            raise DexCareResponseError(
                f"{what.capitalize()} is not a DexCare report CSV: {exc}. Nothing was kept."
            ) from None
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
    return written, digest.hexdigest(), records.data_rows, records.header


def _unreachable(
    transport: DexCareTransport, what: str, reason: str, proxy_status: int | None = None
) -> DexCareError:
    """A request that got no answer from DexCare, on either path. A proxy's 407 to the CONNECT of an https
    request is no network trouble but wrong proxy credentials: not retried, like a 407 to a plain http request.
    ``reason`` is the client's text, which may quote the proxy URL with its password: the error redacts it."""
    if proxy_status == 407:
        return proxy_refused(what=what, conn_id=transport.conn_id, proxy=transport.proxy)
    return DexCareConnectionError(f"Cannot reach {transport.describe()} for {what}: {reason}")


#: How http.client (under urllib3 and requests) reports a proxy's refusal of a CONNECT tunnel; it keeps no status.
_TUNNEL_REFUSED = re.compile(r"Tunnel connection failed: (\d{3})\b")


def _tunnel_status(exc: requests.ConnectionError) -> int | None:
    """The proxy's status when it refused the CONNECT tunnel, else None."""
    if not isinstance(exc, requests.exceptions.ProxyError):
        return None
    refused = _TUNNEL_REFUSED.search(_reason(exc))
    return int(refused[1]) if refused else None


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
