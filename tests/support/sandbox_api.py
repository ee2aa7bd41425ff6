"""A thin client for the sandbox tests: raw HTTP on purpose, so these tests check the wire, not the hook."""

from __future__ import annotations

import time
from typing import Any

import requests
from dexcare.report import REPORTS_PATH, ReportStatus

from tests.support.helpers import SANDBOX_TOKEN


class Api:
    """requests.Session with DexCare's auth header; ``token=None`` sends no Authorization at all."""

    def __init__(self, url: str, token: str | None = SANDBOX_TOKEN) -> None:
        self.url = url
        self.session = requests.Session()
        if token is not None:
            self.session.headers["Authorization"] = f"dc-token {token}"

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", 30)
        return self.session.request(method, self.url + path, **kwargs)

    def start(self, payload: Any = None, **kwargs: Any) -> requests.Response:
        if payload is None:
            payload = {"type": "virtual"}
        return self.request("POST", REPORTS_PATH, json=payload, **kwargs)

    def start_id(self, payload: Any = None) -> str:
        response = self.start(payload)
        assert response.status_code == 200, response.text
        return response.json()["id"]

    def status(self, report_id: str) -> requests.Response:
        return self.request("GET", f"{REPORTS_PATH}/{report_id}")

    def data(self, report_id: str, **kwargs: Any) -> requests.Response:
        return self.request("GET", f"{REPORTS_PATH}/{report_id}/data", **kwargs)

    def statuses_until(self, report_id: str, final: set[str], limit: float = 15.0,
                       interval: float = 0.02) -> list[str]:
        """Distinct statuses in the order seen, polling until one in ``final`` (or the limit)."""
        seen: list[str] = []
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            status = self.status(report_id).json()["status"]
            if not seen or seen[-1] != status:
                seen.append(status)
            if status in final:
                return seen
            time.sleep(interval)
        raise AssertionError(f"report never reached {final}: saw {seen}")

    def wait_succeeded(self, report_id: str) -> None:
        seen = self.statuses_until(report_id, {ReportStatus.SUCCEEDED, ReportStatus.FAILED,
                                               ReportStatus.CANCELLED})
        assert seen[-1] == ReportStatus.SUCCEEDED, seen
