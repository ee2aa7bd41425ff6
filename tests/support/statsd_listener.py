"""A real StatsD server on loopback, as far as the tests need one: a UDP socket that keeps every metric line.

Airflow's StatsD client (the ``statsd`` package) sends ``name:value|type`` lines, several per datagram when it
batches; this keeps them in arrival order, so a test reads exactly what a StatsD daemon would have received.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    name: str
    value: float
    kind: str  # "g" gauge, "ms" timer, "c" counter


class StatsdListener:
    def __init__(self) -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._socket.bind(("127.0.0.1", 0))
        self._socket.settimeout(0.1)
        self.port = self._socket.getsockname()[1]
        self.received: list[Metric] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._listen, name="statsd-listener", daemon=True)

    def __enter__(self) -> StatsdListener:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._socket.close()

    def _listen(self) -> None:
        while not self._stop.is_set():
            try:
                data = self._socket.recv(65535)
            except TimeoutError:
                continue
            for line in data.decode("utf-8", "replace").splitlines():
                name, _, rest = line.partition(":")
                value, _, kind = rest.partition("|")
                self.received.append(Metric(name, float(value), kind.split("|")[0]))

    def named(self, prefix: str) -> dict[str, Metric]:
        """The last value of every metric whose name starts with ``prefix``, after a moment for stragglers."""
        time.sleep(0.3)
        return {m.name: m for m in self.received if m.name.startswith(prefix)}
