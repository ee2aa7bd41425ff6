"""Headless Chromium (Debian's ``chromium`` package) driven over the DevTools protocol, for the page tests.

The page is judged as a person sees it: Chromium loads it with the Airflow session cookie a login leaves, and
the test reads the rendered text (``innerText``: only what is visible) and keeps a screenshot. ``--dump-dom``
cannot send a cookie, so the protocol is spoken directly over one WebSocket (``websockets``, already installed
with Airflow); no browser-automation package is needed.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from websockets.sync.client import ClientConnection, connect

from tests.support.processes import stop_group, wait_for

FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--hide-scrollbars",
)  # fmt: skip
#: One id sequence for every command on the shared WebSocket, whichever tab sends it.
_IDS = itertools.count(1)
INSTALL = "apt-get install -y chromium (Debian's package; `make test` and .ci/run install it when missing)"


def chromium_binary() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        raise RuntimeError(f"No chromium on PATH: the page tests need headless Chromium. Install it: {INSTALL}")
    return found


class Page:
    """One tab, attached with a session id; ``call`` sends a command and waits for its answer."""

    def __init__(self, ws: ClientConnection, session: str) -> None:
        self.ws, self.session = ws, session
        self.events: list[dict[str, Any]] = []

    def call(self, method: str, timeout: float = 30, **params: Any) -> dict[str, Any]:
        ident = next(_IDS)
        self.ws.send(json.dumps({"id": ident, "method": method, "params": params, "sessionId": self.session}))
        deadline = time.monotonic() + timeout
        while True:
            message = json.loads(self.ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if message.get("id") == ident:
                if "error" in message:
                    raise RuntimeError(f"{method} failed: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def goto(self, url: str, timeout: float = 30) -> None:
        """Navigate and wait for the load event."""
        self.events.clear()
        self.call("Page.navigate", url=url)
        deadline = time.monotonic() + timeout
        while not any(e.get("method") == "Page.loadEventFired" for e in self.events):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} did not load in {timeout} s")
            with contextlib.suppress(TimeoutError):
                self.events.append(json.loads(self.ws.recv(timeout=1)))

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression!r} raised: {result['exceptionDetails']}")
        return result["result"].get("value")

    def text(self) -> str:
        return str(self.evaluate("document.body.innerText"))

    def screenshot(self, path: Path) -> None:
        """The whole page (beyond the viewport), as PNG."""
        height = int(self.evaluate("Math.ceil(document.documentElement.scrollHeight)"))
        self.call("Emulation.setDeviceMetricsOverride", width=1280, height=max(height, 600), deviceScaleFactor=1,
                  mobile=False)
        data = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))


class Chromium:
    """A headless Chromium with a private profile; ``page(cookies)`` opens a fresh tab with those cookies."""

    def __init__(self) -> None:
        self.profile = Path(tempfile.mkdtemp(prefix="dexcare-chromium-"))
        self.output = self.profile / "chromium.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.ws: ClientConnection | None = None

    def __enter__(self) -> Chromium:
        argv = [chromium_binary(), *FLAGS, f"--user-data-dir={self.profile}", "--remote-debugging-port=0",
                "--remote-debugging-address=127.0.0.1", "about:blank"]
        with self.output.open("ab") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        try:
            port_file = self.profile / "DevToolsActivePort"
            wait_for("Chromium to open its DevTools port", lambda: self._alive() and port_file.exists()
                     and len(port_file.read_text().splitlines()) >= 2, timeout=30, interval=0.1)
            port, path = port_file.read_text().splitlines()[:2]
            self.ws = connect(f"ws://127.0.0.1:{port}{path}", max_size=64 * 1024 * 1024, open_timeout=10)
        except BaseException:
            self.close()
            raise
        return self

    def _alive(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"chromium exited with {self.proc.returncode}: {self.output.read_text()[-2000:]}")
        return True

    @contextlib.contextmanager
    def page(self, url_for_cookies: str, cookies: dict[str, str] | None = None) -> Iterator[Page]:
        assert self.ws is not None
        browser = Page(self.ws, session="")
        context = self._browser_call(browser, "Target.createBrowserContext")["browserContextId"]
        target = self._browser_call(browser, "Target.createTarget", url="about:blank",
                                    browserContextId=context)["targetId"]
        session = self._browser_call(browser, "Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        page = Page(self.ws, session)
        try:
            page.call("Page.enable")
            page.call("Network.enable")
            for name, value in (cookies or {}).items():
                page.call("Network.setCookie", name=name, value=value, url=url_for_cookies)
            yield page
        finally:
            with contextlib.suppress(Exception):
                self._browser_call(browser, "Target.disposeBrowserContext", browserContextId=context)

    @staticmethod
    def _browser_call(browser: Page, method: str, **params: Any) -> dict[str, Any]:
        """A browser-level command (no session id)."""
        ident = next(_IDS)
        browser.ws.send(json.dumps({"id": ident, "method": method, "params": params}))
        while True:
            message = json.loads(browser.ws.recv(timeout=30))
            if message.get("id") == ident:
                if "error" in message:
                    raise RuntimeError(f"{method} failed: {message['error']}")
                return message.get("result", {})

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.ws is not None:
            with contextlib.suppress(Exception):
                self.ws.close()
        stop_group(self.proc)
        shutil.rmtree(self.profile, ignore_errors=True)
