"""Benchmark the dedupe-load against raw COPY and a pandas script, on an embedded PostgreSQL.

    .venv/bin/python benchmarks/load_benchmark.py                 # 1,000,000 rows
    .venv/bin/python benchmarks/load_benchmark.py --rows 100000 --pandas-rows 100000
    .venv/bin/python benchmarks/load_benchmark.py --mssql-uri mssql://sa:...@127.0.0.1:1433/dexcare
    .venv/bin/python benchmarks/load_benchmark.py --mssql-batches-only   # the SQL Server Python side alone

Cases, all on the same generated virtual report (sandbox generator, ~2% repeated rows):

* ``raw_copy``   COPY of the file into an unindexed text table: the limit any load is held to.
* ``first_load`` our load into an empty schema (creates the table, dedupes, inserts, builds the index).
* ``reload``     the same file again: every row unchanged, nothing rewritten.
* ``next_day``   the next day's report: window shifted by one day, ~90% overlap, ~10% new visits.
* ``backfill``   the first day's file again after the next day's: an older window (a backfill), so the guard
                 keeps every visit the newer window wrote and the load counts them (``kept_newer``).
* ``first_load_history`` / ``reload_history`` / ``next_day_history`` the same three loads into another schema
                 with the visit history on: every inserted and changed row is also appended to
                 ``avr_virtual_history``. Their ratios against the same loads without it are its cost.
* ``pandas``     read_csv + drop_duplicates + to_sql into a staging table + INSERT ... ON CONFLICT into an
                 empty indexed table: what a hand-written script does.
* ``mssql_batches`` the Python side of the SQL Server load, without a server: the file parsed, checked and
                 cut into bulk-copy batches exactly as the load does, the batches then dropped. SQL Server has
                 no COPY, so this is work the worker does there and not for PostgreSQL.
* ``mssql_first_load`` / ``mssql_reload`` / ``mssql_next_day`` the same loads into SQL Server, only with
                 ``--mssql-uri`` (no SQL Server can run on the machines this was written on).
* ``download``   the hook's ``download_report`` of the day's file from a static server on loopback
                 (``static_server.py``: sendfile, never the bottleneck), against ``curl -o`` of the same URL:
                 the download's ceiling. Interleaved with curl, ``--repeats`` times (0 skips it).

``--repeats`` (default 3) runs the five load cases (raw COPY, first load, re-load, next day, backfill, in order,
each ratio against the raw COPY of the same run), the download with its curl and the SQL Server Python side
that many times, and prints each figure's minimum and median: one run on a shared machine says little. The
history and pandas cases run once.

Each case runs in its own child process, so its peak RSS (``ru_maxrss``) and CPU time are its own; the
child also reports its RSS right before the timed part, so the load's own share (peak minus baseline: imports
of psycopg/Airflow are not the load's doing) is visible. Ratios, not absolute times, are the point: the
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
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

END = dt.date(2026, 11, 20)
WINDOW_DAYS = 10
#: The load cases every repeat runs, each a ratio against that repeat's raw COPY.
LOADS = ("first_load", "reload", "next_day", "backfill")
#: The connection the download case's hook uses: the static server on loopback (set in the environment).
BENCH_CONN_ID = "dexcare_bench"


def _rss_kb() -> int:
    """Current resident set size in KiB (Linux /proc; ru_maxrss only gives the peak)."""
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _mark() -> tuple[int, float]:
    """RSS and CPU time right before the timed part: imports and setup are not the case's doing."""
    return _rss_kb(), _cpu_seconds()


def _report(path: str, end: dt.date) -> dict[str, Any]:
    """As the download hands it over, with its record count (counted here, before the timed part)."""
    from dexcare.csv_records import CsvRecordCounter

    counter = CsvRecordCounter()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            counter.feed(block)
    return {
        "rows": counter.data_rows,
        "uri": path,
        "report_type": "virtual",
        "report_id": str(uuid.uuid4()),
        "start_date": (end - dt.timedelta(days=WINDOW_DAYS - 1)).isoformat(),
        "end_date": end.isoformat(),
        "sha256": None,
    }


