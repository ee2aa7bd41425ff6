"""Test-wide setup: a private AIRFLOW_HOME before Airflow is imported, and the DexCare sandbox fixtures."""

from __future__ import annotations

import json
import os
import tempfile

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
