"""A setting that cannot work fails the daily DAG in ``plan``, on its first try, before DexCare is asked.

Each case is a real ``airflow dags test`` run (the DAG's retries on, with no delay, so a retried ``plan`` would
show), against the sandbox over loopback: the run must fail in ``plan`` with one try, no report may have been
requested (the sandbox counts POSTs), and a secret written into the storage setting must appear in no log line
and no XCom.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path

import pytest

from tests.support.helpers import dexcare_connection, posts

pytestmark = pytest.mark.slow

SECRET = "wJalrXUtnFEMI-K7MDENG-SECRET-5e3f"
#: The DAG's retries on (the daily DAG's tests turn them off), retried at once: a retried plan would show.
RETRYING = {"DEXCARE_DAG_RETRIES": "2", "DEXCARE_DAG_RETRY_DELAY_SECONDS": "0"}
#: (case, run conf, extra environment, what the last words of plan's error must say)
REFUSED = [
    ("typo protocol", {"storage": "s3x://aws_default@bucket/dexcare/"}, {}, "names protocol 's3x'"),
    ("unknown protocol", {"storage": "nosuchproto://bucket/dexcare/"}, {}, "names protocol 'nosuchproto'"),
    ("no bucket", {"storage": "s3://"}, {}, "names no bucket"),
    ("a web URL", {"storage": "http://files.example.com/dexcare/"}, {}, "names protocol 'http'"),
    ("no Google provider", {"storage": "gs://bucket/dexcare/"}, {}, "names protocol 'gs'"),
    ("relative path", {"storage": "ftp//nowhere::bucket"}, {}, "nor an absolute path"),
    (
        "secret in the setting",
        {"storage": None},
        {"AIRFLOW__DEXCARE__REPORT_STORAGE": f"s3://AKIAEXAMPLE:{SECRET}@bucket/dexcare/"},
        "carries credentials before '@'",
    ),
    ("secret in the param", {"storage": f"s3://AKIAEXAMPLE:{SECRET}@bucket/"}, {}, "carries credentials"),
    ("missing DexCare connection", {"dexcare_conn_id": "no_such_dexcare"}, {}, "'no_such_dexcare'"),
    ("missing warehouse connection", {"warehouse_conn_id": "no_such_warehouse"}, {}, "'no_such_warehouse'"),
    (
        "warehouse connection of another type",
        {"warehouse_conn_id": "dexcare_api"},
        {"AIRFLOW_CONN_DEXCARE_API": "{}"},  # filled in below: a DexCare connection given as the warehouse
        "is of type 'dexcare'",
    ),
]


def task_tries(home: Path, day: str) -> dict[str, tuple[str | None, int]]:
    """task id -> (state, try number) of the run of ``day``, and the number of earlier tries Airflow kept."""
    with sqlite3.connect(home / "airflow.db") as db:
        (run_id,) = db.execute(
            "SELECT run_id FROM dag_run WHERE dag_id = 'dexcare_all_visits_report' AND logical_date LIKE ?",
            (f"{day}%",),
        ).fetchone()
        tries = {
            task_id: (state, try_number)
            for task_id, state, try_number in db.execute(
                "SELECT task_id, state, try_number FROM task_instance WHERE run_id = ?", (run_id,)
            )
        }
        (earlier,) = db.execute(
            "SELECT count(*) FROM task_instance_history WHERE run_id = ? AND task_id = 'plan'", (run_id,)
        ).fetchone()
        xcom = [row for (row,) in db.execute("SELECT value FROM xcom WHERE run_id = ?", (run_id,))]
    return {**tries, "_earlier_plan_tries": (None, earlier), "_xcom": (repr(xcom), len(xcom))}


def logs_under(home: Path) -> str:
    return "\n".join(p.read_text(errors="replace") for p in (home / "logs").rglob("*") if p.is_file())


@pytest.mark.parametrize(("case", "conf", "env", "says"), REFUSED, ids=[c[0] for c in REFUSED])
def test_a_setting_that_cannot_work_fails_in_plan_at_once(
    runner, airflow_home, sandbox, tmp_path, monkeypatch, case, conf, env, says
):
    workdir = tmp_path / "cwd"  # where a relative path would put the files: the airflow command's directory
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    if "AIRFLOW_CONN_DEXCARE_API" in env:
        env = {"AIRFLOW_CONN_DEXCARE_API": dexcare_connection(sandbox.url)}
    day = (dt.date(2026, 6, 1) + dt.timedelta(days=[c[0] for c in REFUSED].index(case))).isoformat()
    run = runner.run(day, env={**RETRYING, **env}, **conf)
    output = run.stdout + run.stderr
    assert run.returncode != 0, output[-4000:]
    tries = task_tries(airflow_home, day)
    assert tries["plan"] == ("failed", 1), tries
    assert tries["_earlier_plan_tries"][1] == 0, "plan was retried"
    assert all(state != "success" for task, (state, _) in tries.items() if task.startswith("fetch.")), tries
    assert posts(sandbox) == 0 and sandbox.request_log == [], "a report was requested before the setting failed"
    assert says in output and "Not retried: a retry cannot fix a setting" in output, output[-4000:]
    assert SECRET not in output and SECRET not in logs_under(airflow_home)
    assert SECRET not in tries["_xcom"][0]
    assert list(workdir.iterdir()) == [], "something was written relative to the worker's directory"
