"""A real forward proxy on loopback (``proxy.py`` in a subprocess) that records every request it relays.

proxy.py's own access log has one line per client connection, so a keep-alive session's second request
would not show; the ``RequestRecorder`` plugin below is called by proxy.py for every request, pipelined
ones included, and appends ``METHOD host:port/path`` (never a header, so never the key) to a file.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from proxy.http.proxy import HttpProxyBasePlugin

from tests.support.processes import stop_group, wait_for

ROOT = Path(__file__).resolve().parents[2]


class RequestRecorder(HttpProxyBasePlugin):
    """Runs inside the proxy's worker processes; the file comes from the environment they inherit."""

    def handle_client_request(self, request):  # type: ignore[no-untyped-def]
        method = (request.method or b"").decode("ascii", "replace")
        path = (request.path or b"").decode("ascii", "replace")
        if method == "CONNECT":
            path = ""
        target = f"{(request.host or b'').decode('ascii', 'replace')}:{request.port}"
        with open(os.environ["DEXCARE_TEST_PROXY_LOG"], "a") as log:
            log.write(f"{method} {target}{path}\n")
        return request


class ForwardProxy:
    """``proxy.py`` on a free loopback port; ``requests`` lists what went through it, oldest first."""

    def __init__(self, workdir: Path, *, basic_auth: str | None = None) -> None:
        self.workdir = workdir
        self.basic_auth = basic_auth
        self._log = workdir / "relayed.log"
        self._process: subprocess.Popen | None = None
        self.port = 0

    def start(self, limit: float = 60.0) -> ForwardProxy:
        port_file = self.workdir / "port"
        args = [
            sys.executable, "-m", "proxy",
            "--hostname", "127.0.0.1", "--port", "0", "--port-file", str(port_file),
            "--num-acceptors", "1", "--num-workers", "1",
            "--plugins", f"{__name__}.RequestRecorder",
            "--log-file", str(self.workdir / "proxy.log"), "--log-level", "WARNING",
        ]  # fmt: skip
        if self.basic_auth:
            args += ["--basic-auth", self.basic_auth]
        self._log.touch()
        env = {
            **os.environ,
            "DEXCARE_TEST_PROXY_LOG": str(self._log),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        }
        # Its own process group: proxy.py forks acceptor and worker processes that inherit the listening
        # socket, and stopping only the parent would leave a port that accepts and never answers.
        self._process = subprocess.Popen(
            args, cwd=self.workdir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            start_new_session=True,
        )
        process = self._process

        def listening_port() -> int | None:
            if process.poll() is not None:
                raise RuntimeError(f"proxy.py exited at start: {process.stderr.read().decode()[-2000:]}")
            text = port_file.read_text().strip() if port_file.exists() else ""
            return int(text) if text.isdigit() and _listening(int(text)) else None

        try:
            self.port = wait_for("proxy.py to listen on the port it wrote", listening_port, limit, interval=0.05)
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"proxy.py did not listen within {limit:.0f} s") from None
        return self

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        # sweep: any acceptor or worker the parent left behind would keep the port open.
        stop_group(process, grace=15, reap=15, sweep=True)
        if process.stderr is not None:
            process.stderr.close()
        # Until the port is closed: while a leftover child holds it, it accepts and never answers, and a test
        # that stops the proxy to see a connection error would hang instead.
        port = self.port
        if port:
            wait_for(
                f"proxy.py to stop listening on port {port} after it was stopped",
                lambda: not _listening(port), 15, interval=0.05,
            )  # fmt: skip

    def __enter__(self) -> ForwardProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url_with(self, credentials: str) -> str:
        return f"http://{credentials}@127.0.0.1:{self.port}"

    @property
    def requests(self) -> list[str]:
        return self._log.read_text().splitlines()


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0
