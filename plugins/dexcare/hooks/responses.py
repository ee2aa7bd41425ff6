"""Turning DexCare's answers into values or typed errors, shared by the sync hook and the async session.

Kept free of any HTTP client so both transports map every documented response the same way.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from dexcare.exceptions import (
    DexCareAPIError,
    DexCareAuthError,
    DexCareBadRequestError,
    DexCareNotFoundError,
    DexCareRateLimitError,
    DexCareResponseError,
    DexCareServerError,
    DexCareUnknownStatusError,
)
from dexcare.hooks.retry import parse_retry_after
from dexcare.redaction import redact_url
from dexcare.report import ReportStatus, validate_report_id

MAX_SERVER_MESSAGE = 300


def server_message(body: bytes) -> str | None:
    """DexCare puts its reason in ``error``, ``message`` or ``msg`` depending on the endpoint."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict):
        return None
    for key in ("error", "message", "msg"):
        if isinstance(data.get(key), str):
            return data[key][:MAX_SERVER_MESSAGE]
    return None


def error_for_response(
    status: int,
    body: bytes,
    retry_after: str | None,
    *,
    what: str,
    conn_id: str,
    report_id: str | None = None,
    proxy: str | None = None,
) -> DexCareAPIError | DexCareResponseError:
    message = server_message(body)
    said = f": {message}" if message else ""
    kwargs: dict[str, Any] = {"status_code": status, "server_message": message}
    if status == 400:
        return DexCareBadRequestError(f"DexCare rejected {what} (400){said}", **kwargs)
    if status in (401, 403):
        return DexCareAuthError(
            f"DexCare refused the reporting service key for {what} ({status}{said}). Check the password "
            f"('Reporting service key') of connection {conn_id!r}: it must be a current DexCare reporting "
            "service key for this endpoint.",
            **kwargs,
        )
    if status == 404:
        subject = f"report {report_id}" if report_id else "the requested resource"
        return DexCareNotFoundError(
            f"DexCare does not know {subject} (404{said}). The id may be wrong or the report may have "
            "expired: start a new report.",
            **kwargs,
        )
    if status == 407:
        return proxy_refused(what=what, conn_id=conn_id, proxy=proxy)
    if status == 429:
        return DexCareRateLimitError(
            f"DexCare is rate limiting {what} (429){said}.",
            retry_after=parse_retry_after(retry_after),
            **kwargs,
        )
    if status >= 500:
        return DexCareServerError(
            f"DexCare failed on {what} ({status}{said}).",
            retry_after=parse_retry_after(retry_after),
            **kwargs,
        )
    return DexCareResponseError(f"DexCare answered {what} with unexpected HTTP {status}{said}.")


def proxy_refused(*, what: str, conn_id: str, proxy: str | None) -> DexCareResponseError:
    """A 407, whether the proxy answered a plain http request with it or refused the CONNECT tunnel of an https
    one (which both HTTP clients report as a connection error): wrong proxy credentials fail the same way on
    every try, so this is not retried, and it names the proxy without its user-info."""
    which = f"The proxy {redact_url(proxy)}" if proxy else "A proxy"
    return DexCareResponseError(
        f"{which} between Airflow and DexCare refused {what} (407 Proxy Authentication Required). Check the "
        f"proxy user and password in the 'proxies' extra of connection {conn_id!r}, or in HTTPS_PROXY / "
        "HTTP_PROXY where Airflow runs."
    )


def parse_json_body(body: bytes, headers: Mapping[str, str], what: str) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        content_type = headers.get("Content-Type", "unknown")
        raise DexCareResponseError(
            f"DexCare answered {what} with a body that is not JSON (Content-Type {content_type}, "
            f"{len(body)} bytes). Check that the connection host is the DexCare API endpoint, not a proxy or "
            "login page."
        ) from None
    if not isinstance(data, dict):
        raise DexCareResponseError(f"DexCare answered {what} with JSON that is not an object.")
    return data


def parse_report_id(data: dict[str, Any]) -> str:
    if "id" not in data:
        raise DexCareResponseError(
            f"DexCare accepted the report request but sent no 'id' (keys: {sorted(data)})."
        )
    try:
        return validate_report_id(data["id"])
    except ValueError:
        raise DexCareResponseError(f"DexCare sent a report id that is not a GUID: {data['id']!r}.") from None


def parse_status(data: dict[str, Any], report_id: str) -> ReportStatus:
    raw = data.get("status")
    try:
        return ReportStatus(raw if isinstance(raw, str) else repr(raw))
    except ValueError:
        allowed = ", ".join(s.value for s in ReportStatus)
        raise DexCareUnknownStatusError(
            f"DexCare returned status {raw!r} for report {report_id}, which is none of {allowed}; "
            "refusing to guess what it means. Upgrade airflow-provider-dexcare or report this status."
        ) from None
