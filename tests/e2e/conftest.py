"""What every real-Airflow scenario shares: the sandbox, Airflow's metadata database and a fresh warehouse schema."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from urllib.parse import urlparse

import psycopg
import pytest
from dexcare.sandbox import SandboxServer
from psycopg import sql

from tests.e2e.stack import DEXCARE_KEY, VISITS_PER_DAY
from tests.support.warehouse import scratch_schema


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SandboxServer]:
    """One sandbox for the module; each scenario sets how long its reports stay QUEUED and RUNNING."""
    with SandboxServer(token=DEXCARE_KEY, seed=0, visits_per_day=VISITS_PER_DAY) as server:
        yield server


@pytest.fixture(scope="module")
def metadata_db(pg_uri: str) -> Iterator[str]:
    """Airflow's metadata database: its own database on the embedded PostgreSQL, beside the warehouse's.

    SQLite is what ``airflow standalone`` uses, but with four components and the CLI writing at once it fails
    them at random with "database is locked" (seen here on ``airflow backfill create``).
    """
    name = f"airflow_e2e_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_uri, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    parsed = urlparse(pg_uri)
    yield parsed._replace(scheme="postgresql+psycopg2", path=f"/{name}").geturl()
    with psycopg.connect(pg_uri, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def schema(pg_uri: str) -> Iterator[str]:
    """A fresh warehouse schema per scenario, dropped afterwards."""
    with scratch_schema(pg_uri, "dexcare_e2e") as name:
        yield name