def run_case(case: str, uri: str, path: str, end: dt.date, version: str | None = None) -> dict[str, Any]:
    """Executed in the child process. ``version``: the report's version column (``--version-column``)."""
    import psycopg
    from dexcare.load.audit import COUNTS
    from dexcare.load.loader import LoadOptions, load_reports

    result: dict[str, Any] = {}
    if case == "raw_copy":
        with psycopg.connect(uri, autocommit=True) as conn:
            with open(path, encoding="utf-8", newline="") as handle:
                header = len(next(csv.reader(handle)))
            conn.execute("DROP TABLE IF EXISTS bench_raw")
            conn.execute(f"CREATE TABLE bench_raw ({', '.join(f'c{i} text' for i in range(header))})")
        with psycopg.connect(uri) as conn:
            baseline, cpu_before = _mark()
            start = time.perf_counter()
            with conn.cursor().copy("COPY bench_raw FROM STDIN (FORMAT csv, HEADER true)") as copy, \
                    open(path, "rb") as handle:
                while block := handle.read(1 << 20):
                    copy.write(block)
            conn.commit()
            seconds = time.perf_counter() - start
    elif case.removesuffix("_history") in LOADS:
        history = case.endswith("_history")
        versions = {"virtual": version} if version else {}
        options = LoadOptions(schema="dexcare_history", history=["virtual"], version_columns=versions) if history \
            else LoadOptions(version_columns=versions)
        if case.startswith("first_load"):
            with psycopg.connect(uri, autocommit=True) as conn:
                conn.execute(f"DROP SCHEMA IF EXISTS {options.schema} CASCADE")
        downloaded = _report(path, end)
        with psycopg.connect(uri) as conn:
            baseline, cpu_before = _mark()
            start = time.perf_counter()
            summary = load_reports(conn, [downloaded], dialect="postgres", options=options)
            seconds = time.perf_counter() - start
        table = summary["tables"]["avr_virtual"]
        result["counts"] = {k: table[k] for k in (*COUNTS, "history_rows") if k in table}
    elif case == "mssql_batches":
        from dexcare.load.csv_stream import open_report, read_header
        from dexcare.load.dialects.mssql.dialect import MsSqlTypes, statements_for
        from dexcare.load.dialects.mssql.staging import batches
        from dexcare.load.identifiers import normalize_headers
        from dexcare.load.plan import lineage_values, plan_load

        options = LoadOptions()
        baseline, cpu_before = _mark()
        start = time.perf_counter()
        rows = 0
        with open(path, "rb") as stream:
            header = read_header(stream, source=path)
            columns = normalize_headers(header.fields, source=path)
            plan = plan_load(schema="dexcare", table="avr_virtual", source=path, headers=header.fields,
                             columns=columns, keys=["visit_id"],
                             version=normalize_headers([version], source=path)[0] if version else None,
                             configured={}, existing=None,
                             types=MsSqlTypes(), lineage=lineage_values(
                                 report_id="x", report_type="virtual", window_start=end, window_end=end,
                                 loaded_at=dt.datetime.now(dt.UTC)))
            for batch in batches(statements_for(plan, 0), header, stream, opener=open_report,
                                 block_size=options.block_size, batch_rows=options.batch_rows):
                rows += len(batch)
        seconds = time.perf_counter() - start
        result["counts"] = {"rows_in_file": rows}
    elif case == "download":
        from dexcare.hooks.dexcare import DexCareHook

        target = Path(path).with_name(f"download-{uuid.uuid4().hex}.csv")
        hook = DexCareHook(BENCH_CONN_ID)
        baseline, cpu_before = _mark()
        start = time.perf_counter()
        downloaded = hook.download_report(str(uuid.uuid4()), target)
        seconds = time.perf_counter() - start
        target.unlink()
        result["counts"] = {"rows_in_file": downloaded.rows, "bytes": downloaded.bytes}
    elif case.startswith("mssql_"):
        import pymssql
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the live suite's URI handling
        from tests.support.warehouse import MsSqlWarehouse

        target = MsSqlWarehouse(uri)
        if case == "mssql_first_load":
            target.drop_schema("dexcare_bench")
        elif target.query("SELECT SCHEMA_ID('dexcare_bench')")[0][0] is not None:
            target.grant_schema("dexcare_bench")  # the load runs as a login with README's grants only
        conn = pymssql.connect(**target.params)
        baseline, cpu_before = _mark()
        start = time.perf_counter()
        summary = load_reports(conn, [_report(path, end)], dialect="mssql", options=LoadOptions(
            schema="dexcare_bench", version_columns={"virtual": version} if version else {}))
        seconds = time.perf_counter() - start
        conn.close()
        target.close()
        table = summary["tables"]["avr_virtual"]
        result["counts"] = {k: table[k] for k in (*COUNTS, "history_rows") if k in table}
    elif case == "pandas":
        import pandas as pd
        import sqlalchemy

        engine = sqlalchemy.create_engine(uri.replace("postgresql://", "postgresql+psycopg://", 1))
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP SCHEMA IF EXISTS bench_pandas CASCADE")
            conn.exec_driver_sql("CREATE SCHEMA bench_pandas")
        baseline, cpu_before = _mark()
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
        cpu_seconds=_cpu_seconds() - cpu_before,
        baseline_rss_mb=baseline / 1024,
        peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    )
    return result


