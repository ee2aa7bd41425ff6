"""Sandbox fixtures: servers whose reports succeed at once, and clients with and without the token."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from dexcare.sandbox import SandboxServer

from tests.support.helpers import SANDBOX_TOKEN
from tests.support.sandbox_api import Api


@pytest.fixture
def make_server() -> Iterator[Callable[..., SandboxServer]]:
    """Start servers with test defaults (instant reports, small days); all stopped at teardown."""
    servers: list[SandboxServer] = []

    def make(**kwargs: Any) -> SandboxServer:
        options: dict[str, Any] = {"token": SANDBOX_TOKEN, "queue_seconds": 0.0, "run_seconds": 0.0,
                                   "visits_per_day": 20}
        options.update(kwargs)
        server = SandboxServer(**options).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def fast(make_server: Callable[..., SandboxServer]) -> SandboxServer:
    """Reports SUCCEEDED as soon as they are started."""
    return make_server()


@pytest.fixture
def api(fast: SandboxServer) -> Api:
    return Api(fast.url)
