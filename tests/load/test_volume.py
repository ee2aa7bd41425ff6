"""The volume guard against real loads: the baseline is what earlier loads of small generated reports left in
``load_audit`` on the embedded PostgreSQL (SQL Server's query is checked offline in dialects/mssql/test_offline.py)."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from dexcare.exceptions import DexCareFinalError, DexCareSchemaError, DexCareVolumeError
from dexcare.load.options import LoadOptions
from dexcare.report import ReportType

from tests.load.conftest import END, postgres_only, report

HEADER = "visitId,visitStatus\n"
SECRET = "SECRET-STATUS-4"
EMPTY_ID = "0e0e0e0e-0000-4000-8000-000000000001"


def csv(rows: int, day: int) -> str:
    return HEADER + "".join(f"d{day}-v{i},{SECRET}\n" for i in range(rows))


def seed(load: Callable[..., dict[str, Any]], write_csv: Callable[..., Path], days: int, *, rows: int = 20,
         window: int = 9, report_type: str = "virtual") -> list[dict[str, Any]]:
    """``days`` normal daily loads (rows around ``rows``) of ``window``-day windows ending before END."""
    summaries = []
    for day in range(days):
        end = END - dt.timedelta(days=days - day)
        path = write_csv(csv(rows + (day % 3) - 1, day))
        summaries.append(load(report(path, report_type, end=end, start=end - dt.timedelta(days=window))))
    return summaries


@postgres_only
def test_an_empty_report_after_14_normal_days_fails_before_the_commit_and_writes_nothing(
        load, write_csv, warehouse, schema, caplog) -> None:
    seed(load, write_csv, 14)
    before = (len(warehouse.rows(schema, "avr_virtual")), len(warehouse.audit(schema)))
    with pytest.raises(DexCareVolumeError) as raised:
        load(report(write_csv(HEADER), report_id=EMPTY_ID))
    error = raised.value
    assert isinstance(error, DexCareFinalError)  # not retried by Airflow: the same report is empty again
    assert error.counts == {"table": "avr_virtual", "report_type": "virtual", "rows": 0,
                            "baseline_median": 20.0, "baseline_loads": 14}
    message = str(error)
    assert "0 rows" in message and "median of 20 rows" in message and "14 virtual load(s)" in message
    assert 'accept_volume ["virtual"]' in message and "Nothing was written" in message
    assert (len(warehouse.rows(schema, "avr_virtual")), len(warehouse.audit(schema))) == before


@postgres_only
def test_a_half_size_report_warns_and_loads_with_the_verdict_in_the_summary(load, write_csv, schema, caplog) -> None:
    seed(load, write_csv, 14)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="dexcare.load.loader"):
        summary = load(report(write_csv(csv(9, 99))))
    volume = summary["tables"]["avr_virtual"]["volume"]
    assert volume == {"verdict": "warn", "rows": 9, "baseline_median": 20.0, "baseline_loads": 14,
                      "ratio": 0.45, "min_share": 0.5}
    assert summary["tables"]["avr_virtual"]["inserted"] == 9
    assert summary["reports"][0]["volume"] == volume
    warned = [r.getMessage() for r in caplog.records if "Volume guard" in r.getMessage()]
    assert len(warned) == 1 and "0.45 of the median 20" in warned[0] and "warns below 0.5" in warned[0]
    assert SECRET not in caplog.text


@postgres_only
def test_the_share_is_tuned_per_report_type(load, write_csv, schema) -> None:
    seed(load, write_csv, 5)
    tuned = load(report(write_csv(csv(9, 99))), volume_min_share={"virtual": 0.4, "*": 0.9})
    assert tuned["tables"]["avr_virtual"]["volume"]["verdict"] == "ok"
    assert tuned["tables"]["avr_virtual"]["volume"]["min_share"] == 0.4
    assert load(report(write_csv(csv(17, 98))), volume_min_share=0.9)["tables"]["avr_virtual"]["volume"][
        "verdict"] == "warn"


@postgres_only
def test_the_first_days_pass_without_a_verdict_said_once_per_run(load, write_csv, schema, caplog) -> None:
    with caplog.at_level(logging.INFO, logger="dexcare.load.loader"):
        first = load(report(write_csv(csv(20, 0))), report(write_csv(csv(0, 1)), end=END - dt.timedelta(days=1)))
    said = [r.getMessage() for r in caplog.records if "no verdict" in r.getMessage()]
    assert said == ["Volume guard: no verdict for virtual reports of 9-day windows yet: 0 earlier load(s) in "
                    "load_audit, 5 make a baseline."]
    assert first["tables"]["avr_virtual"]["volume"]["verdict"] == "no_baseline"
    assert first["tables"]["avr_virtual"]["volume"]["baseline_median"] is None
    seed(load, write_csv, 3)
    assert load(report(write_csv(csv(20, 50))))["tables"]["avr_virtual"]["volume"] == {
        "verdict": "ok", "rows": 20, "baseline_median": 20.0, "baseline_loads": 5, "ratio": 1.0, "min_share": 0.5}


@postgres_only
def test_accept_volume_lets_one_run_through(load, write_csv, warehouse, schema) -> None:
    seed(load, write_csv, 14)
    with pytest.raises(DexCareVolumeError):
        load(report(write_csv(HEADER)), accept_volume=["retail"])  # another report type's acceptance
    summary = load(report(write_csv(HEADER), report_id=EMPTY_ID), accept_volume=["virtual"])
    assert summary["tables"]["avr_virtual"]["volume"]["verdict"] == "accepted"
    assert warehouse.audit(schema)[-1]["report_id"] == EMPTY_ID
    assert load(report(write_csv(HEADER)), accept_volume=True)["tables"]["avr_virtual"]["volume"]["verdict"] == (
        "accepted")


@postgres_only
def test_another_window_length_is_not_part_of_the_baseline(load, write_csv, schema) -> None:
    seed(load, write_csv, 14)
    seed(load, write_csv, 3, rows=200, window=29)
    long_window = load(report(write_csv(HEADER), start=END - dt.timedelta(days=29)))
    assert long_window["tables"]["avr_virtual"]["volume"]["verdict"] == "no_baseline"
    assert long_window["tables"]["avr_virtual"]["volume"]["baseline_loads"] == 3
    daily = load(report(write_csv(csv(20, 77))))["tables"]["avr_virtual"]["volume"]
    assert (daily["verdict"], daily["baseline_median"]) == ("ok", 20.0)  # the 200-row 30-day loads are not in it


@postgres_only
def test_the_baseline_query_uses_the_audit_index(load, write_csv, warehouse, schema) -> None:
    seed(load, write_csv, 1)
    with warehouse.connect() as conn:
        conn.execute("SET enable_seqscan = off")
        plan = "\n".join(row[0] for row in conn.execute(
            f'EXPLAIN SELECT rows_in_file FROM "{schema}".load_audit WHERE report_type = %s '
            "AND window_end - window_start = %s ORDER BY id DESC LIMIT %s", ["virtual", 9, 14]))
    assert "load_audit_volume" in plan


def test_bad_thresholds_and_acceptances_are_refused_naming_them() -> None:
    with pytest.raises(DexCareSchemaError, match=r"volume_min_share: 1\.5 is not a share"):
        LoadOptions(volume_min_share=1.5).min_share_for(ReportType.parse("virtual"))
    with pytest.raises(DexCareSchemaError, match="'clinic' is not a report type"):
        LoadOptions(volume_min_share={"clinic": 0.2}).min_share_for(ReportType.parse("virtual"))
    with pytest.raises(DexCareSchemaError, match="accept_volume: 'clinic' is not a report type"):
        LoadOptions(accept_volume=["clinic"]).accepts_volume(ReportType.parse("virtual"))
    assert LoadOptions(accept_volume="virtual, retail").accepts_volume(ReportType.parse("retail"))
    assert not LoadOptions(accept_volume="false").accepts_volume(ReportType.parse("retail"))


@postgres_only
def test_a_load_audit_another_role_owns_gets_a_warning_not_a_failed_load(pg_uri, admin, write_csv, schema,
                                                                         caplog) -> None:
    """An audit table made before the guard, by another role: CREATE INDEX would be refused (only its owner may),
    so the load goes on without it and says what the owner should run."""
    import uuid

    import psycopg
    from dexcare.load.dialects.postgres.dialect import AUDIT_DDL
    from dexcare.load.loader import load_reports
    from psycopg import sql

    role = f"dexcare_loader_{uuid.uuid4().hex[:8]}"
    admin.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    admin.execute(sql.SQL(AUDIT_DDL).format(table=sql.Identifier(schema, "load_audit")))
    admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    try:
        database = admin.info.dbname
        admin.execute(sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(sql.Identifier(database),
                                                                          sql.Identifier(role)))
        admin.execute(sql.SQL("GRANT USAGE, CREATE ON SCHEMA {} TO {}").format(sql.Identifier(schema),
                                                                               sql.Identifier(role)))
        admin.execute(sql.SQL("GRANT SELECT, INSERT ON {} TO {}").format(sql.Identifier(schema, "load_audit"),
                                                                         sql.Identifier(role)))
        with psycopg.connect(pg_uri, user=role) as conn, caplog.at_level(logging.WARNING):
            summary = load_reports(conn, [report(write_csv(csv(3, 0)))], dialect="postgres",
                                   options=LoadOptions(schema=schema))
        assert summary["tables"]["avr_virtual"]["volume"]["verdict"] == "no_baseline"
        assert "has no index load_audit_volume and this login does not own the table" in caplog.text
        assert "CREATE INDEX IF NOT EXISTS load_audit_volume ON" in caplog.text
    finally:
        admin.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
        admin.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
