"""The suite's own setup leaves nothing behind: its private AIRFLOW_HOME (task logs, a metadata database with
generated passwords) goes when the session's process exits."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_the_private_airflow_home_is_removed_when_the_session_exits(tmp_path):
    script = "import os, tests.conftest; home = os.environ['AIRFLOW_HOME']; open(os.path.join(home, 'x.log'), 'w')" \
             "; print(home)"
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "TMPDIR": str(tmp_path), "PYTHONPATH": os.pathsep.join(sys.path)})
    assert done.returncode == 0, done.stderr[-2000:]
    home = Path(done.stdout.strip().splitlines()[-1])
    assert home.parent == tmp_path and home.name.startswith("dexcare-test-airflow-home-")
    assert not home.exists()
    assert list(tmp_path.iterdir()) == []