def _child(case: str, uri: str, path: Path, end: dt.date, version: str | None = None) -> dict[str, Any]:
    extra = ["--version-column", version] if version else []
    out = subprocess.run(
        [sys.executable, __file__, "--case", case, "--uri", uri, "--file", str(path), "--end", end.isoformat(),
         *extra],
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
    parser.add_argument("--mssql-uri", default=os.environ.get("DEXCARE_TEST_MSSQL_URI"),
                        help="also load into this SQL Server (mssql://user:password@host:1433/database; "
                             "default: $DEXCARE_TEST_MSSQL_URI)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="runs of the loads, the download (against curl) and the SQL Server Python side "
                             "(0: the loads once, the download not at all)")
    parser.add_argument("--version-column", default=None,
                        help="order repeats of a visit by this column (e.g. updatedAt) instead of file order")
    parser.add_argument("--mssql-batches-only", action="store_true",
                        help="only the SQL Server Python side (mssql_batches), --repeats times: no PostgreSQL, pandas "
                             "or download case")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--file", help=argparse.SUPPRESS)
    parser.add_argument("--end", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        end = dt.date.fromisoformat(args.end)
        print(json.dumps(run_case(args.case, args.uri, args.file, end, args.version_column)))
        return

    workdir = Path(tempfile.mkdtemp(prefix="dexcare-bench-"))
    os.chmod(workdir, 0o700)
    server = None
    try:
        uri = args.uri
        if not uri and not args.mssql_batches_only:
            import pgserver

            logging.getLogger("pgserver").setLevel(logging.WARNING)  # keep the figures readable
            server = pgserver.get_server(workdir / "pg", cleanup_mode="stop")
            uri = server.get_uri()
        day0, day1 = workdir / "day0.csv", workdir / "day1.csv"
        started = time.perf_counter()
        n0 = _generate(day0, args.rows, END)
        n1 = 0 if args.mssql_batches_only else _generate(day1, args.rows, END + dt.timedelta(days=1))
        print(f"generated {n0:,} + {n1:,} rows ({day0.stat().st_size / 2**20:,.0f} MiB each) "
              f"in {time.perf_counter() - started:.1f} s", flush=True)
        results: dict[str, dict[str, Any]] = {}
        repeats = max(args.repeats, 1)
        if args.mssql_batches_only:
            _print_repeated(_mssql_batches(uri or "", day0, repeats, args.version_column, results), repeats,
                            args.rows)
            return
        repeated: dict[str, list[float]] = {}
        # The load cases run as one sequence per repeat (a reload needs the first load before it), each ratio
        # against the raw COPY of the same repeat, so a busy minute on the machine weighs on both sides.
        for repeat in range(repeats):
            for case, path, end in (("raw_copy", day0, END), ("first_load", day0, END), ("reload", day0, END),
                                    ("next_day", day1, END + dt.timedelta(days=1)), ("backfill", day0, END)):
                results[case] = _child(case, uri, path, end, args.version_column)
                print(f"  {case:<10} {results[case]['seconds']:7.2f} s (run {repeat + 1})", flush=True)
            for case in LOADS:
                repeated.setdefault(case, []).append(results[case]["seconds"] / results["raw_copy"]["seconds"])
            repeated.setdefault("load_peak_rss", []).append(max(results[c]["peak_rss_mb"] for c in LOADS))
        for case, path, end in (("first_load_history", day0, END), ("reload_history", day0, END),
                                ("next_day_history", day1, END + dt.timedelta(days=1))):
            results[case] = _child(case, uri, path, end, args.version_column)
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
        repeated.update(_mssql_batches(uri, day0, repeats, args.version_column, results))
        if args.repeats:
            repeated.update(_download_against_curl(day0, workdir, args.repeats, results))
        if args.mssql_uri:
            for case, path, end in (("mssql_first_load", day0, END), ("mssql_reload", day0, END),
                                    ("mssql_next_day", day1, END + dt.timedelta(days=1))):
                results[case] = _child(case, args.mssql_uri, path, end, args.version_column)
                print(f"  {case:<10} {results[case]['seconds']:7.2f} s", flush=True)
        _print_table(results, args.rows, pandas_rows)
        _print_repeated(repeated, repeats, args.rows)
    finally:
        if server is not None:
            server.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)


def _mssql_batches(uri: str, path: Path, repeats: int, version: str | None,
                   results: dict[str, dict[str, Any]]) -> dict[str, list[float]]:
    """The SQL Server Python side ``repeats`` times; its CPU per million rows each time."""
    repeated: dict[str, list[float]] = {}
    for repeat in range(repeats):
        results["mssql_batches"] = _child("mssql_batches", uri, path, END, version)
        rows_in_file = results["mssql_batches"]["counts"]["rows_in_file"]
        repeated.setdefault("mssql_cpu_per_1m", []).append(
            results["mssql_batches"]["cpu_seconds"] * 1_000_000 / max(rows_in_file, 1))
        print(f"  {'mssql_batches':<10} {results['mssql_batches']['seconds']:7.2f} s, CPU "
              f"{results['mssql_batches']['cpu_seconds']:.2f} s (run {repeat + 1})", flush=True)
    return repeated


def _download_against_curl(path: Path, workdir: Path, repeats: int,
                           results: dict[str, dict[str, Any]]) -> dict[str, list[float]]:
    """The hook's download against curl of the same file from the same static server, interleaved, so both
    see the same machine load; returns the hook's speed as a fraction of curl's, per run."""
    curl = shutil.which("curl")
    if curl is None:
        print("  download   not measured: no curl to measure it against (apt-get install curl)", flush=True)
        return {}
    server = subprocess.Popen([sys.executable, str(Path(__file__).with_name("static_server.py")), str(path)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        url = f"http://127.0.0.1:{server.stdout.readline().strip()}"
        os.environ[f"AIRFLOW_CONN_{BENCH_CONN_ID.upper()}"] = json.dumps(
            {"conn_type": "dexcare", "host": url, "password": "bench-key"})
        out = workdir / "curl.csv"
        ratios: list[float] = []
        peaks: list[float] = []
        size = path.stat().st_size
        for repeat in range(repeats):
            start = time.perf_counter()
            subprocess.run([curl, "-sS", "--fail", "-o", str(out), f"{url}/report.csv"], check=True)
            curl_seconds = time.perf_counter() - start
            out.unlink()
            results["download"] = _child("download", url, path, END)
            hook_seconds = results["download"]["seconds"]
            ratios.append(curl_seconds / hook_seconds)
            peaks.append(results["download"]["peak_rss_mb"])
            print(f"  download   {hook_seconds:7.2f} s ({size / 1e6 / hook_seconds:,.0f} MB/s), curl "
                  f"{curl_seconds:.2f} s ({size / 1e6 / curl_seconds:,.0f} MB/s): {ratios[-1]:.2f}x "
                  f"of curl's speed (run {repeat + 1})", flush=True)
        return {"download_vs_curl": ratios, "download_peak_rss": peaks}
    finally:
        server.terminate()
        server.wait()


def _print_repeated(repeated: dict[str, list[float]], repeats: int, rows: int) -> None:
    """The issue's table: every figure measured ``repeats`` times against its baseline of the same run, as
    the minimum and median of the runs (one run on a shared machine says little)."""
    def cell(key: str, unit: str = "x", digits: int = 2) -> str:
        if key not in repeated:
            return "not measured | not measured"
        values = repeated[key]
        return f"{min(values):.{digits}f}{unit} | {statistics.median(values):.{digits}f}{unit}"

    print(f"\nrepeated {repeats}x, {rows:,} visits per report (min / median):\n")
    print("| path | min | median | goal |")
    print("|---|---:|---:|---:|")
    print(f"| first load into an empty table, vs raw COPY of the same file | {cell('first_load')} | <= 1.5x |")
    print(f"| re-load of the same file (nothing changes, nothing rewritten), vs raw COPY | {cell('reload')} "
          "| <= 1.5x |")
    print(f"| next day (window shifted, ~10% new, some changed), vs raw COPY | {cell('next_day')} | <= 2.0x |")
    print(f"| backfill (the first day again after the next: the guard keeps what is newer), vs raw COPY | "
          f"{cell('backfill')} | (none) |")
    print(f"| download from a static server on loopback, speed vs curl | {cell('download_vs_curl')} | >= 0.8x |")
    print(f"| SQL Server path, Python side (parse, check, batch), CPU s per 1M rows | "
          f"{cell('mssql_cpu_per_1m', ' s')} | <= 1 s |")
    print(f"| peak RSS of the loads, MiB | {cell('load_peak_rss', '', 0)} | <= 200 |")
    if "download_peak_rss" in repeated:
        print(f"| peak RSS of the download, MiB | {cell('download_peak_rss', '', 0)} | <= 200 |")
    print()
    if "download_vs_curl" in repeated:
        ratios = repeated["download_vs_curl"]
        print(f"download / curl (speed): {min(ratios):.2f}x / {statistics.median(ratios):.2f}x (target >= 0.8x)")
    else:
        print("download / curl (speed): not measured (no curl, or --repeats 0)")
    cpu = repeated["mssql_cpu_per_1m"]
    print(f"SQL Server Python side, CPU per 1M rows: {min(cpu):.2f} s / {statistics.median(cpu):.2f} s "
          "(target <= 1 s)")


def _print_table(results: dict[str, dict[str, Any]], rows: int, pandas_rows: int) -> None:
    raw = results["raw_copy"]["seconds"]
    print(f"\n{rows:,} visits per report, {os.cpu_count()} cores; each case in its own process; the last run\n")
    print("| case | seconds | rows/s | vs raw COPY | client CPU s | peak RSS MiB | RSS before MiB | counts |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for case, res in results.items():
        n = res.get("counts", {}).get("rows_in_file", rows)
        print(f"| {case} | {res['seconds']:.2f} | {n / res['seconds']:,.0f} | {res['seconds'] / raw:.2f}x | "
              f"{res['cpu_seconds']:.2f} | {res['peak_rss_mb']:.0f} | {res['baseline_rss_mb']:.0f} | "
              f"{res.get('counts', '')} |")
    print()
    print(f"first load / raw COPY: {results['first_load']['seconds'] / raw:.2f}x (target <= 1.5x)")
    print(f"re-load    / raw COPY: {results['reload']['seconds'] / raw:.2f}x (target <= 1.5x)")
    print(f"next day   / raw COPY: {results['next_day']['seconds'] / raw:.2f}x (target <= 2.0x)")
    print(f"backfill   / raw COPY: {results['backfill']['seconds'] / raw:.2f}x")
    if "pandas" in results:
        ours = results.get("first_load_small", results["first_load"])["seconds"]
        print(f"pandas baseline / first load ({pandas_rows:,} rows): {results['pandas']['seconds'] / ours:.1f}x "
              "(target >= 10x)")
    for case in ("first_load", "reload", "next_day"):
        with_history = results[f"{case}_history"]
        print(f"{case:<10} with history / without: {with_history['seconds'] / results[case]['seconds']:.2f}x "
              f"({with_history['counts'].get('history_rows', 0):,} history rows appended)")
    loads = [results[c] for c in LOADS]
    peak = max(r["peak_rss_mb"] for r in loads)
    growth = max(r["peak_rss_mb"] - r["baseline_rss_mb"] for r in loads)
    print(f"load peak RSS: {peak:.0f} MiB, of which the load itself {growth:.0f} MiB (target < 200 MB)")
    batches = results["mssql_batches"]
    print(f"SQL Server, Python side (parse, check, batch; no server) / raw COPY: {batches['seconds'] / raw:.2f}x, "
          f"{batches['counts']['rows_in_file'] / batches['seconds']:,.0f} rows/s, CPU {batches['cpu_seconds']:.2f} s, "
          f"itself {batches['peak_rss_mb'] - batches['baseline_rss_mb']:.0f} MiB")
    if "mssql_first_load" in results:
        first = results["mssql_first_load"]["seconds"]
        print(f"SQL Server first load / its Python side: {first / batches['seconds']:.2f}x; re-load: "
              f"{results['mssql_reload']['seconds'] / batches['seconds']:.2f}x; next day: "
              f"{results['mssql_next_day']['seconds'] / batches['seconds']:.2f}x")
    else:
        print("SQL Server loads: not measured (no SQL Server; give --mssql-uri or DEXCARE_TEST_MSSQL_URI)")


if __name__ == "__main__":
    main()
