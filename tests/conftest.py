"""Test-wide setup: a private AIRFLOW_HOME before Airflow is imported, the DexCare sandbox, and PostgreSQL.

PostgreSQL is an embedded server from the ``pgserver`` wheel (PostgreSQL 16, starts in about a second, also
as root), shared by the session; set ``DEXCARE_TEST_POSTGRES_URI`` to run against another server instead.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile
from collections.abc import Iterator

import psycopg
import pytest

_AIRFLOW_HOME = tempfile.mkdtemp(prefix="dexcare-test-airflow-home-")
os.environ["AIRFLOW_HOME"] = _AIRFLOW_HOME
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "True")

# Distinctive, so token-hygiene tests can search captured output for it.
SANDBOX_TOKEN = "dc-SECRET-test-key-7f3a9c41"


@pytest.fixture
def sandbox():
    """A fresh sandbox on a free loopback port, fast enough for tests (report ready in ~0.3 s)."""
    from dexcare.sandbox import SandboxServer

    with SandboxServer(token=SANDBOX_TOKEN, queue_seconds=0.1, run_seconds=0.2, visits_per_day=20) as server:
        yield server


@pytest.fixture
def dexcare_conn_id(sandbox, monkeypatch) -> str:
    """``dexcare_default`` pointing at the sandbox, given the way users give it: an env var in JSON form."""
    monkeypatch.setenv(
        "AIRFLOW_CONN_DEXCARE_DEFAULT",
        json.dumps({"conn_type": "dexcare", "host": sandbox.url, "password": SANDBOX_TOKEN}),
    )
    return "dexcare_default"


@pytest.fixture
def forward_proxy(tmp_path):
    """A real forward proxy (proxy.py) on a free loopback port that records every request it relays."""
    from tests.forward_proxy import ForwardProxy

    workdir = tmp_path / "forward-proxy"
    workdir.mkdir()
    with ForwardProxy(workdir) as proxy:
        yield proxy


@pytest.fixture(scope="session")
def pg_uri() -> Iterator[str]:
    uri = os.environ.get("DEXCARE_TEST_POSTGRES_URI")
    if uri:
        yield uri
        return
    import pgserver

    datadir = tempfile.mkdtemp(prefix="dexcare-test-pg-")
    server = pgserver.get_server(datadir, cleanup_mode="stop")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()
        # pgserver registers the same cleanup at exit; it would log to pytest's closed streams.
        atexit.unregister(server._cleanup)
        shutil.rmtree(datadir, ignore_errors=True)


@pytest.fixture
def admin(pg_uri: str) -> Iterator[psycopg.Connection]:
    """An autocommit connection for setup, inspection and sabotage."""
    with psycopg.connect(pg_uri, autocommit=True) as conn:
        yield conn
