"""The scripts the containers run, run here: the postgres init script against a real PostgreSQL (the
embedded one the suite already uses, with its psql), the Airflow init step with `airflow` stubbed so it
needs no database migration."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import psycopg
import pytest
from psycopg import sql

from tests.compose import compose_support as cs


def _psql_bin_dir() -> str:
    import pgserver

    return str(Path(pgserver.__file__).parent / "pginstall" / "bin")


@pytest.fixture
def metadata_db(admin: psycopg.Connection) -> Iterator[str]:
    """A stand-in for the Airflow metadata database (POSTGRES_DB), and cleanup of what the script creates."""
    suffix = uuid.uuid4().hex[:8]
    name = f"airflow_meta_{suffix}"
    admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield name
    for db in (name, f"warehouse_{suffix}"):
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db)))
    admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(f"loader_{suffix}")))


def test_postgres_init_creates_the_warehouse(pg_uri: str, admin: psycopg.Connection, metadata_db: str) -> None:
    suffix = metadata_db.rsplit("_", 1)[1]
    warehouse, user = f"warehouse_{suffix}", f"loader_{suffix}"
    # A password that would break naive quoting: psql variables must quote it.
    password = "it's; DROP ROLE postgres; --\"x"
    parts = urlsplit(pg_uri)
    query = parse_qs(parts.query)
    env = {
        **os.environ,
        "PATH": _psql_bin_dir() + os.pathsep + os.environ["PATH"],
        "PGHOST": query.get("host", [parts.hostname or ""])[0],
        "PGPORT": str(parts.port or 5432),
        "PGPASSWORD": parts.password or "",
        "POSTGRES_USER": parts.username or "postgres",
        "POSTGRES_DB": metadata_db,
        "WAREHOUSE_DB": warehouse,
        "WAREHOUSE_USER": user,
        "WAREHOUSE_PASSWORD": password,
    }
    proc = subprocess.run(["bash", str(cs.POSTGRES_INIT)], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert password not in proc.stdout + proc.stderr

    def has(privilege: str, database: str) -> bool:
        row = admin.execute("SELECT has_database_privilege(%s, %s, %s)", (user, database, privilege)).fetchone()
        return bool(row and row[0])

    owner = admin.execute("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s", (warehouse,)).fetchone()
    assert owner == (user,)
    assert has("CONNECT", warehouse) and has("CREATE", warehouse)  # the loader creates its schema
    assert not has("CONNECT", metadata_db), "the warehouse login must not reach Airflow's database"
    role = admin.execute(
        "SELECT rolcanlogin, rolsuper, rolpassword IS NOT NULL FROM pg_authid WHERE rolname = %s", (user,)
    ).fetchone()
    assert role == (True, False, True)
    assert admin.execute("SELECT 1 FROM pg_roles WHERE rolname = 'postgres'").fetchone() == (1,)


def test_postgres_init_requires_the_warehouse_password() -> None:
    env = {**os.environ, "WAREHOUSE_DB": "w", "WAREHOUSE_USER": "u", "WAREHOUSE_PASSWORD": ""}
    proc = subprocess.run(["bash", str(cs.POSTGRES_INIT)], env=env, capture_output=True, text=True, timeout=30)
    assert proc.returncode != 0
    assert "WAREHOUSE_PASSWORD" in proc.stderr


@pytest.fixture
def stub_airflow(tmp_path: Path) -> Path:
    """An `airflow` that records its arguments: the init step's own logic runs, no migration happens."""
    stub_dir = tmp_path / "bin"
    stub_dir.mkdir()
    stub = stub_dir / "airflow"
    stub.write_text('#!/usr/bin/env bash\necho "$*" >> "$STUB_LOG"\n')
    stub.chmod(stub.stat().st_mode | stat.S_IXUSR)
    return stub_dir


def _run_init(stub_dir: Path, tmp_path: Path, **overrides: str) -> subprocess.CompletedProcess[str]:
    password_file = tmp_path / "auth" / "passwords.json"
    env = {
        **os.environ,
        # The stub first; then this interpreter, which has Airflow for the connection summary.
        "PATH": os.pathsep.join([str(stub_dir), str(Path(sys.executable).parent), os.environ["PATH"]]),
        "STUB_LOG": str(tmp_path / "airflow-calls.log"),
        "AIRFLOW_ADMIN_USERNAME": "admin",
        "AIRFLOW_ADMIN_PASSWORD": 'p"a\\ss word',
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(password_file),
        "AIRFLOW_CONN_DEXCARE_DEFAULT": json.dumps(
            {"conn_type": "dexcare", "host": "http://dexcare-sandbox:8080", "password": "init-test-token-91c2"}
        ),
        "AIRFLOW_CONN_DEXCARE_WAREHOUSE": json.dumps(
            {"conn_type": "postgres", "host": "postgres", "port": 5432, "login": "u", "password": "wh-pw-3d8e"}
        ),
        **overrides,
    }
    return subprocess.run(["bash", str(cs.AIRFLOW_INIT)], env=env, capture_output=True, text=True, timeout=60)


def test_airflow_init_migrates_and_sets_the_login(stub_airflow: Path, tmp_path: Path) -> None:
    password_file = tmp_path / "auth" / "passwords.json"
    password_file.parent.mkdir()
    password_file.write_text('{"admin": "old", "someone": "else"}\n')
    proc = _run_init(stub_airflow, tmp_path)
    assert proc.returncode == 0, proc.stderr
    calls = (tmp_path / "airflow-calls.log").read_text().splitlines()
    assert calls == ["db migrate", "providers get airflow-provider-dexcare"]
    # Exactly the configured user, with the password from .env, in the format the simple auth manager reads.
    assert json.loads(password_file.read_text()) == {"admin": 'p"a\\ss word'}
    assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
    assert "connection dexcare_default: type=dexcare host=http://dexcare-sandbox:8080" in proc.stdout
    output = proc.stdout + proc.stderr
    for secret in ('p"a\\ss word', "init-test-token-91c2", "wh-pw-3d8e"):
        assert secret not in output


def test_airflow_init_stops_without_a_password(stub_airflow: Path, tmp_path: Path) -> None:
    proc = _run_init(stub_airflow, tmp_path, AIRFLOW_ADMIN_PASSWORD="")
    assert proc.returncode != 0
    assert "AIRFLOW_ADMIN_PASSWORD is not set" in proc.stderr
    assert not (tmp_path / "airflow-calls.log").exists(), "nothing runs before the settings are checked"


def test_airflow_init_stops_when_migration_fails(stub_airflow: Path, tmp_path: Path) -> None:
    (stub_airflow / "airflow").write_text('#!/usr/bin/env bash\necho "$*" >> "$STUB_LOG"\nexit 3\n')
    proc = _run_init(stub_airflow, tmp_path)
    assert proc.returncode == 3
    assert (tmp_path / "airflow-calls.log").read_text().splitlines() == ["db migrate"]
    assert not (tmp_path / "auth" / "passwords.json").exists()
