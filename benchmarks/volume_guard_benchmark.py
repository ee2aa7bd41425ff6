"""What the volume guard costs: its one query per report against a ``load_audit`` of 1,000,000 rows.

    .venv/bin/python benchmarks/volume_guard_benchmark.py                   # 1,000,000 audit rows
    .venv/bin/python benchmarks/volume_guard_benchmark.py --audit-rows 100000

On the embedded PostgreSQL (``pgserver``, as the tests use) or ``DEXCARE_TEST_POSTGRES_URI``. The audit rows
are what years of loads leave: three report types, mostly 10-day windows, some 1-day and 30-day ones, in
insertion order. Measured: the baseline query as the load runs it (inside a load's transaction, after
``begin()``, through :meth:`PostgresDialect.volume_baseline`), for the common window length and for a rare one
(the index must skip the other lengths, not scan them); its plan; and the one-off creation of the index on an
audit table that existed before it (the first load after an upgrade). Median of the repeats; the machine is
shared, so read the figures as an order of magnitude.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import psycopg
from dexcare.load.csv_stream import open_report
from dexcare.load.dialects.postgres.dialect import AUDIT_DDL, AUDIT_VOLUME_INDEX, PostgresDialect
from dexcare.load.options import LoadOptions
from dexcare.load.volume import BASELINE_LOADS
from psycopg import sql

SCHEMA = "volume_bench"

SEED = """
INSERT INTO {table} (dag_id, run_id, report_id, report_type, target_table, file_uri, window_start, window_end,
                     rows_in_file, duplicates_in_file, inserted, updated, unchanged, started_at, finished_at)
SELECT 'dexcare_all_visits_report', 'run-' || g, gen_random_uuid()::text, t.report_type, 'avr_' || t.report_type,
       'file:///x.csv', d.day - w.days, d.day, 1000 + g %% 50, 0, 10, 5, 985 + g %% 50, now(), now()
  FROM generate_series(1, %(rows)s) AS g
  CROSS JOIN LATERAL (SELECT (ARRAY['virtual', 'retail', 'provider_booking'])[1 + g %% 3] AS report_type) t
  CROSS JOIN LATERAL (SELECT CASE WHEN g %% 100 = 0 THEN 30 WHEN g %% 50 = 1 THEN 1 ELSE 10 END AS days) w
  CROSS JOIN LATERAL (SELECT DATE '2020-01-01' + (g / 3) AS day) d
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--audit-rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    uri = os.environ.get("DEXCARE_TEST_POSTGRES_URI")
    server = None
    if not uri:
        import pgserver

        server = pgserver.get_server(tempfile.mkdtemp(prefix="dexcare-bench-pg-"), cleanup_mode="stop")
        uri = server.get_uri()
    try:
        run(uri, args.audit_rows, args.repeats)
    finally:
        if server is not None:
            server.cleanup()


def run(uri: str, rows: int, repeats: int) -> None:
    table = sql.Identifier(SCHEMA, "load_audit")
    with psycopg.connect(uri, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(SCHEMA)))
        admin.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(SCHEMA)))
        admin.execute(sql.SQL(AUDIT_DDL).format(table=table))
        began = time.perf_counter()
        admin.execute(sql.SQL(SEED).format(table=table), {"rows": rows})
        admin.execute(sql.SQL("VACUUM ANALYZE {}").format(table))
        print(f"seeded {rows:,} audit rows in {time.perf_counter() - began:.1f} s")
        began = time.perf_counter()
        admin.execute(sql.SQL(AUDIT_VOLUME_INDEX).format(table=table))
        print(f"index load_audit_volume built on the existing table in {time.perf_counter() - began:.2f} s (once)")
        admin.execute(sql.SQL("ANALYZE {}").format(table))
        plan = admin.execute(
            sql.SQL("EXPLAIN (ANALYZE, BUFFERS) SELECT rows_in_file FROM {} WHERE report_type = %s "
                    "AND window_end - window_start = %s ORDER BY id DESC LIMIT %s").format(table),
            ["virtual", 30, BASELINE_LOADS]).fetchall()
        print("plan (30-day windows, 1 in 100 loads):\n  " + "\n  ".join(r[0] for r in plan))
    with psycopg.connect(uri) as conn:
        dialect = PostgresDialect(conn, LoadOptions(schema=SCHEMA), open_report)
        with dialect.transaction():
            dialect.begin()
            for days, what in ((10, "10-day windows (most loads)"), (30, "30-day windows (1 in 100 loads)")):
                times = []
                for _ in range(repeats):
                    began = time.perf_counter()
                    found = dialect.volume_baseline("virtual", days, BASELINE_LOADS)
                    times.append(time.perf_counter() - began)
                assert len(found) == BASELINE_LOADS
                print(f"baseline query, {what}: median {statistics.median(times) * 1000:.2f} ms, "
                      f"max {max(times) * 1000:.2f} ms over {repeats}")
    with psycopg.connect(uri, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(SCHEMA)))


if __name__ == "__main__":
    main()
