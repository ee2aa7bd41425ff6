"""Real warehouses for the load tests, with nothing installed by hand.

PostgreSQL is an embedded server from the ``pgserver`` wheel (PostgreSQL 16, starts in about a second, also
as root), or ``DEXCARE_TEST_POSTGRES_URI``. SQL Server is whatever ``DEXCARE_TEST_MSSQL_URI`` names (no
SQL Server can run on these machines; ``make test-mssql`` with the compose ``mssql`` profile gives one).
Tests that take the ``warehouse`` fixture (through ``load`` and ``schema``) run once per warehouse.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from dexcare.load.loader import LoadOptions, load_reports

from tests.support.warehouse import MSSQL_URI_VARIABLE, MsSqlWarehouse, PostgresWarehouse, Warehouse, mssql_uri

END = dt.date(2026, 11, 20)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A scenario's run is marked with its warehouse (``postgres`` or ``mssql``) from the callspec: tests/conftest.py
    marks by fixture names, and the parametrised ``warehouse`` asks for ``pg_uri`` only once it knows which
    warehouse it is. Marks on the fixture's params would be lost by a test that parametrises ``warehouse``
    itself (``indirect=True``), which would then escape ``make test-mssql``'s ``-m mssql``."""
    for item in items:
        callspec = getattr(item, "callspec", None)
        name = callspec.params.get("warehouse") if callspec is not None else None
        if name in ("postgres", "mssql"):
            item.add_marker(name)


@pytest.fixture(params=["postgres", "mssql"])
def warehouse(request: pytest.FixtureRequest) -> Iterator[Warehouse]:
    """Each correctness scenario runs on every warehouse: PostgreSQL for real in every run, SQL Server for real
    when ``DEXCARE_TEST_MSSQL_URI`` names one; otherwise its run is skipped, saying why."""
    if request.param == "postgres":
        found: Warehouse = PostgresWarehouse(request.getfixturevalue("pg_uri"))
    else:
        uri = mssql_uri()
        if uri is None:
            pytest.skip(f"no SQL Server: set {MSSQL_URI_VARIABLE} (make test-mssql); none can run on this machine")
        found = MsSqlWarehouse(uri)
    yield found
    found.close()


@pytest.fixture
def schema(warehouse: Warehouse) -> Iterator[str]:
    """A schema of its own per test, dropped afterwards, so tests never see each other's tables."""
    name = warehouse.new_schema()
    yield name
    warehouse.drop_schema(name)


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
def load(warehouse: Warehouse, schema: str) -> Callable[..., dict[str, Any]]:
    """``load(report, ..., **LoadOptions fields)`` on a fresh connection to the scenario's warehouse."""

    def run(*reports: dict[str, Any], **options: Any) -> dict[str, Any]:
        kwargs = {k: options.pop(k) for k in ("dag_id", "run_id", "run_date", "opener") if k in options}
        connection = warehouse.connect()
        try:
            return load_reports(connection, list(reports), dialect=warehouse.name,
                                options=LoadOptions(schema=schema, **options), **kwargs)
        finally:
            connection.close()

    return run


def postgres_only(test: Any) -> Any:
    """For what only PostgreSQL has (ctid, xmin, COLLATE "C", pg_stat): the scenario runs on it alone."""
    return pytest.mark.parametrize("warehouse", ["postgres"], indirect=True)(test)
