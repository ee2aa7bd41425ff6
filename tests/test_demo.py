"""The README's first command: the whole job for two days on embedded defaults, leaving nothing behind."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
TAG_ENV = "DEXCARE_TEST_DEMO_TAG"
ROW = re.compile(r"^(avr_\w+)\s+(\S+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)$")


def processes_tagged(tag: str) -> list[psutil.Process]:
    """Processes that inherited the demo's environment: whatever the demo started (sandbox, PostgreSQL,
    Airflow), and nothing another test or a container on the same machine runs."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get(TAG_ENV) == tag:
                found.append(proc)
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    return found


def test_demo_runs_two_days_and_stops_everything(tmp_path):
    tag = uuid.uuid4().hex
    # A private TMPDIR, so "removes its working directory" is checked on the demo's own directory only.
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")} | {TAG_ENV: tag, "TMPDIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "demo.py"), "--day", "2026-11-20"],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    out = done.stdout
    assert "no credentials needed" in out and "embedded PostgreSQL" in out
    days = out.split("== dexcare_all_visits_report for ")[1:]
    assert [d.split(" ", 1)[0] for d in days] == ["2026-11-20", "2026-11-21"]
    parsed = [{m[1]: [int(x) for x in m.groups()[2:]] for m in map(ROW.match, d.splitlines()) if m} for d in days]
    assert set(parsed[0]) == set(parsed[1]) == {"avr_virtual", "avr_retail"}
    for table in ("avr_virtual", "avr_retail"):
        rows1, dups1, ins1, upd1, same1, total1 = parsed[0][table]
        rows2, dups2, ins2, upd2, same2, total2 = parsed[1][table]
        assert (ins1, upd1, same1) == (total1, 0, 0) and rows1 - dups1 == total1
        assert ins2 + upd2 + same2 == rows2 - dups2
        assert upd2 > 0 and same2 > 0, "the overlapping day must update some visits and leave others"
        assert total2 == total1 + ins2 and ins2 < total1 / 5, "day two must add only its new day, not duplicate"
    assert processes_tagged(tag) == []
    assert not list(tmp_path.glob("dexcare-demo-*"))
