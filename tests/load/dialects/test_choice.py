"""The warehouse's dialect is chosen once, from the Airflow connection's type, and each dialect owns its code.

The choice is one table (``dexcare.load.dialects.CONN_TYPES``); a driver connection handed in directly comes with
its dialect named, never guessed from the driver's class. The shared reading and error path (csv_stream,
records, diagnostics) import no dialect: the frames read files through them without psycopg or pymssql.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from dexcare.exceptions import DexCareLoadError, DexCareValidationError
from dexcare.load.connection import warehouse
from dexcare.load.dialects import dialect_for
from dexcare.load.dialects.mssql.dialect import MsSqlDialect
from dexcare.load.dialects.postgres.dialect import PostgresDialect
from dexcare.load.loader import load_reports


@pytest.mark.parametrize(("conn_type", "expected"), [
    ("postgres", PostgresDialect), ("postgresql", PostgresDialect), ("Postgres", PostgresDialect),
    ("mssql", MsSqlDialect),
])
def test_each_warehouse_connection_type_has_one_dialect(conn_type, expected) -> None:
    assert dialect_for(conn_type) is expected


def test_the_connection_type_picks_the_dialect_and_the_providers_hook(monkeypatch) -> None:
    """No driver is asked: the hook is made, nothing connects (these hosts do not exist)."""
    from airflow.providers.microsoft.mssql.hooks.mssql import MsSqlHook
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    monkeypatch.setenv("AIRFLOW_CONN_WH_PG", json.dumps({"conn_type": "postgresql", "host": "db.invalid"}))
    monkeypatch.setenv("AIRFLOW_CONN_WH_MS", json.dumps({"conn_type": "mssql", "host": "sql.invalid"}))
    pg, ms = warehouse("wh_pg"), warehouse("wh_ms")
    assert (pg.dialect, type(pg.hook), pg.dialect_class) == ("postgres", PostgresHook, PostgresDialect)
    assert (ms.dialect, type(ms.hook), ms.dialect_class) == ("mssql", MsSqlHook, MsSqlDialect)
    assert ms.hook.connection.port == 1433  # MsSqlHook would ask FreeTDS for port "None"


def test_a_dialect_no_warehouse_has_is_refused_naming_the_choices() -> None:
    with pytest.raises(DexCareLoadError, match=r"^Unknown warehouse dialect 'mysql'; choose one of: postgres, mssql"):
        load_reports(object(), [], dialect="mysql")


def test_a_driver_connection_without_its_dialect_is_refused(pg_uri) -> None:
    """Handed a connection instead of a connection id, read_table_window is told its dialect, not guessing it."""
    pytest.importorskip("pandas")
    import psycopg
    from dexcare.frames.warehouse import read_table_window

    refused = pytest.raises(DexCareValidationError, match=r"needs dialect= with conn \(one of: postgres, mssql\)")
    with psycopg.connect(pg_uri) as conn, refused:
        read_table_window(conn=conn, report_type="virtual", start_date="2026-11-01", end_date="2026-11-02")


def test_the_shared_reading_and_error_path_import_no_dialect_and_no_driver() -> None:
    """A file is read (by the load and by the frames) without loading either warehouse's code."""
    code = (
        "import sys\n"
        "import dexcare.load.csv_stream, dexcare.load.records, dexcare.load.diagnostics, dexcare.frames.report\n"
        "print('loaded:', sorted(m for m in sys.modules if m.startswith(('dexcare.load.dialects.', 'psycopg', "
        "'pymssql'))))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}  # the modules under test, not an installed copy
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True,
                          timeout=120)
    assert [line for line in done.stdout.splitlines() if line.startswith("loaded:")] == ["loaded: []"]
