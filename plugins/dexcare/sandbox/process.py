"""The sandbox as a child process, for callers whose memory or lifetime must not include the server's.

The demo and the memory tests need this; the token goes through the environment so it never shows in
``ps`` output.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from types import TracebackType

READY_PREFIX = "DexCare sandbox listening on "


class SandboxProcess:
    """``with SandboxProcess(token=..., args=["--visits-per-day", "40"]) as sandbox: sandbox.url``."""

    def __init__(
        self,
        *,
        token: str,
        host: str = "127.0.0.1",
        port: int = 0,
        args: Sequence[str] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        self._command = [sys.executable, "-m", "dexcare.sandbox", "--host", host, "--port", str(port), *args]
        self._env = {**(os.environ if env is None else env), "DEXCARE_SANDBOX_TOKEN": token}
        self.process: subprocess.Popen[str] | None = None
        self.url = ""

    def __enter__(self) -> SandboxProcess:
        self.process = subprocess.Popen(self._command, stdout=subprocess.PIPE, text=True, env=self._env)
        line = self.process.stdout.readline() if self.process.stdout else ""
        if not line.startswith(READY_PREFIX):
            self.stop()
            raise RuntimeError(f"The DexCare sandbox did not start: it printed {line.strip()!r}.")
        self.url = line[len(READY_PREFIX) :].strip()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def stop(self) -> None:
        proc = self.process
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
