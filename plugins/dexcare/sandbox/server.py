"""A real HTTP server that answers like DexCare's All Visits Reports API, on loopback.

Real sockets rather than a mocked session, because what breaks in production is HTTP itself: keep-alive,
Content-Length versus chunked bodies, a connection dropped mid-download, Retry-After. The stdlib
``ThreadingHTTPServer`` is enough for that and adds no dependency to the provider: one thread per
connection lets a slow or dropped download run while status polls keep being answered.

Report state is computed from the elapsed monotonic time, not advanced by a background thread, so a
report is exactly as far along as the clock says and nothing needs to be ticked or cleaned up.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hmac
import json
import logging
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from dexcare.exceptions import DexCareValidationError
from dexcare.report import (
    DEFAULT_LOOKBACK_DAYS,
    REPORTS_PATH,
    ReportRequest,
    ReportStatus,
    ReportType,
    validate_report_id,
)
from dexcare.sandbox.faults import OUTCOME_FAULTS, Fault, FaultBook, FaultKind
from dexcare.sandbox.generator import iter_report_csv

__all__ = ["FAULTS_PATH", "Report", "SandboxServer"]

log = logging.getLogger(__name__)

FAULTS_PATH = "/_sandbox/faults"
_STATUS_RE = re.compile(rf"^{re.escape(REPORTS_PATH)}/([^/]+)$")
_DATA_RE = re.compile(rf"^{re.escape(REPORTS_PATH)}/([^/]+)/data$")
_AUTH_FAILED = {"message": "Authorization failed: bad service token"}
_TYPE_ERROR = "'type' must be one of [" + ", ".join(sorted(t.value for t in ReportType)) + "]"
_BAD_JSON = object()
_MAX_BODY = 1 << 20
_MAX_LOG = 200_000  # a start request is a few dozen bytes; refuse to buffer anything silly


@dataclass
class Report:
    """One started report: what it covers and how its life is scripted (by faults) from its creation."""

    id: str
    report_type: ReportType
    start_date: dt.date
    end_date: dt.date
    created: float  # time.monotonic() at creation; every state derives from it
    created_at: dt.datetime
    queue_seconds: float
    run_seconds: float
    outcome: FaultKind | None = None  # fail_then_retry, fail, cancel, or None to succeed
    failed_seconds: float = 0.0
    expire_seconds: float | None = None
    faults: list[str] = field(default_factory=list)
    size: int | None = None  # Content-Length, once a counting pass has measured it
    body: bytes | None = None  # exact bytes to serve instead of the generated report (SandboxServer.serve_body)

    def status_at(self, now: float) -> ReportStatus:
        """The status DexCare would report ``now``: a pure function of the elapsed time."""
        elapsed = now - self.created
        q, r = self.queue_seconds, self.run_seconds
        if self.outcome is FaultKind.FAIL_THEN_RETRY:
            first_run = q + r
            if elapsed >= first_run and elapsed < first_run + self.failed_seconds:
                return ReportStatus.FAILED
            if elapsed >= first_run:
                elapsed -= first_run + self.failed_seconds  # DexCare's automatic retry starts afresh
        if elapsed < q:
            return ReportStatus.QUEUED
        if elapsed < q + r:
            return ReportStatus.RUNNING
        if self.outcome is FaultKind.FAIL:
            return ReportStatus.FAILED
        if self.outcome is FaultKind.CANCEL:
            return ReportStatus.CANCELLED
        return ReportStatus.SUCCEEDED

    def expired_at(self, now: float) -> bool:
        return self.expire_seconds is not None and now - self.created >= self.expire_seconds

    @property
    def status(self) -> ReportStatus:
        return self.status_at(time.monotonic())


class SandboxServer:
    """DexCare's reporting API on a local port, started in a daemon thread.

    Use it as a context manager (or ``start()``/``stop()``). ``request_log`` and ``reports`` are there for
    tests to assert on what a client actually did; ``inject`` scripts failures.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str = "sandbox-token",  # noqa: S107 - a well-known sandbox default, not a secret
        *,
        seed: int = 0,
        visits_per_day: int = 100,
        queue_seconds: float = 1.0,
        run_seconds: float = 2.0,
        content_length: bool = True,
        faults: Iterable[str | Mapping[str, Any]] | None = None,
    ) -> None:
        if not token:
            raise ValueError("The sandbox needs a non-empty token: clients must prove they would send one.")
        if visits_per_day < 0 or queue_seconds < 0 or run_seconds < 0:
            raise ValueError("visits_per_day, queue_seconds and run_seconds must be >= 0.")
        self.host = host
        self._port = port
        self._token = token
        self.seed = seed
        self.visits_per_day = visits_per_day
        self.queue_seconds = queue_seconds
        self.run_seconds = run_seconds
        self.content_length = content_length
        self.faults = FaultBook(faults)
        self.reports: dict[str, Report] = {}
        self.request_log: list[tuple[str, str, int]] = []
        self._lock = threading.Lock()
        self._sizes: dict[tuple[ReportType, dt.date, dt.date], int] = {}
        self._size_locks: dict[tuple[ReportType, dt.date, dt.date], threading.Lock] = {}
        self._bodies: list[tuple[ReportType | None, bytes]] = []
        self._stopping = threading.Event()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:  # never shows the token
        return f"SandboxServer(url={self.url if self._httpd else None!r})"

    # -- lifecycle -------------------------------------------------------------------------------------

    def start(self) -> SandboxServer:
        if self._httpd is not None:
            return self
        self._stopping.clear()
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        httpd = _HTTPServer((self.host, self._port), _Handler, family=family)
        httpd.sandbox = self
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.1}, name="dexcare-sandbox", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        self._stopping.set()  # wakes handlers sleeping on a ``slow`` fault
        httpd.shutdown()
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("The sandbox is not running: call start() or use it as a context manager.")
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    # -- faults ----------------------------------------------------------------------------------------

    def inject(
        self,
        kind: str,
        *,
        count: int = 1,
        report_type: str | None = None,
        endpoint: str | None = None,
        **params: Any,
    ) -> None:
        """Queue a fault (see ``dexcare.sandbox.faults``); raises ValueError on an unknown kind or param."""
        self.faults.add(Fault.build(kind, count=count, report_type=report_type, endpoint=endpoint, **params))

    def clear_faults(self) -> None:
        """Forget pending faults; reports already started keep the life they were given."""
        self.faults.clear()

    def serve_body(self, body: bytes, *, report_type: str | None = None) -> None:
        """The next report started (of ``report_type``, or any) downloads as exactly ``body``: a hostile or
        malformed CSV (CR-only lines, no header, a ``\\.`` line), with the real API's framing around it."""
        rtype = ReportType.parse(report_type) if report_type else None
        with self._lock:
            self._bodies.append((rtype, bytes(body)))

    def _take_body(self, report_type: ReportType) -> bytes | None:
        with self._lock:
            for index, (rtype, body) in enumerate(self._bodies):
                if rtype is None or rtype == report_type:
                    del self._bodies[index]
                    return body
        return None

    # -- state used by the handler ---------------------------------------------------------------------

    def _check_token(self, header: str | None) -> bool:
        scheme, _, key = (header or "").strip().partition(" ")
        if scheme.lower() != "dc-token":
            return False
        return hmac.compare_digest(key.strip().encode(), self._token.encode())

    def _record(self, method: str, path: str, status: int) -> None:
        with self._lock:
            self.request_log.append((method, path, status))
            if len(self.request_log) > _MAX_LOG:  # a sandbox left running for days stays small
                del self.request_log[: _MAX_LOG // 2]

    def _create_report(self, request: ReportRequest) -> Report:
        now = time.monotonic()
        created_at = dt.datetime.now(dt.UTC)
        start, end = request.start_date, request.end_date
        if start is None or end is None:
            end = created_at.date()
            start = end - dt.timedelta(days=DEFAULT_LOOKBACK_DAYS - 1)
        report = Report(
            id=str(uuid.uuid4()), report_type=request.report_type, start_date=start, end_date=end,
            created=now, created_at=created_at, queue_seconds=self.queue_seconds,
            run_seconds=self.run_seconds,
        )
        outcome = self.faults.take(OUTCOME_FAULTS, "start", request.report_type)
        if outcome is not None:
            report.outcome = outcome.kind
            report.failed_seconds = outcome.params.get("failed_seconds", 0.0)
            report.faults.append(outcome.kind.value)
        expire = self.faults.take((FaultKind.EXPIRE,), "start", request.report_type)
        if expire is not None:
            report.expire_seconds = expire.params["expire_seconds"]
            report.faults.append(expire.kind.value)
        report.body = self._take_body(request.report_type)
        if report.body is not None:
            report.size = len(report.body)
        with self._lock:
            self.reports[report.id] = report
        if self.content_length and report.body is None:
            # Measure the body while the report is QUEUED/RUNNING, so a big download starts at once.
            threading.Thread(target=self._presize, args=(report,), name="dexcare-sandbox-size",
                             daemon=True).start()
        return report

    def _presize(self, report: Report) -> None:
        with contextlib.suppress(ConnectionAbortedError):
            self._report_size(report)

    def _find_report(self, report_id: str) -> Report | None:
        with self._lock:
            return self.reports.get(report_id)

    def _report_size(self, report: Report) -> int:
        """Content-Length by a counting pass of the deterministic generator, so nothing holds the body.

        Cached per window rather than per report: every report over the same window has the same bytes.
        """
        if report.body is not None:
            return len(report.body)
        key = (report.report_type, report.start_date, report.end_date)
        with self._lock:
            lock = self._size_locks.setdefault(key, threading.Lock())
        with lock:
            size = self._sizes.get(key)
            if size is None:
                size = 0
                for chunk in iter_report_csv(*key, seed=self.seed, visits_per_day=self.visits_per_day,
                                             chunk_size=1 << 20):
                    if self._stopping.is_set():
                        raise ConnectionAbortedError("the sandbox is stopping")
                    size += len(chunk)
                self._sizes[key] = size
        report.size = size
        return size

    def _body(self, report: Report) -> Iterable[bytes]:
        if report.body is not None:
            return (report.body[i : i + (1 << 16)] for i in range(0, len(report.body), 1 << 16))
        return iter_report_csv(report.report_type, report.start_date, report.end_date, seed=self.seed,
                               visits_per_day=self.visits_per_day)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    sandbox: SandboxServer

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], *,
                 family: socket.AddressFamily) -> None:
        self.address_family = family
        super().__init__(address, handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # The default prints a traceback to stderr; a client hanging up mid-body is routine here.
        log.debug("DexCare sandbox: connection error from %s", client_address[0],
                  exc_info=True)  # noqa: LOG014 - socketserver calls this inside its except block


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, Content-Length and chunked bodies, as DexCare does
    server_version = "DexCareSandbox/1.0"
    timeout = 60  # idle keep-alive connections do not pin a thread forever
    server: _HTTPServer
    _streaming = False  # True once a CSV's headers are out: errors after that can only hang up

    def setup(self) -> None:
        super().setup()
        # Headers and body leave in separate writes; without this, Nagle's algorithm meeting the client's
        # delayed ACK adds ~40 ms to every small answer, which makes polling tests crawl.
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    # -- logging: method, path and status only; never headers (the token) nor bodies (patient data) --

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        status = int(code) if str(code).isdigit() else 0
        method, path = self.command or "-", self.path or "-"
        self.server.sandbox._record(method, path, status)
        log.debug("DexCare sandbox: %s %s %s", method, path, status)

    def log_message(self, format: str, *args: Any) -> None:
        return

    # -- dispatch ----------------------------------------------------------------------------------------

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def _dispatch(self, method: str) -> None:
        sandbox = self.server.sandbox
        self._streaming = False
        try:
            body = self._read_body()
            if body is None:
                return
            path = self.path.split("?", 1)[0]
            if path == FAULTS_PATH:
                self._faults_endpoint(method, body)
                return
            if path == REPORTS_PATH:
                route, report_id, allowed = "start", None, "POST"
            elif (m := _DATA_RE.match(path)) is not None:
                route, report_id, allowed = "download", m.group(1), "GET"
            elif (m := _STATUS_RE.match(path)) is not None:
                route, report_id, allowed = "status", m.group(1), "GET"
            else:
                self._json(404, {"error": "Not Found"})
                return
            if method != allowed:
                self._json(405, {"error": f"Method {method} not allowed"}, headers={"Allow": allowed})
                return
            if not sandbox._check_token(self.headers.get("Authorization")):
                self._json(403, _AUTH_FAILED)
                return
            if route == "start":
                self._start(body)
            else:
                self._report_endpoint(route, report_id or "")
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            self.close_connection = True
        except Exception:
            log.exception("DexCare sandbox: unexpected error answering %s %s", method, self.path)
            if self._streaming:  # headers already left: a JSON error would corrupt the body, so hang up
                self.close_connection = True
                return
            try:
                self._json(500, {"error": "Unknown error"})
            except OSError:
                self.close_connection = True

    def _read_body(self) -> bytes | None:
        """Read the whole request body first, so every answer (even a 403) leaves the connection usable."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts: list[bytes] = []
            total = 0
            while True:
                size = int(self.rfile.readline(1024).split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                total += size
                if total > _MAX_BODY:
                    break
                parts.append(self.rfile.read(size))
                self.rfile.readline(1024)
        else:
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                self.close_connection = True
                self._json(400, {"error": "Content-Length is not a number"})
                return None
            if length <= _MAX_BODY:
                return self.rfile.read(length) if length > 0 else b""
        self.close_connection = True
        self._json(413, {"error": "Request body too large"})
        return None

    # -- faults that apply to a request ----------------------------------------------------------------

    def _request_faults(self, endpoint: str, report_type: ReportType | None) -> bool:
        """Apply ``slow``, then ``http_429`` / ``http_500``; True when a fault already answered."""
        book = self.server.sandbox.faults
        slow = book.take((FaultKind.SLOW,), endpoint, report_type)
        if slow is not None:
            self.server.sandbox._stopping.wait(slow.params["delay"])
        fault = book.take((FaultKind.HTTP_429, FaultKind.HTTP_500), endpoint, report_type)
        if fault is None:
            return False
        if fault.kind is FaultKind.HTTP_429:
            retry_after = fault.params["retry_after"]
            header = str(int(retry_after)) if retry_after == int(retry_after) else f"{retry_after:g}"
            self._json(429, {"error": "Too Many Requests: slow down and retry later"},
                       headers={"Retry-After": header})
        else:
            self._json(500, {"error": "Unknown error"})
        return True

    # -- endpoints ---------------------------------------------------------------------------------------

    def _start(self, body: bytes) -> None:
        payload: Any
        try:
            payload = json.loads(body.decode("utf-8")) if body.strip() else None
        except (UnicodeDecodeError, ValueError):
            payload = _BAD_JSON
        rtype_value = payload.get("type") if isinstance(payload, dict) else None
        fault_type = rtype_value if rtype_value in {t.value for t in ReportType} else None
        if self._request_faults("start", ReportType(fault_type) if fault_type else None):
            return
        if payload is _BAD_JSON:
            self._json(400, {"error": "Request body must be JSON, e.g. {\"type\": \"virtual\"}"})
            return
        if not isinstance(payload, dict):
            self._json(400, {"error": "Request body must be a JSON object with a 'type'"})
            return
        if rtype_value is None or rtype_value == "":
            self._json(400, {"error": "'type' is required"})
            return
        if fault_type is None:  # the real API is case-sensitive: only the exact values are accepted
            self._json(400, {"error": _TYPE_ERROR})
            return
        try:
            request = ReportRequest.build(fault_type, payload.get("startDate"), payload.get("endDate"))
        except DexCareValidationError as exc:
            message = str(exc).replace("start_date", "startDate").replace("end_date", "endDate")
            self._json(400, {"error": message})
            return
        report = self.server.sandbox._create_report(request)
        self._json(200, {"id": report.id})

    def _report_endpoint(self, route: str, raw_id: str) -> None:
        sandbox = self.server.sandbox
        try:
            report_id = validate_report_id(raw_id)
        except DexCareValidationError:
            report_id = None
        report = sandbox._find_report(report_id) if report_id else None
        if self._request_faults(route, report.report_type if report else None):
            return
        if report_id is None:
            key = "msg" if route == "status" else "error"
            self._json(400, {key: "'reportId' must be a valid GUID"})
            return
        now = time.monotonic()
        if report is None or report.expired_at(now):
            self._json(404, {"error": "QueryExecution Not Found"})
            return
        status = report.status_at(now)
        if route == "status":
            self._json(200, {"status": status.value})
            return
        if status is not ReportStatus.SUCCEEDED:
            self._json(400, {"error": "QueryExecution did not succeed"})
            return
        drop = sandbox.faults.take((FaultKind.DROP_DOWNLOAD,), "download", report.report_type)
        self._download(report, drop=drop is not None)

    def _download(self, report: Report, *, drop: bool) -> None:
        sandbox = self.server.sandbox
        with_length = sandbox.content_length or drop
        size = sandbox._report_size(report) if with_length else None
        self.send_response(200)
        self.send_header("Content-Type", "text/csv; charset=utf-8")
        self.send_header("Content-Disposition", f'attachment; filename="{report.id}.csv"')
        if size is not None:
            self.send_header("Content-Length", str(size))
        else:
            self.send_header("Transfer-Encoding", "chunked")
        self._streaming = True
        self.end_headers()
        write = self.wfile.write
        if drop:
            assert size is not None
            remaining = size // 2
            for chunk in sandbox._body(report):
                if remaining <= 0:
                    break
                write(chunk[:remaining])
                remaining -= len(chunk)
            self._hang_up()
            return
        if size is not None:
            for chunk in sandbox._body(report):
                write(chunk)
        else:
            for chunk in sandbox._body(report):
                write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
            write(b"0\r\n\r\n")

    def _hang_up(self) -> None:
        """Close mid-body, as a broken proxy or a crashed pod would: the client sees a short read."""
        self.close_connection = True
        self.wfile.flush()
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _faults_endpoint(self, method: str, body: bytes) -> None:
        sandbox = self.server.sandbox
        if method not in ("POST", "DELETE", "GET"):
            self._json(405, {"error": f"Method {method} not allowed"}, headers={"Allow": "GET, POST, DELETE"})
            return
        if not sandbox._check_token(self.headers.get("Authorization")):
            self._json(403, _AUTH_FAILED)
            return
        if method == "GET":
            self._json(200, {"faults": [f.to_dict() for f in sandbox.faults.pending()]})
            return
        if method == "DELETE":
            self._json(200, {"cleared": sandbox.faults.clear()})
            return
        try:
            spec = json.loads(body.decode("utf-8"))
            if not isinstance(spec, dict) or "kind" not in spec:
                raise ValueError("Send a JSON object with at least a 'kind'.")
            fault = Fault.build(**spec)
        except (UnicodeDecodeError, ValueError, TypeError, DexCareValidationError) as exc:
            self._json(400, {"error": str(exc)})
            return
        sandbox.faults.add(fault)
        self._json(200, {"fault": fault.to_dict()})

    # -- helpers -----------------------------------------------------------------------------------------

    def _json(self, status: int, payload: Mapping[str, Any], headers: Mapping[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)
