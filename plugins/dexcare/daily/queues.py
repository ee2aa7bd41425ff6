"""Which Celery (or Edge) queue a task of the daily DAG goes to, read from the deployment's environment.

A deployment routes the load near the warehouse, or the fetches near DexCare, without editing the DAG.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

#: Celery (or Edge) queues for the fetch tasks (plan, start, wait, download) and for load_reports.
QUEUE_ENVS = {"fetch": "DEXCARE_FETCH_QUEUE", "load": "DEXCARE_LOAD_QUEUE"}


def queue(stage: str, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """``{"queue": ...}`` for a task of ``stage`` ("fetch" or "load") when the deployment names one, else ``{}``
    (Airflow's ``[operators] default_queue``): a deployment routes the load near the warehouse without a DAG
    edit. Read at parse time, like the retry knobs."""
    environ = os.environ if environ is None else environ
    name = environ.get(QUEUE_ENVS[stage], "").strip()
    return {"queue": name} if name else {}
