"""A paused DAG misses its freshness deadline and on-call is paged once, through a real scheduler and triggerer.

The scheduler notices the missed Deadline Alert, the triggerer runs ``dexcare.daily.paging.page_missed_deadline``, and
the SMTP provider's notifier sends the page to a real SMTP server on loopback, configured only through the
deployment's environment. Deadline Alerts exist from Airflow 3.1; 3.0's watchdog is tested in tests/dags.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterator

import pytest
from dexcare.compat import DEADLINE_ALERTS_SINCE, HAS_DEADLINE_ALERTS
from dexcare.sandbox import SandboxServer

from tests.e2e.stack import DAG_ID, DEXCARE_KEY, AirflowStack, deployment_env, running, trigger_run
from tests.support.processes import wait_for
from tests.support.smtp_server import LoopbackSMTP

pytestmark = pytest.mark.skipif(
    not HAS_DEADLINE_ALERTS, reason=f"Deadline Alerts exist from Airflow {DEADLINE_ALERTS_SINCE}"
)
TIMINGS: dict[str, float] = {}
DEADLINE_HOURS = 0.01  # 36 s after the run's logical date


@pytest.fixture(scope="module")
def smtp() -> Iterator[LoopbackSMTP]:
    with LoopbackSMTP() as server:
        yield server


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, sandbox: SandboxServer, pg_uri: str, metadata_db: str,
          smtp: LoopbackSMTP) -> Iterator[AirflowStack]:
    home = tmp_path_factory.mktemp("deadline-home")
    env = deployment_env(
        metadata_db, sandbox.url, pg_uri,
        DEXCARE_FAILURE_NOTIFIER="airflow.providers.smtp.notifications.smtp.SmtpNotifier",
        DEXCARE_FAILURE_NOTIFIER_KWARGS=json.dumps(
            {"to": "oncall@example.com", "from_email": "airflow@example.com", "smtp_conn_id": "page_smtp"}),
        AIRFLOW_CONN_PAGE_SMTP=smtp.connection_uri(),
        DEXCARE_DAG_DEADLINE_HOURS=str(DEADLINE_HOURS),
    )
    with running(AirflowStack(home, env), TIMINGS, "deadline e2e") as booted:
        yield booted


def test_a_paused_dag_misses_its_deadline_and_pages_once(stack, smtp, schema, tmp_path):
    stack.api("PATCH", f"/dags/{DAG_ID}", json={"is_paused": True})
    logical = (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)).replace(microsecond=0)
    watch = trigger_run(stack, logical.isoformat(), {"schema": schema, "storage": f"{tmp_path}/csv/"})
    started = time.monotonic()
    wait_for("the deadline page to reach the SMTP server", lambda: smtp.raw, 120)
    paged_after = time.monotonic() - started

    time.sleep(10)  # the scheduler keeps running: a missed deadline is handled once
    (message,) = smtp.messages
    body = message.get_body(("html",)).get_content()
    assert message["Subject"].startswith("[DexCare] Freshness deadline missed")
    assert f"dexcare/{DAG_ID}/" in message["Subject"] and message["Subject"].endswith("/deadline)")
    assert watch.run_id in body and "not done 0.01 hours after its data interval ended" in body
    text = f"{message}\n{body}"
    assert DEXCARE_KEY not in text
    run = stack.api("GET", f"/dags/{DAG_ID}/dagRuns/{watch.run_id}")
    assert run["state"] == "queued", run  # paused: nothing ran, nothing failed, and on-call knows
    print(f"deadline page {paged_after:.1f} s after the run was created (deadline already past)")
