"""The daily DAG's task callbacks that page on-call, resolved from the environment when the DAG is parsed.

A typo in the notifier's name or kwargs fails the DAG import, where it is seen, rather than the first page.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dexcare.daily.paging import FailurePager, VolumeWarningPager, check_notifier, notifier_class


def failure_callbacks(environ: Mapping[str, str] | None = None) -> list[Any]:
    """The task failure callback that pages, when the deployment names a notifier (``DEXCARE_FAILURE_NOTIFIER``).

    A task's callback, not the DAG's: only the task sees the exception, whose message is the page's cause. Reading
    two environment variables is the only work done at parse time; the notifier class is imported here so a
    typo fails the DAG import visibly instead of silently never paging anyone.
    """
    notifier = notifier_class(environ)
    if notifier is None:
        return []
    check_notifier(notifier)
    return [FailurePager(notifier)]


def volume_warning_callbacks(environ: Mapping[str, str] | None = None) -> list[Any]:
    """load_reports' success callback that pages once per table whose volume the load warned about."""
    notifier = notifier_class(environ)
    return [VolumeWarningPager(notifier)] if notifier else []
