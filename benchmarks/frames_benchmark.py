"""Peak memory and time of a report as DataFrames: in chunks against the whole frame, in the same run.

    .venv/bin/python benchmarks/frames_benchmark.py                 # a 1,000,000-row report (~210 MiB)
    .venv/bin/python benchmarks/frames_benchmark.py --rows 100000

The report comes from the DexCare sandbox in its own process, over loopback HTTP. Cases, each in its own child
process so its peak RSS is its own:

* ``whole``: ``DexCareHook.get_df(report_id)``: download to a private temporary file, one typed DataFrame.
* ``chunked``: ``DexCareHook.get_df_by_chunks(report_id, chunksize=50_000)``, each chunk dropped once counted
  (what a task that summarises a report larger than memory does).
* ``read_csv``: ``pandas.read_csv(dtype=str)`` of the same file, already on disk: the reference for what a
  whole frame of these rows costs in pandas itself (untyped, no key or CSV checks).

Each child reports its RSS right before the measured call (interpreter, Airflow and pandas loaded, the HTTP
session open) and its peak RSS (``ru_maxrss``); "growth" is the difference. Results are printed as ratios
against ``whole`` measured in the same run: the machine is shared, so absolute times move between runs.
"""

from __future__ import annotations

import datetime as dt
import json
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
TOKEN = "frames-benchmark-key"  # noqa: S105 (the local sandbox's token, not a secret)
CHUNKSIZE = 50_000
CASES = ("whole", "chunked", "read_csv")


def _rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def run_case(case: str, args: dict[str, Any]) -> dict[str, Any]:
    """Executed in the child process."""
    import pandas as pd
    from dexcare.hooks.dexcare import DexCareHook

    hook = DexCareHook("dexcare_default", timeout=300)
    hook.get_report_status(args["report_id"])  # the HTTP session, too
    temp_dir = args["temp_dir"]
    baseline = _rss_mb()
    start = time.perf_counter()
    if case == "whole":
        rows = len(hook.get_df(args["report_id"], temp_dir=temp_dir))
    elif case == "chunked":
        rows = sum(len(chunk) for chunk in hook.get_df_by_chunks(args["report_id"], chunksize=CHUNKSIZE,
                                                                  temp_dir=temp_dir))
    else:
        rows = len(pd.read_csv(args["file"], dtype=str, keep_default_na=False))
    seconds = time.perf_counter() - start
    left = os.listdir(temp_dir)
    return {"rows": rows, "seconds": seconds, "baseline_rss_mb": baseline, "temp_files_left": len(left),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    options = cases.parse(__doc__, run_case)
    if options is None:
        return

    from dexcare.sandbox.generator import visits_per_day_for
    from dexcare.sandbox.process import SandboxProcess

    workdir = Path(tempfile.mkdtemp(prefix="dexcare-frames-bench-"))
    os.chmod(workdir, 0o700)
    start_day = END - dt.timedelta(days=WINDOW_DAYS - 1)
    per_day = visits_per_day_for(options.rows, start_day, END)
    try:
        sandbox_args = ["--visits-per-day", str(per_day), "--queue-seconds", "0", "--run-seconds", "0"]
        with SandboxProcess(token=TOKEN, args=sandbox_args) as sandbox:
            env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
            env.update(
                AIRFLOW_HOME=str(workdir / "airflow-home"),
                AIRFLOW__CORE__LOAD_EXAMPLES="False",
                AIRFLOW_CONN_DEXCARE_DEFAULT=json.dumps(
                    {"conn_type": "dexcare", "host": sandbox.url, "password": TOKEN}
                ),
                PYTHONPATH=os.pathsep.join([str(REPO / "plugins"), str(REPO)]),
            )
            os.environ.update(env)
            from dexcare.hooks.dexcare import DexCareHook
            from dexcare.report import ReportStatus

            hook = DexCareHook("dexcare_default", timeout=300)
            report_id = hook.start_report("virtual", start_day, END)
            while hook.get_report_status(report_id) != ReportStatus.SUCCEEDED:
                time.sleep(0.2)
            file = workdir / "report.csv"
            download = hook.download_report(report_id, file)
            temp_dir = workdir / "frames-tmp"
            temp_dir.mkdir(mode=0o700)
            args = {"report_id": report_id, "file": str(file), "temp_dir": str(temp_dir)}
            results: dict[str, dict[str, Any]] = {}
            for case in CASES:
                results[case] = cases.in_child(__file__, case, args, env)
                print(f"  {case:<9} {results[case]['seconds']:7.2f} s", flush=True)
            for case, result in results.items():
                assert result["rows"] == download.rows, f"{case} read {result['rows']} of {download.rows} rows"
                assert result["temp_files_left"] == 0, f"{case} left a temporary file behind"
        _print_table(results, download.bytes)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _print_table(results: dict[str, dict[str, Any]], size: int) -> None:
    rows = results["whole"]["rows"]
    print(f"\n{rows:,} rows, {size / 2**20:,.0f} MiB per report; chunksize {CHUNKSIZE:,}; 2 shared cores; each "
          "case in its own process\n")
    print("| case | seconds | vs whole | peak RSS MiB | RSS before MiB | growth MiB | growth vs whole |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    whole = results["whole"]
    whole_growth = max(whole["peak_rss_mb"] - whole["baseline_rss_mb"], 1)
    for case, res in results.items():
        growth = res["peak_rss_mb"] - res["baseline_rss_mb"]
        print(f"| {case} | {res['seconds']:.2f} | {res['seconds'] / whole['seconds']:.2f}x | "
              f"{res['peak_rss_mb']:.0f} | {res['baseline_rss_mb']:.0f} | {growth:.0f} | "
              f"{growth / whole_growth:.2f}x |")


if __name__ == "__main__":
    main()
