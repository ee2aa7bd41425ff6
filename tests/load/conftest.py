"""A real PostgreSQL for the load tests, with nothing installed by hand.

By default an embedded server from the ``pgserver`` wheel (PostgreSQL 16, starts in about a second, also
as root); set ``DEXCARE_TEST_POSTGRES_URI`` to run against another server instead. Every test gets its own
schema, dropped afterwards, so tests never see each other's tables.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from dexcare.load.loader import LoadOptions, load_reports

END = dt.date(2026, 11, 20)


@pytest.fixture
def schema(admin: psycopg.Connection) -> Iterator[str]:
    name = f"dexcare_t_{uuid.uuid4().hex[:12]}"
    yield name
    admin.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


@pytest.fixture
def conn(pg_uri: str) -> Iterator[psycopg.Connection]:
    """The loader's connection: not autocommit, as PostgresHook hands it out."""
    with psycopg.connect(pg_uri) as connection:
        yield connection


@pytest.fixture
def write_csv(tmp_path: Path) -> Callable[..., Path]:
    counter = iter(range(10_000))

    def write(content: str | bytes, name: str | None = None) -> Path:
        path = tmp_path / (name or f"report_{next(counter)}.csv")
        path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
        return path

    return write


def report(
    path: Path | str,
    report_type: str = "virtual",
    *,
    end: dt.date | str | None = END,
    start: dt.date | str | None = None,
    report_id: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A download result as DexCareDownloadReportOperator returns it."""
    if isinstance(end, dt.date):
        end = end.isoformat()
    if isinstance(start, dt.date):
        start = start.isoformat()
    if end is not None and start is None:
        start = (dt.date.fromisoformat(end) - dt.timedelta(days=9)).isoformat()
    return {
        "uri": str(path),
        "bytes": Path(path).stat().st_size if Path(str(path)).exists() else None,
        "sha256": None,
        "rows": None,
        "report_id": report_id or str(uuid.uuid4()),
        "report_type": report_type,
        "start_date": start,
        "end_date": end,
        **extra,
    }


@pytest.fixture
def load(conn: psycopg.Connection, schema: str) -> Callable[..., dict[str, Any]]:
    def run(*reports: dict[str, Any], **options: Any) -> dict[str, Any]:
        kwargs = {k: options.pop(k) for k in ("dag_id", "run_id", "run_date", "opener") if k in options}
        return load_reports(conn, list(reports), options=LoadOptions(schema=schema, **options), **kwargs)

    return run


def rows(admin: psycopg.Connection, schema: str, table: str, *, lineage: bool = False) -> list[dict[str, Any]]:
    """Every row, ordered by key; lineage columns only when asked."""
    from psycopg.rows import dict_row

    with admin.cursor(row_factory=dict_row) as cur:
        cur.execute(f'SELECT * FROM "{schema}"."{table}" ORDER BY visit_id')
        result = cur.fetchall()
    if not lineage:
        result = [{k: v for k, v in r.items() if not k.startswith("_dexcare_")} for r in result]
    return result


def snapshot(admin: psycopg.Connection, schema: str) -> dict[str, Any]:
    """Every table of the schema with row contents and physical identity (ctid, xmin), for 'untouched'."""
    tables = [
        r[0]
        for r in admin.execute("SELECT tablename FROM pg_tables WHERE schemaname = %s ORDER BY 1", [schema]).fetchall()
    ]
    out: dict[str, Any] = {}
    for table in tables:
        cols = [
            r[0]
            for r in admin.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = %s AND table_name = %s "
                "ORDER BY ordinal_position",
                [schema, table],
            ).fetchall()
        ]
        data = admin.execute(
            f'SELECT ctid::text, xmin::text, t::text FROM "{schema}"."{table}" t ORDER BY ctid'
        ).fetchall()
        out[table] = (cols, data)
    return out
