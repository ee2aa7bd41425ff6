"""The daily run's volume guard and metrics, each run a real ``airflow dags test`` process: the guard refuses an
empty day against the baseline in ``load_audit`` and the ``accept_volume`` param lets it through; the metrics
arrive at a real StatsD server (a UDP listener on loopback), configured only through ``AIRFLOW__METRICS__*``."""

from __future__ import annotations

import datetime as dt
from typing import Any

import psycopg
import pytest
from dexcare.load.audit import audit_entry
from dexcare.load.csv_stream import open_report
from dexcare.load.dialects.postgres.dialect import PostgresDialect
from dexcare.load.options import LoadOptions

from tests.dags.conftest import VISITS_PER_DAY
from tests.support.statsd_listener import StatsdListener
from tests.support.warehouse import audit_rows


def seed_baseline(pg_uri: str, schema: str, report_type: str, rows: int, loads: int = 5) -> None:
    """Earlier daily loads of 10-day windows, written to load_audit the way the loader writes them."""
    with psycopg.connect(pg_uri) as conn:
        dialect = PostgresDialect(conn, LoadOptions(schema=schema), open_report)
        with dialect.transaction():
            dialect.begin()
            for day in range(loads):
                end = dt.date(2026, 11, 10) + dt.timedelta(days=day)
                dialect.record_audit(audit_entry(
                    dag_id="dexcare_all_visits_report", run_id=f"earlier-{day}",
                    report_id=f"00000000-0000-4000-8000-00000000000{day}", report_type=report_type,
                    table=f"avr_{report_type}", uri=f"file:///earlier/{day}.csv", sha256=None,
                    window_start=end - dt.timedelta(days=10), window_end=end, rows_in_file=rows, duplicates=0,
                    inserted=rows, updated=0, new_columns=[], started_at=dt.datetime.now(dt.UTC)))


@pytest.mark.slow  # a real `airflow dags test`
def test_a_daily_run_sends_its_figures_to_statsd(runner, pg_uri, warehouse) -> None:
    rows = 11 * VISITS_PER_DAY  # a first run: 11 days of visits per report type
    seed_baseline(pg_uri, warehouse, "virtual", rows * 2)
    with StatsdListener() as statsd:
        env = {"AIRFLOW__METRICS__STATSD_ON": "True", "AIRFLOW__METRICS__STATSD_HOST": "127.0.0.1",
               "AIRFLOW__METRICS__STATSD_PORT": str(statsd.port), "AIRFLOW__METRICS__STATSD_PREFIX": "airflow"}
        done = runner.run("2026-11-20", env=env)
        assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
        got: dict[str, Any] = statsd.named("airflow.dexcare.")
    with psycopg.connect(pg_uri) as conn:
        loaded = {r[0]: r for r in audit_rows(conn, warehouse)[5:]}  # this run's loads, after the seeded ones
    assert sorted(loaded) == ["retail", "virtual"]
    for report_type, rows_in_file, _, inserted, updated, _ in loaded.values():
        def metric(name: str, report_type: str = report_type) -> Any:
            found = got.get(f"airflow.dexcare.{name}.{report_type}")
            assert found is not None, f"{name}.{report_type} not received; got {sorted(got)}"
            return found

        assert (metric("load.rows_in_file").value, metric("load.rows_in_file").kind) == (rows_in_file, "g")
        assert metric("load.inserted").value == inserted == rows and metric("load.updated").value == updated
        assert metric("download.bytes").value > rows * 10 and metric("download.bytes").kind == "g"
        for timer in ("report.wait", "download.duration", "load.duration"):
            assert metric(timer).kind == "ms" and metric(timer).value > 0, timer
    # The virtual report against its baseline (5 loads of twice its size); retail has none yet: no ratio.
    ratio = got["airflow.dexcare.volume.ratio.virtual"]
    assert (ratio.value, ratio.kind) == (loaded["virtual"][1] / (rows * 2), "g")
    assert "airflow.dexcare.volume.ratio.retail" not in got


@pytest.mark.slow  # two real `airflow dags test` runs
def test_an_empty_day_fails_the_run_writing_nothing_and_accept_volume_lets_it_through(runner, pg_uri, warehouse,
                                                                                      sandbox) -> None:
    seed_baseline(pg_uri, warehouse, "virtual", 11 * VISITS_PER_DAY)
    sandbox.visits_per_day = 0  # DexCare answers with a header and no rows
    refused = runner.run("2026-11-20")
    log = refused.stdout + refused.stderr
    assert refused.returncode != 0, log[-4000:]
    assert "DexCareVolumeError" in log and "has 0 rows, but the last 5 virtual load(s) of 10-day windows" in log
    with psycopg.connect(pg_uri) as conn:
        assert len(audit_rows(conn, warehouse)) == 5, "the refused run wrote nothing"
        assert conn.execute("SELECT to_regclass(%s)", [f"{warehouse}.avr_retail"]).fetchone()[0] is None
    accepted = runner.run("2026-11-20", accept_volume=["virtual"])
    assert accepted.returncode == 0, accepted.stdout[-4000:] + accepted.stderr[-4000:]
    assert "loaded because accept_volume lets virtual through in this run" in accepted.stdout + accepted.stderr
    with psycopg.connect(pg_uri) as conn:
        assert sorted(r[0] for r in audit_rows(conn, warehouse)[5:]) == ["retail", "virtual"]
