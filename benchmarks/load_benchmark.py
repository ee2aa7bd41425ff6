"""Benchmark the dedupe-load against raw COPY and a pandas script, on an embedded PostgreSQL.

    .venv/bin/python benchmarks/load_benchmark.py                 # 1,000,000 rows
    .venv/bin/python benchmarks/load_benchmark.py --rows 100000 --pandas-rows 100000

Cases, all on the same generated virtual report (sandbox generator, ~2% repeated rows):

* ``raw_copy``   COPY of the file into an unindexed text table: the limit any load is held to.
* ``first_load`` our load into an empty schema (creates the table, dedupes, inserts, builds the index).
* ``reload``     the same file again: every row unchanged, nothing rewritten.
* ``next_day``   the next day's report: window shifted by one day, ~90% overlap, ~10% new visits.
* ``pandas``     read_csv + drop_duplicates + to_sql into a staging table + INSERT ... ON CONFLICT into an
                 empty indexed table: what a hand-written script does.

Each case runs in its own child process, so its peak RSS (``ru_maxrss``) is its own; the child also
reports its RSS right before the timed part, so the load's own share (peak minus baseline: imports of
psycopg/Airflow are not the load's doing) is visible. Ratios, not absolute times, are the point: the
machine is shared and times move by 20-30% between runs.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import logging
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

END = dt.date(2026, 11, 20)
WINDOW_DAYS = 10


def _rss_kb() -> int:
    """Current resident set size in KiB (Linux /proc; ru_maxrss only gives the peak)."""
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def _report(path: str, end: dt.date) -> dict[str, Any]:
    return {
        "uri": path,
        "report_type": "virtual",
        "report_id": str(uuid.uuid4()),
        "start_date": (end - dt.timedelta(days=WINDOW_DAYS - 1)).isoformat(),
        "end_date": end.isoformat(),
        "sha256": None,
    }


def run_case(case: str, uri: str, path: str, end: dt.date) -> dict[str, Any]:
    """Executed in the child process."""
    import psycopg
    from dexcare.load.loader import LoadOptions, load_reports

    result: dict[str, Any] = {}
    if case == "raw_copy":
        with psycopg.connect(uri, autocommit=True) as conn:
            with open(path, encoding="utf-8", newline="") as handle:
                header = len(next(csv.reader(handle)))
            conn.execute("DROP TABLE IF EXISTS bench_raw")
            conn.execute(f"CREATE TABLE bench_raw ({', '.join(f'c{i} text' for i in range(header))})")
        with psycopg.connect(uri) as conn:
            baseline = _rss_kb()
            start = time.perf_counter()
            with conn.cursor().copy("COPY bench_raw FROM STDIN (FORMAT csv, HEADER true)") as copy, \
                    open(path, "rb") as handle:
                while block := handle.read(1 << 20):
                    copy.write(block)
            conn.commit()
            seconds = time.perf_counter() - start
    elif case in ("first_load", "reload", "next_day"):
        if case == "first_load":
            with psycopg.connect(uri, autocommit=True) as conn:
                conn.execute("DROP SCHEMA IF EXISTS dexcare CASCADE")
        with psycopg.connect(uri) as conn:
            baseline = _rss_kb()
            start = time.perf_counter()
            summary = load_reports(conn, [_report(path, end)], options=LoadOptions())
            seconds = time.perf_counter() - start
        table = summary["tables"]["avr_virtual"]
        result["counts"] = {k: table[k] for k in ("rows_in_file", "duplicates_in_file", "inserted", "updated",
                                                    "unchanged")}
    elif case == "pandas":
        import pandas as pd
        import sqlalchemy

        engine = sqlalchemy.create_engine(uri.replace("postgresql://", "postgresql+psycopg://", 1))
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP SCHEMA IF EXISTS bench_pandas CASCADE")
            conn.exec_driver_sql("CREATE SCHEMA bench_pandas")
        baseline = _rss_kb()
        start = time.perf_counter()
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        rows_in_file = len(frame)
        frame = frame.drop_duplicates(subset=[frame.columns[0]], keep="last")
        frame.columns = [c.lower() for c in frame.columns]
        key = frame.columns[0]
        with engine.begin() as conn:
            frame.head(0).to_sql("target", conn, schema="bench_pandas", index=False)
            conn.exec_driver_sql(f"CREATE UNIQUE INDEX ON bench_pandas.target ({key})")
            frame.to_sql("stage", conn, schema="bench_pandas", index=False)
            cols = ", ".join(frame.columns)
            sets = ", ".join(f"{c} = excluded.{c}" for c in frame.columns[1:])
            conn.exec_driver_sql(
                f"INSERT INTO bench_pandas.target ({cols}) SELECT {cols} FROM bench_pandas.stage "
                f"ON CONFLICT ({key}) DO UPDATE SET {sets}"
            )
        seconds = time.perf_counter() - start
        result["counts"] = {"rows_in_file": rows_in_file, "inserted": len(frame)}
        engine.dispose()
    else:
        raise SystemExit(f"unknown case {case}")
    result.update(
        seconds=seconds,
        baseline_rss_mb=baseline / 1024,
        peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    )
    return result


def _child(case: str, uri: str, path: Path, end: dt.date) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--case", case, "--uri", uri, "--file", str(path), "--end", end.isoformat()],
        check=True, capture_output=True, text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _generate(path: Path, rows: int, end: dt.date) -> int:
    from dexcare.sandbox.generator import visits_per_day_for, write_report_csv

    start = END - dt.timedelta(days=WINDOW_DAYS - 1)
    per_day = visits_per_day_for(rows, start, END)
    return write_report_csv(path, "virtual", end - dt.timedelta(days=WINDOW_DAYS - 1), end,
                            visits_per_day=per_day)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="distinct visits in the report")
    parser.add_argument("--pandas-rows", type=int, default=None,
                        help="run the pandas baseline on a report of this size (default: --rows; 0 skips it)")
    parser.add_argument("--uri", help="PostgreSQL URI (default: a private pgserver in a temp dir)")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--file", help=argparse.SUPPRESS)
    parser.add_argument("--end", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case, args.uri, args.file, dt.date.fromisoformat(args.end))))
        return

    workdir = Path(tempfile.mkdtemp(prefix="dexcare-bench-"))
    os.chmod(workdir, 0o700)
    server = None
    try:
        uri = args.uri
        if not uri:
            import pgserver

            logging.getLogger("pgserver").setLevel(logging.WARNING)  # keep the figures readable
            server = pgserver.get_server(workdir / "pg", cleanup_mode="stop")
            uri = server.get_uri()
        day0, day1 = workdir / "day0.csv", workdir / "day1.csv"
        started = time.perf_counter()
        n0 = _generate(day0, args.rows, END)
        n1 = _generate(day1, args.rows, END + dt.timedelta(days=1))
        print(f"generated {n0:,} + {n1:,} rows ({day0.stat().st_size / 2**20:,.0f} MiB each) "
              f"in {time.perf_counter() - started:.1f} s", flush=True)
        results: dict[str, dict[str, Any]] = {}
        for case, path, end in (("raw_copy", day0, END), ("first_load", day0, END), ("reload", day0, END),
                                ("next_day", day1, END + dt.timedelta(days=1))):
            results[case] = _child(case, uri, path, end)
            print(f"  {case:<10} {results[case]['seconds']:7.2f} s", flush=True)
        pandas_rows = args.rows if args.pandas_rows is None else args.pandas_rows
        if pandas_rows:
            pandas_file = day0
            if pandas_rows != args.rows:
                pandas_file = workdir / "pandas.csv"
                _generate(pandas_file, pandas_rows, END)
                # Our first load on the same smaller file, for a like-for-like ratio.
                results["first_load_small"] = _child("first_load", uri, pandas_file, END)
            results["pandas"] = _child("pandas", uri, pandas_file, END)
            print(f"  {'pandas':<10} {results['pandas']['seconds']:7.2f} s", flush=True)
        _print_table(results, args.rows, pandas_rows)
    finally:
        if server is not None:
            server.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)


def _print_table(results: dict[str, dict[str, Any]], rows: int, pandas_rows: int) -> None:
    raw = results["raw_copy"]["seconds"]
    print(f"\n{rows:,} visits per report, 2 cores shared; each case in its own process\n")
    print("| case | seconds | rows/s | vs raw COPY | peak RSS MiB | RSS before MiB | counts |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for case, res in results.items():
        n = res.get("counts", {}).get("rows_in_file", rows)
        print(f"| {case} | {res['seconds']:.2f} | {n / res['seconds']:,.0f} | {res['seconds'] / raw:.2f}x | "
              f"{res['peak_rss_mb']:.0f} | {res['baseline_rss_mb']:.0f} | {res.get('counts', '')} |")
    print()
    print(f"first load / raw COPY: {results['first_load']['seconds'] / raw:.2f}x (target <= 4x)")
    print(f"re-load    / raw COPY: {results['reload']['seconds'] / raw:.2f}x (target <= 4x)")
    print(f"next day   / raw COPY: {results['next_day']['seconds'] / raw:.2f}x")
    if "pandas" in results:
        ours = results.get("first_load_small", results["first_load"])["seconds"]
        print(f"pandas baseline / first load ({pandas_rows:,} rows): {results['pandas']['seconds'] / ours:.1f}x "
              "(target >= 10x)")
    loads = [results[c] for c in ("first_load", "reload", "next_day")]
    peak = max(r["peak_rss_mb"] for r in loads)
    growth = max(r["peak_rss_mb"] - r["baseline_rss_mb"] for r in loads)
    print(f"load peak RSS: {peak:.0f} MiB, of which the load itself {growth:.0f} MiB (target < 200 MB)")


if __name__ == "__main__":
    main()
