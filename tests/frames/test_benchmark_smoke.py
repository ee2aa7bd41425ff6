"""The DataFrame benchmark still runs end to end and prints its ratios (tiny size; no timing is asserted here)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "frames_benchmark.py"


@pytest.mark.slow  # three child processes that import Airflow and pandas
def test_frames_benchmark_runs_every_case_and_prints_ratios():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, str(SCRIPT), "--rows", "3000"], capture_output=True, text=True,
                          timeout=300, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    row = r"\| {} \| \d+\.\d+ \| \d+\.\d+x \| \d+ \| \d+ \| -?\d+ \| -?\d+\.\d+x \|"
    for case in ("whole", "chunked", "read_csv"):
        assert re.search(row.format(case), done.stdout), case
