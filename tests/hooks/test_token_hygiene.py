"""The reporting service key appears in no log line, exception, repr or stdout, on success or failure."""

from __future__ import annotations

import logging
import time

import pytest
from dexcare.exceptions import DexCareError
from dexcare.hooks.dexcare import DexCareHook
from dexcare.report import ReportStatus

from tests.support.helpers import SANDBOX_TOKEN, fast_hook


def test_key_never_appears_in_output(dexcare_conn_id, sandbox, tmp_path, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    texts: list[str] = []
    hook = fast_hook(attempts=2)
    report_id = hook.start_report("virtual", "2026-11-01", "2026-11-02")
    while hook.get_report_status(report_id) != ReportStatus.SUCCEEDED:
        time.sleep(0.05)
    texts.append(repr(hook.download_report(report_id, tmp_path / "r.csv")))
    sandbox.inject("http_500", count=5)
    sandbox.inject("drop_download", count=5)
    for call in (
        lambda: hook.get_report_status(report_id),
        lambda: hook.download_report(report_id, tmp_path / "s.csv"),
        lambda: hook.get_report_status("3f2b8c1e-4d5a-4b6c-9e7f-0a1b2c3d4e5f"),
    ):
        with pytest.raises(DexCareError) as info:
            call()
        texts += [str(info.value), repr(info.value), repr(info.value.__cause__), repr(info.value.__context__)]
    session = hook._get_session()
    texts += [repr(hook), repr(session.auth), repr(vars(hook)), repr(session.headers)]
    captured = capfd.readouterr()
    texts += [caplog.text, captured.out, captured.err]
    assert "attempt 1 of 2 failed" in caplog.text + captured.out  # the hook did log its retries
    for text in texts:
        assert SANDBOX_TOKEN not in text


def test_airflow_masks_the_key_once_the_connection_is_read(dexcare_conn_id):
    from tests.support.airflow_compat import redact  # what Airflow's task logs go through

    DexCareHook().test_connection()
    assert SANDBOX_TOKEN not in str(redact(f"Authorization: dc-token {SANDBOX_TOKEN}"))
