"""Test-wide setup: a private AIRFLOW_HOME before Airflow is imported, the shared fixtures, and the markers.

Fixtures: ``sandbox`` (a fast DexCare sandbox), ``slow_sandbox`` (reports stay RUNNING for a minute),
``dexcare_conn_id`` (``dexcare_default`` pointing at the sandbox), ``forward_proxy`` (a real proxy on
loopback), ``pg_uri`` and ``admin`` (PostgreSQL). PostgreSQL is an embedded server from the ``pgserver``
wheel (PostgreSQL 16, starts in about a second, also as root), shared by the session; set
``DEXCARE_TEST_POSTGRES_URI`` to run against another server instead.

Markers are given by where a test lives and what it uses (``pytest_collection_modifyitems``), so a test
added under ``tests/e2e`` or ``tests/compose`` is marked without anyone remembering to: ``e2e``,
``compose``, ``slow`` and ``postgres`` (see pyproject.toml). The fast loop (``make test-fast``) is
``pytest -m "not e2e and not compose and not slow"``.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.support.helpers import SANDBOX_TOKEN, set_connection

_AIRFLOW_HOME = tempfile.mkdtemp(prefix="dexcare-test-airflow-home-")
os.environ["AIRFLOW_HOME"] = _AIRFLOW_HOME
# Its task logs and metadata database go with the session: a run of the suite leaves nothing in /tmp.
atexit.register(shutil.rmtree, _AIRFLOW_HOME, ignore_errors=True)
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "True")

# --- markers ---------------------------------------------------------------------------------------------------

#: Directories whose every test gets the marker.
MARKED_DIRECTORIES = {"tests/e2e/": ("e2e", "slow"), "tests/compose/": ("compose",)}
#: Tests that take more than a few seconds each (a real ``airflow`` command, the demo, the benchmark).
SLOW_FILES = (
    "tests/dags/test_daily_dag_runs.py",
    "tests/dags/test_dags_test.py",
    "tests/load/test_load_dag.py",
    "tests/load/test_benchmark_smoke.py",
    "tests/storage/test_benchmark_smoke.py",
    "tests/storage/test_object_store.py",
    "tests/test_demo.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    root = Path(config.rootpath)
    for item in items:
        try:
            where = Path(item.path).resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            continue
        for directory, markers in MARKED_DIRECTORIES.items():
            if where.startswith(directory):
                for marker in markers:
                    item.add_marker(marker)
        if where in SLOW_FILES:
            item.add_marker("slow")
        if "pg_uri" in getattr(item, "fixturenames", ()):
            item.add_marker("postgres")


# --- DexCare ---------------------------------------------------------------------------------------------------


@pytest.fixture
def sandbox():
    """A fresh sandbox on a free loopback port, fast enough for tests (report ready in ~0.3 s)."""
    from dexcare.sandbox import SandboxServer

    with SandboxServer(token=SANDBOX_TOKEN, queue_seconds=0.1, run_seconds=0.2, visits_per_day=20) as server:
        yield server


@pytest.fixture
def dexcare_conn_id(sandbox, monkeypatch) -> str:
    """``dexcare_default`` pointing at the sandbox."""
    set_connection(monkeypatch, "dexcare_default", sandbox.url, SANDBOX_TOKEN)
    return "dexcare_default"


@pytest.fixture
def slow_sandbox(monkeypatch):
    """A sandbox whose reports stay RUNNING for a minute, for deadlines and restarts; ``dexcare_default``
    points at it."""
    from dexcare.sandbox import SandboxServer

    with SandboxServer(token=SANDBOX_TOKEN, queue_seconds=0.1, run_seconds=60, visits_per_day=5) as server:
        set_connection(monkeypatch, "dexcare_default", server.url, SANDBOX_TOKEN)
        yield server


@pytest.fixture
def forward_proxy(tmp_path):
    """A real forward proxy (proxy.py) on a free loopback port that records every request it relays."""
    from tests.support.forward_proxy import ForwardProxy

    workdir = tmp_path / "forward-proxy"
    workdir.mkdir()
    with ForwardProxy(workdir) as proxy:
        yield proxy


# --- PostgreSQL ------------------------------------------------------------------------------------------------


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
