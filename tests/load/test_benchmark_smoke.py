"""The benchmark script still runs and prints its ratios (tiny size; no timing is asserted here)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "load_benchmark.py"


def test_benchmark_runs_every_case_and_prints_ratios(pg_uri):
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--rows", "3000", "--pandas-rows", "3000", "--uri", pg_uri, "--mssql-uri", "",
         "--repeats", "1"],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for case in ("raw_copy", "first_load", "reload", "next_day", "backfill", "first_load_history", "reload_history",
                 "next_day_history", "pandas", "mssql_batches"):
        assert case in done.stdout, case
    for case in ("first_load", "reload", "next_day"):
        assert re.search(rf"{case} +with history / without: \d+\.\d+x \([\d,]+ history rows appended\)",
                         done.stdout), case
    for ratio in ("first load / raw COPY", "re-load    / raw COPY", "backfill   / raw COPY",
                  "pandas baseline / first load"):
        assert re.search(re.escape(ratio) + r".*: \d+\.\d+x", done.stdout), ratio
    assert re.search(r"load peak RSS: \d+ MiB", done.stdout)
    # The repeated figures: the download against curl from a static server on loopback, and the SQL Server
    # Python side's CPU per million rows, each as the minimum and median of the runs.
    curl = shutil.which("curl") is not None
    assert len(re.findall(r"download   .* of curl's speed \(run \d\)", done.stdout)) == (1 if curl else 0)
    assert re.search(r"download / curl \(speed\): \d+\.\d+x / \d+\.\d+x" if curl
                     else r"download / curl \(speed\): not measured", done.stdout)
    assert re.search(r"SQL Server Python side, CPU per 1M rows: \d+\.\d+ s / \d+\.\d+ s", done.stdout)
    # The issue-23 table: every path as min and median over the repeats, against its goal.
    for path in ("first load into an empty table", "re-load of the same file", "next day",
                 "SQL Server path, Python side", "peak RSS of the loads"):
        assert re.search(r"\| " + re.escape(path) + r".*\| [\d.]+(x| s)? \| [\d.]+(x| s)? \| [<>]= [\d.]+",
                         done.stdout), path
    assert re.search(r"\| backfill .*\| [\d.]+x \| [\d.]+x \| \(none\) \|", done.stdout)
    assert re.search(r"SQL Server, Python side .*: \d+\.\d+x, [\d,]+ rows/s, CPU \d+\.\d+ s, itself \d+ MiB",
                     done.stdout)
